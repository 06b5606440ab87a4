"""Per-user rate limits and per-account login throttling, shared by every worker process.

uvicorn runs several worker processes; a counter in one process's memory would give each
user one budget per worker. The state therefore lives in one small SQLite database (WAL,
no fsync: it sits on tmpfs under the unit's RuntimeDirectory= and only has to outlive a
restart, not a reboot). Every decision is one ``BEGIN IMMEDIATE`` transaction, so two
workers can never both spend the last token.

Rate limits (:meth:`LimitStore.hit`) are a GCRA token bucket per (scope, user): ``burst``
requests at once, then one every ``60 / per_minute`` seconds; a refusal carries the
seconds until the next token (``Retry-After``).

Logins (:meth:`LimitStore.login_attempt`) are throttled on two tiers:

* per account **and client address**: ``address_free_failures`` wrong passwords in a row,
  then a lockout of ``base * 2**k`` seconds (k = failures beyond the free ones), capped at
  ``address_lockout_max``. A guesser on one address slows down exponentially; the real
  user on another address is not affected by it.
* per account, over every address: ``account_free_failures`` failures, then lockouts
  doubling from ``base`` up to ``account_lockout_max`` (short on purpose). This bounds a
  guesser spread over many addresses without letting anyone lock the real user out for
  longer than that cap.

An attempt is counted as a failure *before* the password is checked and cleared when it
succeeds, so parallel attempts cannot all slip through while bcrypt runs. While a key is
locked, attempts are refused with 429 without checking the password (and without adding
to the count). Failures are forgotten ``failure_window`` seconds after the last one.

With ``PLATFORM_DATABASE_URL`` set, the same state lives in PostgreSQL instead
(:class:`platform_app.limits_pg.PgLimitStore`), shared by the workers of every app host;
both stores make their decisions with the functions below, so they decide alike.

``python -m platform_app.limits --db PATH reset USER`` lifts the limits and lockouts of
one user (run it as the app's user, see docs/app.md); without ``--db`` it works on the
PostgreSQL store named by ``PLATFORM_DATABASE_URL`` (and ``PLATFORM_DATABASE_PASSWORD``).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from platform_app.users import USERNAME_RE

logger = logging.getLogger(__name__)

DB_NAME = "limits.sqlite3"
# Rows kept at most in the login table (a guesser may try many usernames from many
# addresses): beyond it, the oldest rows that lock nothing are dropped.
MAX_LOGIN_ROWS = 100_000
# Housekeeping (expired rows) runs once every this many decisions per process.
PRUNE_EVERY = 1000
ACCOUNT_TIER = "*"  # the "address" of the account-wide row
# Seconds the wall clock may step back without resetting a bucket (NTP slews by less).
CLOCK_SLACK = 1.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (
    scope TEXT NOT NULL,
    subject TEXT NOT NULL,
    tat REAL NOT NULL,
    PRIMARY KEY (scope, subject)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logins (
    subject TEXT NOT NULL,
    address TEXT NOT NULL,
    failures INTEGER NOT NULL,
    locked_until REAL NOT NULL,
    last_failure REAL NOT NULL,
    PRIMARY KEY (subject, address)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS logins_by_age ON logins (last_failure);
"""


class LimiterUnavailable(RuntimeError):
    """The shared store cannot be used (the request is refused, never let through)."""


@dataclass(frozen=True)
class Rate:
    """``per_minute`` requests per minute on average, ``burst`` at once."""

    per_minute: int
    burst: int

    @property
    def interval(self) -> float:
        return 60.0 / self.per_minute

    def __str__(self) -> str:
        return f"{self.per_minute}/min, burst {self.burst}"


@dataclass(frozen=True)
class LoginPolicy:
    address_free_failures: int = 5
    account_free_failures: int = 20
    lockout_base: float = 2.0
    address_lockout_max: float = 900.0
    account_lockout_max: float = 60.0
    failure_window: float = 86400.0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int = 0  # whole seconds, >= 1 when refused


def address_key(address: str) -> str:
    """The key of a client address: itself when short (IPv4, IPv6), else a hash."""
    if len(address) <= 64:
        return address
    return "~" + hashlib.sha256(address.encode("utf-8", "replace")).hexdigest()[:32]


def subject_key(username: str) -> str:
    """The key of an attempted username: itself when it is a valid name, else a hash
    (bounded size; a garbage name still gets its own throttle, like a real one)."""
    if USERNAME_RE.fullmatch(username):
        return username
    return "~" + hashlib.sha256(username.encode("utf-8", "replace")).hexdigest()[:32]


def _seconds(value: float) -> int:
    return max(1, math.ceil(value - 1e-9))


