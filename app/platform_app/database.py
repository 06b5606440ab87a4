"""The app's PostgreSQL database (``PLATFORM_DATABASE_URL``): its tables, and one small
pool of connections per process that the portfolio and limit stores share.

With two app hosts behind the load balancer, a user lands on either; their portfolios and
their limits must be the same on both, so both live here rather than in files of one host
(docs/tiers.md, "Per-user data on the database tier"). Only imported when a database is
configured: psycopg needs libpq (the distribution's libpq5), which a single host without
PostgreSQL does not have to install.

The password comes apart from the URL (``PLATFORM_DATABASE_PASSWORD``) and goes to libpq
as a connection parameter: never into argv, a message or a log line. Messages name the
database as ``user@host:port/dbname``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.conninfo
from psycopg_pool import ConnectionPool

from platform_app.config import ConfigError

logger = logging.getLogger(__name__)

# Per process: a uvicorn worker serves a request on a thread of its own, and a request
# makes one short transaction at a time (two workers on two hosts: 16 connections at most).
POOL_MIN = 1
POOL_MAX = 4
CONNECT_TIMEOUT = 5  # seconds to establish a connection (libpq's connect_timeout)
POOL_TIMEOUT = 5.0  # seconds a request waits for a connection before it fails
# No statement (a wait for a lock included) takes longer: a stuck session elsewhere makes
# requests fail (503 for the limiter), not hang.
SET_STATEMENT_TIMEOUT = "SET statement_timeout = '10s'"

# The tables, created at startup when missing. The limits' tables are UNLOGGED (no WAL:
# every API call writes one row), which PostgreSQL empties after a crash: the same promise
# as the SQLite store on tmpfs, which outlives a restart but not a reboot.
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS portfolios (
        owner text NOT NULL,
        name text NOT NULL,
        document text NOT NULL,
        bytes integer NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (owner, name)
    )""",
    """CREATE UNLOGGED TABLE IF NOT EXISTS limit_buckets (
        scope text NOT NULL,
        subject text NOT NULL,
        tat double precision NOT NULL,
        PRIMARY KEY (scope, subject)
    )""",
    """CREATE UNLOGGED TABLE IF NOT EXISTS limit_logins (
        subject text NOT NULL,
        address text NOT NULL,
        failures integer NOT NULL,
        locked_until double precision NOT NULL,
        last_failure double precision NOT NULL,
        PRIMARY KEY (subject, address)
    )""",
    "CREATE INDEX IF NOT EXISTS limit_logins_by_age ON limit_logins (last_failure)",
)
TABLES = ("portfolios", "limit_buckets", "limit_logins")


class DatabaseUnavailable(ConnectionError):
    """The database cannot be used now (unreachable, restarting, refusing the app). At
    startup the app exits with a status that systemd restarts (not 78, see main.py)."""


def lock_key(*parts: str) -> int:
    """The 64-bit advisory lock key of ``parts``: the same in every process on every host."""
    digest = hashlib.sha256("\0".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def describe(url: str) -> str:
    """``user@host:port/dbname`` of a libpq URI, for messages (libpq's defaults blank)."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    user, host, dbname = (info.get(k, "") for k in ("user", "host", "dbname"))
    return f"{user}@{host}:{info.get('port') or 5432}/{dbname}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.execute(SET_STATEMENT_TIMEOUT)


class Database:
    """Where the stores' transactions run. The pool opens on first use in each process
    (a forked child opens its own: connections cannot be shared across a fork) and hands
    out only connections that answer (``check``), so a restart of PostgreSQL costs the
    requests made while it is down, never the app's ability to reconnect."""

    def __init__(self, url: str, password: str | None = None, *, timeout: float = POOL_TIMEOUT):
        self.url = url
        self.where = describe(url)
        self.timeout = timeout
        self._password = password
        self._lock = threading.Lock()
        self._pool: ConnectionPool[Any] | None = None
        self._pid = 0

    def __repr__(self) -> str:
        return f"Database({self.where})"

    def _connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "autocommit": True,  # transactions are explicit: conn.transaction()
            "connect_timeout": CONNECT_TIMEOUT,
            "fallback_application_name": "platform_app",
        }
        if self._password is not None:
            kwargs["password"] = self._password
        return kwargs

    def _get_pool(self) -> ConnectionPool[Any]:
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pool = ConnectionPool(
                    self.url,
                    kwargs=self._connect_kwargs(),
                    min_size=POOL_MIN,
                    max_size=POOL_MAX,
                    timeout=self.timeout,
                    configure=_configure,
                    check=ConnectionPool.check_connection,
                    name="platform_app",
                    open=False,
                )
                self._pool.open()  # connects in the background
                self._pid = os.getpid()
            return self._pool

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """One transaction on a pooled connection: committed at the end of the block, rolled
        back if it raises. Any failure of the database is :class:`DatabaseUnavailable`."""
        try:
            with self._get_pool().connection() as conn, conn.transaction():
                yield conn
        except psycopg.Error as exc:
            raise DatabaseUnavailable(f"database {self.where}: {_one_line(exc)}") from None

    def create_schema(self, wait: float = 0) -> None:
        """Create the missing tables, at startup, waiting up to ``wait`` seconds for a
        database that does not answer yet. Why wait here rather than exit at once: systemd
        restarts the unit (exit 69) at most app_start_limit_burst times per interval and then
        gives up, so a database down for longer than a few quick restarts would leave the app
        down after the database is back; a start that waits 20 s stays under that limit.

        Under an advisory lock: workers and hosts starting at once would otherwise race on the
        catalog (two concurrent ``CREATE TABLE IF NOT EXISTS`` can fail with a duplicate key in
        pg_type). The app's role must be allowed to create tables: it owns its database (on
        PostgreSQL 15 and later, only the database owner may create in schema public)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                self._create_schema()
                return
            except DatabaseUnavailable as exc:
                if time.monotonic() + 1 > deadline:
                    raise
                logger.warning("%s; trying again", exc)
                time.sleep(1)

    def _create_schema(self) -> None:
        try:
            # Its own connection, not the pool's: a refusal shows libpq's reason, not a timeout.
            with psycopg.connect(self.url, **self._connect_kwargs()) as conn, conn.transaction():
                encoding = conn.execute("SHOW server_encoding").fetchone()
                if encoding is None or encoding[0] != "UTF8":
                    raise ConfigError(f"database {self.where}: its encoding must be UTF8")
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key("schema"),))
                for statement in SCHEMA:
                    conn.execute(statement)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"database {self.where}: {_one_line(exc)}") from None
        except psycopg.Error as exc:
            raise ConfigError(
                f"database {self.where}: cannot create the app's tables ({_one_line(exc)});"
                " the app's role must own its database"
            ) from None

    def close(self) -> None:
        with self._lock:
            if self._pool is not None and self._pid == os.getpid():
                self._pool.close()
            self._pool = None
