"""Per-user rate limits and login throttling in PostgreSQL, shared by every app host.

Limits kept per host would give an attacker one budget per app host behind the load
balancer, so with ``PLATFORM_DATABASE_URL`` set the state of limits.py lives in the app's
database (tables ``limit_buckets`` and ``limit_logins``, see database.py). The decisions
are made by the same functions as the SQLite store's (:func:`platform_app.limits.gcra`,
:func:`platform_app.limits.login_step`), with the app's clock (not the database's), so both
stores decide alike.

Each decision is one transaction that first takes the advisory lock of its key (the
bucket, or the account for logins) and only then reads: decisions on one key, from any
worker of any host, follow one another, and two can never both spend the last token. If
the database cannot be used, :class:`platform_app.limits.LimiterUnavailable` is raised and
the request refused (503), as with the SQLite store.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from platform_app.database import Database, DatabaseUnavailable, lock_key
from platform_app.limits import (
    ACCOUNT_TIER,
    MAX_LOGIN_ROWS,
    PRUNE_EVERY,
    Decision,
    LimiterUnavailable,
    LoginPolicy,
    Rate,
    address_key,
    gcra,
    login_step,
    login_tiers,
    subject_key,
)

logger = logging.getLogger(__name__)


class PgLimitStore:
    """The shared state, in the app's database. Thread-safe (the pool is)."""

    def __init__(
        self,
        database: Database,
        clock: Callable[[], float] = time.time,
        failure_window: float = LoginPolicy.failure_window,
    ) -> None:
        self.database = database
        self.clock = clock
        self.failure_window = failure_window
        self._ops = itertools.count(1)

    @contextmanager
    def _transaction(self, *key: str) -> Iterator[psycopg.Connection[Any]]:
        """One decision: a transaction holding the advisory lock of ``key`` (if given),
        taken in a statement of its own so that what is read next is read after it."""
        try:
            with self.database.transaction() as conn:
                if key:
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(*key),))
                yield conn
        except DatabaseUnavailable as exc:
            logger.error("rate limit store: %s", exc)
            raise LimiterUnavailable(str(exc)) from None
        if next(self._ops) % PRUNE_EVERY == 0:
            self._prune()

    def check(self) -> None:
        """Fail now (LimiterUnavailable) if the tables cannot be used."""
        with self._transaction() as conn:
            conn.execute("SELECT 1 FROM limit_buckets LIMIT 0")
            conn.execute("SELECT 1 FROM limit_logins LIMIT 0")

    # --- per-user rate limits --------------------------------------------------------

    def hit(self, scope: str, subject: str, rate: Rate) -> Decision:
        """Spend one token of (scope, subject), or say how long until the next one."""
        with self._transaction("bucket", scope, subject) as conn:
            # Read the clock under the lock: decisions are ordered like their times.
            now = self.clock()
            row = conn.execute(
                "SELECT tat FROM limit_buckets WHERE scope = %s AND subject = %s",
                (scope, subject),
            ).fetchone()
            decision, tat = gcra(row[0] if row else None, now, rate)
            if decision.allowed:
                conn.execute(
                    "INSERT INTO limit_buckets (scope, subject, tat) VALUES (%s, %s, %s)"
                    " ON CONFLICT (scope, subject) DO UPDATE SET tat = excluded.tat",
                    (scope, subject, tat),
                )
        return decision

    # --- logins ----------------------------------------------------------------------

    def login_attempt(self, username: str, address: str, policy: LoginPolicy) -> Decision:
        """Admit one password check for (username, address), counting it as a failure
        until :meth:`login_succeeded` clears it; or refuse it while a lockout runs."""
        subject = subject_key(username)
        tiers = login_tiers(address, policy)
        with self._transaction("login", subject) as conn:
            now = self.clock()  # under the lock, like hit()
            rows = {
                row[0]: row[1:]
                for row in conn.execute(
                    "SELECT address, failures, locked_until, last_failure FROM limit_logins"
                    " WHERE subject = %s AND address = ANY(%s)",
                    (subject, [tier[0] for tier in tiers]),
                )
            }
            decision, updates = login_step(tiers, rows, now, policy)
            if not updates:
                return decision
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO limit_logins"
                    " (subject, address, failures, locked_until, last_failure)"
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (subject, address) DO UPDATE"
                    " SET failures = excluded.failures, locked_until = excluded.locked_until,"
                    " last_failure = excluded.last_failure",
                    [(subject, *update, now) for update in updates],
                )
        return decision

    def login_succeeded(self, username: str, address: str) -> None:
        """The password was right: forget the failures of this account on this address
        and account-wide (only someone who knows the password can do that)."""
        subject = subject_key(username)
        with self._transaction("login", subject) as conn:
            conn.execute(
                "DELETE FROM limit_logins WHERE subject = %s AND address IN (%s, %s)",
                (subject, address_key(address), ACCOUNT_TIER),
            )

    # --- housekeeping ----------------------------------------------------------------

    def _prune(self) -> None:
        """Drop the rows that no longer decide anything. One host at a time (the others
        skip it), and never waiting for a row a decision holds (SKIP LOCKED), so pruning
        cannot deadlock with a decision. A failure is logged: the decision stands."""
        now = self.clock()
        try:
            with self.database.transaction() as conn:
                prune_lock = lock_key("limits", "prune")
                got = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (prune_lock,))
                if got.fetchone() != (True,):  # another host is at it
                    return
                conn.execute(
                    "DELETE FROM limit_buckets WHERE (scope, subject) IN (SELECT scope, subject"
                    " FROM limit_buckets WHERE tat < %s FOR UPDATE SKIP LOCKED)",
                    (now,),
                )
                conn.execute(
                    "DELETE FROM limit_logins WHERE (subject, address) IN (SELECT subject, address"
                    " FROM limit_logins WHERE locked_until < %s AND last_failure < %s"
                    " FOR UPDATE SKIP LOCKED)",
                    (now, now - self.failure_window),
                )
                count = conn.execute("SELECT count(*) FROM limit_logins").fetchone()
                excess = (count[0] if count else 0) - MAX_LOGIN_ROWS
                if excess > 0:
                    conn.execute(
                        "DELETE FROM limit_logins WHERE (subject, address) IN (SELECT subject,"
                        " address FROM limit_logins WHERE locked_until < %s"
                        " ORDER BY last_failure LIMIT %s FOR UPDATE SKIP LOCKED)",
                        (now, excess),
                    )
        except DatabaseUnavailable as exc:
            logger.warning("rate limit store: pruning failed: %s", exc)

    def reset(self, username: str | None = None) -> int:
        """Remove the limits and lockouts of one user (all users with None)."""
        if username is None:
            with self._transaction() as conn:
                removed = conn.execute("DELETE FROM limit_buckets").rowcount
                return removed + conn.execute("DELETE FROM limit_logins").rowcount
        subject = subject_key(username)
        with self._transaction("login", subject) as conn:
            removed = conn.execute(
                "DELETE FROM limit_buckets WHERE subject = %s", (subject,)
            ).rowcount
            return (
                removed
                + conn.execute("DELETE FROM limit_logins WHERE subject = %s", (subject,)).rowcount
            )

    def close(self) -> None:
        self.database.close()
