"""Per-user portfolios in PostgreSQL: one row of ``portfolios`` per (owner, name).

The same names, caps, errors and stored bytes as the file store (portfolios.py), for app
hosts behind a load balancer. ``document`` is text holding exactly what the file store
writes (:func:`platform_app.portfolios.serialize`): jsonb would reorder keys and respace
the document, and the size cap counts these bytes. A database failure raises
:class:`platform_app.database.DatabaseUnavailable` (a 500, like a failing disk for the
file store).
"""

from __future__ import annotations

import json
from typing import Any

from platform_app.database import Database, lock_key
from platform_app.portfolios import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_COUNT,
    PortfolioNotFound,
    check_name,
    check_owner,
    limit_reached,
    serialize,
    too_large,
)


class PgPortfolioStore:
    """At most ``max_count`` portfolios per user, each at most ``max_bytes``."""

    def __init__(
        self,
        database: Database,
        max_count: int = DEFAULT_MAX_COUNT,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.database = database
        self.max_count = max_count
        self.max_bytes = max_bytes

    def read(self, owner: str, name: str) -> Any:
        check_name(name)
        check_owner(owner)
        with self.database.transaction() as conn:
            row = conn.execute(
                "SELECT document FROM portfolios WHERE owner = %s AND name = %s", (owner, name)
            ).fetchone()
        if row is None:
            raise PortfolioNotFound(name)
        return json.loads(row[0])

    def write(self, owner: str, name: str, document: Any) -> int:
        """Insert or replace the portfolio; returns the number of bytes stored."""
        data = serialize(document)
        if len(data) > self.max_bytes:
            raise too_large(self.max_bytes)
        check_name(name)
        check_owner(owner)
        text = data.decode("utf-8")
        with self.database.transaction() as conn:
            # One writer per owner at a time, on every host (what the file store's flock of
            # the user's directory does): two new portfolios cannot both take the last place.
            # Its own statement, before the count: the count's snapshot must follow the lock.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key("portfolios", owner),))
            replaced = conn.execute(
                "UPDATE portfolios SET document = %s, bytes = %s, updated_at = now()"
                " WHERE owner = %s AND name = %s",
                (text, len(data), owner, name),
            ).rowcount
            if not replaced:
                count = conn.execute(
                    "SELECT count(*) FROM portfolios WHERE owner = %s", (owner,)
                ).fetchone()
                if count is not None and count[0] >= self.max_count:
                    raise limit_reached(self.max_count)
                conn.execute(
                    "INSERT INTO portfolios (owner, name, document, bytes) VALUES (%s, %s, %s, %s)",
                    (owner, name, text, len(data)),
                )
        return len(data)

    def delete(self, owner: str, name: str) -> None:
        check_name(name)
        check_owner(owner)
        with self.database.transaction() as conn:
            deleted = conn.execute(
                "DELETE FROM portfolios WHERE owner = %s AND name = %s", (owner, name)
            ).rowcount
        if not deleted:
            raise PortfolioNotFound(name)

    def list(self, owner: str) -> list[str]:
        check_owner(owner)
        with self.database.transaction() as conn:
            rows = conn.execute("SELECT name FROM portfolios WHERE owner = %s", (owner,))
            return sorted(row[0] for row in rows)  # code point order, as the file store

    def close(self) -> None:
        self.database.close()