def _lockout(failures: int, free: int, base: float, cap: float) -> float:
    """Seconds locked after ``failures`` failures (0 below the free ones)."""
    if failures < free:
        return 0.0
    return min(cap, base * 2.0 ** min(failures - free, 40))


def gcra(tat: float | None, now: float, rate: Rate) -> tuple[Decision, float]:
    """One step of the token bucket whose stored theoretical arrival time is ``tat`` (None:
    no bucket yet): the decision on a call at ``now``, and the time to store if allowed."""
    interval = rate.interval
    ceiling = rate.burst * interval
    # A stored time beyond what the rate allows counts as now: the clock moved
    # back by more than CLOCK_SLACK (a full bucket sits exactly at the ceiling).
    if tat is None or tat - now > ceiling + CLOCK_SLACK:
        tat = now
    new_tat = max(tat, now) + interval
    if new_tat - now > ceiling:
        return Decision(False, _seconds(new_tat - now - ceiling)), tat
    return Decision(True), new_tat


# A stored login row: (failures, locked_until, last_failure).
LoginRow = tuple[int, float, float]


def login_tiers(address: str, policy: LoginPolicy) -> tuple[tuple[str, int, float], ...]:
    """The rows an attempt from ``address`` counts against: (address, free failures, cap)."""
    return (
        (address_key(address), policy.address_free_failures, policy.address_lockout_max),
        (ACCOUNT_TIER, policy.account_free_failures, policy.account_lockout_max),
    )


def login_step(
    tiers: tuple[tuple[str, int, float], ...],
    rows: Mapping[str, LoginRow],
    now: float,
    policy: LoginPolicy,
) -> tuple[Decision, list[tuple[str, int, float]]]:
    """The decision on one attempt, given the stored rows of its tiers (by address), and
    the rows ``(address, failures, locked_until)`` to store when it is admitted."""
    current: dict[str, LoginRow | None] = {}
    for tier_address, _, cap in tiers:
        row = rows.get(tier_address)
        if row and now - row[2] > policy.failure_window:
            row = None  # forgotten
        if row:
            # Never longer than the cap (a clock moved back cannot extend it).
            locked_until = min(row[1], now + cap)
            if locked_until > now:
                return Decision(False, _seconds(locked_until - now)), []
        current[tier_address] = row
    updates = []
    for tier_address, free, cap in tiers:
        row = current[tier_address]
        failures = (row[0] if row else 0) + 1
        locked_until = now + _lockout(failures, free, policy.lockout_base, cap)
        updates.append((tier_address, failures, locked_until))
    return Decision(True), updates


class Limits(Protocol):
    """What the API needs of a limits store (:class:`LimitStore`, or
    :class:`platform_app.limits_pg.PgLimitStore`). Each raises :class:`LimiterUnavailable`
    when its store cannot be used."""

    def check(self) -> None: ...
    def hit(self, scope: str, subject: str, rate: Rate) -> Decision: ...
    def login_attempt(self, username: str, address: str, policy: LoginPolicy) -> Decision: ...
    def login_succeeded(self, username: str, address: str) -> None: ...
    def reset(self, username: str | None = None) -> int: ...
    def close(self) -> None: ...


class LimitStore:
    """The shared state. One connection per process, used under a lock by its threads."""

    def __init__(
        self,
        path: Path,
        clock: Callable[[], float] = time.time,
        failure_window: float = LoginPolicy.failure_window,
    ) -> None:
        self.path = path
        self.clock = clock
        self.failure_window = failure_window
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._ops = 0

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            conn = sqlite3.connect(
                self.path, timeout=10, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=OFF")
            conn.executescript(_SCHEMA)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                self._ops += 1
                if self._ops % PRUNE_EVERY == 0:
                    try:
                        self._prune(conn)
                    except sqlite3.Error as exc:  # housekeeping only: the decision stands
                        logger.warning("rate limit store %s: pruning failed: %s", self.path, exc)
            except sqlite3.Error as exc:
                logger.error("rate limit store %s: %s", self.path, exc)
                self._conn = None
                raise LimiterUnavailable(str(exc)) from None

    def check(self) -> None:
        """Open (and create) the store now, so that a bad path fails at startup."""
        with self._transaction():
            pass

    # --- per-user rate limits --------------------------------------------------------

    def hit(self, scope: str, subject: str, rate: Rate) -> Decision:
        """Spend one token of (scope, subject), or say how long until the next one."""
        with self._transaction() as conn:
            # Read the clock under the lock: decisions are ordered like their times.
            now = self.clock()
            row = conn.execute(
                "SELECT tat FROM buckets WHERE scope = ? AND subject = ?", (scope, subject)
            ).fetchone()
            decision, tat = gcra(row[0] if row else None, now, rate)
            if decision.allowed:
                conn.execute(
                    "INSERT OR REPLACE INTO buckets (scope, subject, tat) VALUES (?, ?, ?)",
                    (scope, subject, tat),
                )
        return decision

    # --- logins ----------------------------------------------------------------------

    def login_attempt(self, username: str, address: str, policy: LoginPolicy) -> Decision:
        """Admit one password check for (username, address), counting it as a failure
        until :meth:`login_succeeded` clears it; or refuse it while a lockout runs."""
        subject = subject_key(username)
        tiers = login_tiers(address, policy)
        with self._transaction() as conn:
            now = self.clock()  # under the lock, like hit()
            rows = {
                row[0]: row[1:]
                for row in conn.execute(
                    "SELECT address, failures, locked_until, last_failure FROM logins"
                    " WHERE subject = ? AND address IN (?, ?)",
                    (subject, tiers[0][0], tiers[1][0]),
                )
            }
            decision, updates = login_step(tiers, rows, now, policy)
            conn.executemany(
                "INSERT OR REPLACE INTO logins"
                " (subject, address, failures, locked_until, last_failure)"
                " VALUES (?, ?, ?, ?, ?)",
                [(subject, *update, now) for update in updates],
            )
        return decision

    def login_succeeded(self, username: str, address: str) -> None:
        """The password was right: forget the failures of this account on this address
        and account-wide (only someone who knows the password can do that)."""
        subject = subject_key(username)
        address = address_key(address)
        with self._transaction() as conn:
            conn.execute(
                "DELETE FROM logins WHERE subject = ? AND address IN (?, ?)",
                (subject, address, ACCOUNT_TIER),
            )

    # --- housekeeping ----------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def _prune(self, conn: sqlite3.Connection) -> None:
        now = self.clock()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM buckets WHERE tat < ?", (now,))
            conn.execute(
                "DELETE FROM logins WHERE locked_until < ? AND last_failure < ?",
                (now, now - self.failure_window),
            )
            count = conn.execute("SELECT count(*) FROM logins").fetchone()[0]
            if count > MAX_LOGIN_ROWS:
                conn.execute(
                    "DELETE FROM logins WHERE (subject, address) IN (SELECT subject, address"
                    " FROM logins WHERE locked_until < ? ORDER BY last_failure LIMIT ?)",
                    (now, count - MAX_LOGIN_ROWS),
                )
            conn.execute("COMMIT")
        except sqlite3.Error:
            conn.execute("ROLLBACK")
            raise

    def reset(self, username: str | None = None) -> int:
        """Remove the limits and lockouts of one user (all users with None)."""
        with self._transaction() as conn:
            if username is None:
                removed = conn.execute("DELETE FROM buckets").rowcount
                return removed + conn.execute("DELETE FROM logins").rowcount
            subject = subject_key(username)
            removed = conn.execute("DELETE FROM buckets WHERE subject = ?", (subject,)).rowcount
            return (
                removed + conn.execute("DELETE FROM logins WHERE subject = ?", (subject,)).rowcount
            )


def _database_store() -> Limits:
    """The PostgreSQL store named by the environment (as the app reads it)."""
    # Imported here: config imports this module, and psycopg needs libpq.
    from platform_app.config import database_settings
    from platform_app.database import Database
    from platform_app.limits_pg import PgLimitStore

    url, password = database_settings(os.environ)
    if url is None:
        raise LimiterUnavailable("give --db PATH (SQLite) or set PLATFORM_DATABASE_URL")
    return PgLimitStore(Database(url, password))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m platform_app.limits",
        description="Lift the rate limits and login lockouts of a user of the platform app.",
    )
    parser.add_argument(
        "--db",
        type=Path,
        help=f"the SQLite store ({DB_NAME}); without it, the PostgreSQL store of"
        " PLATFORM_DATABASE_URL (password in PLATFORM_DATABASE_PASSWORD)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    reset = sub.add_parser("reset", help="forget a user's limits and lockouts")
    who = reset.add_mutually_exclusive_group(required=True)
    who.add_argument("username", nargs="?")
    who.add_argument("--all", action="store_true", help="every user")
    args = parser.parse_args(argv)
    from platform_app.config import ConfigError  # config imports this module

    if args.db is not None and not args.db.exists():
        print(f"limits: {args.db} does not exist", file=sys.stderr)
        return 1
    try:
        store = LimitStore(args.db) if args.db is not None else _database_store()
        try:
            removed = store.reset(None if args.all else args.username)
        finally:
            store.close()
    except (LimiterUnavailable, ConfigError) as exc:
        print(f"limits: {exc}", file=sys.stderr)
        return 1
    print(f"removed {removed} entries")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
