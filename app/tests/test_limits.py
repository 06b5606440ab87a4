"""Per-user rate limits and login throttling (platform_app.limits), shared across processes
and, with PostgreSQL (platform_app.limits_pg), across app hosts.

Tests marked ``@both_stores`` run on the SQLite store and on PostgreSQL (conftest.py)."""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORDS, auth_header, both_stores, login, postgresql_only, read_actions
from fastapi.testclient import TestClient

from platform_app.limits import (
    Decision,
    LimiterUnavailable,
    Limits,
    LimitStore,
    LoginPolicy,
    Rate,
    address_key,
    main,
    subject_key,
)


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_store(
    store_kind: str, tmp_path: Path, clock: FakeClock, request: pytest.FixtureRequest
) -> Callable[[], Limits]:
    """Makes stores of the kind under test on one shared state (one SQLite file, or the
    test database), each with connections of its own: like other workers or app hosts."""
    if store_kind == "file":
        return lambda: LimitStore(tmp_path / "limits.sqlite3", clock=clock)
    from platform_app.limits_pg import PgLimitStore

    make_database = request.getfixturevalue("make_database")
    return lambda: PgLimitStore(make_database(), clock=clock)


@pytest.fixture
def store(make_store: Callable[[], Limits]) -> Limits:
    return make_store()


# --- the token bucket -------------------------------------------------------------------


@both_stores
def test_bucket_allows_the_burst_then_one_per_interval(store: Limits, clock: FakeClock) -> None:
    rate = Rate(per_minute=30, burst=3)  # one every 2 s
    assert [store.hit("compute", "alice", rate).allowed for _ in range(3)] == [True] * 3
    refused = store.hit("compute", "alice", rate)
    assert refused == Decision(False, 2)
    clock.now += 1.0
    assert store.hit("compute", "alice", rate) == Decision(False, 1)
    clock.now += 1.0
    assert store.hit("compute", "alice", rate).allowed
    assert not store.hit("compute", "alice", rate).allowed
    # Per user and per scope.
    assert store.hit("compute", "bob", rate).allowed
    assert store.hit("write", "alice", rate).allowed


@both_stores
def test_bucket_refills_completely(store: Limits, clock: FakeClock) -> None:
    rate = Rate(per_minute=60, burst=5)
    for _ in range(5):
        store.hit("compute", "alice", rate)
    clock.now += 3600
    assert sum(store.hit("compute", "alice", rate).allowed for _ in range(10)) == 5


@both_stores
def test_clock_moved_back_does_not_lock_anyone_out(store: Limits, clock: FakeClock) -> None:
    rate = Rate(per_minute=60, burst=2)
    store.hit("compute", "alice", rate)
    clock.now -= 86400
    assert store.hit("compute", "alice", rate).allowed


def _open(spec: tuple[str, str, str | None]) -> Limits:
    kind, where, password = spec
    if kind == "file":
        return LimitStore(Path(where))
    from platform_app.database import Database
    from platform_app.limits_pg import PgLimitStore

    return PgLimitStore(Database(where, password))


def _hammer(spec: tuple[str, str, str | None], subject: str, count: int, start: float) -> int:
    store = _open(spec)
    try:
        store.check()  # connected before the start
        while time.time() < start:
            time.sleep(0.001)
        rate = Rate(per_minute=1, burst=10)
        return sum(store.hit("compute", subject, rate).allowed for _ in range(count))
    finally:
        store.close()


@both_stores
def test_one_budget_across_processes(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Four processes (like uvicorn workers, or app hosts) share one budget: 10 in all, not
    10 each. Several rounds: a race between the processes shows only now and then."""
    if store_kind == "file":
        spec = ("file", str(tmp_path / "limits.sqlite3"), None)
        LimitStore(Path(spec[1])).check()
    else:
        request.getfixturevalue("make_database")()  # the tables
        database = request.getfixturevalue("database")
        spec = ("postgresql", database.url, database.password)
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        for round_ in range(5):
            start = time.time() + 0.5
            allowed = pool.starmap(_hammer, [(spec, f"alice{round_}", 25, start)] * 4)
            assert sum(allowed) == 10, (round_, allowed)


@both_stores
def test_the_last_token_goes_to_exactly_one_racer(make_store: Callable[[], Limits]) -> None:
    """Eight callers, each with a store of its own (another worker, or with PostgreSQL
    another app host), race for the last token of a bucket: exactly one gets it."""
    racers = [make_store() for _ in range(8)]
    for racer in racers:
        racer.check()  # connected before the race
    rate = Rate(per_minute=1, burst=3)  # the fake clock stands still: no refill
    for round_ in range(5):
        subject = f"alice{round_}"
        assert racers[0].hit("compute", subject, rate).allowed
        assert racers[0].hit("compute", subject, rate).allowed
        barrier = threading.Barrier(len(racers))

        def race(i: int, subject: str = subject, barrier: threading.Barrier = barrier) -> bool:
            barrier.wait()
            return racers[i].hit("compute", subject, rate).allowed

        with ThreadPoolExecutor(len(racers)) as pool:
            won = list(pool.map(race, range(len(racers))))
        assert sum(won) == 1, (round_, won)


# --- login throttling --------------------------------------------------------------------

POLICY = LoginPolicy(
    address_free_failures=5,
    account_free_failures=20,
    lockout_base=2,
    address_lockout_max=900,
    account_lockout_max=60,
    failure_window=86400,
)


def _fail(store: Limits, user: str = "alice", address: str = "198.51.100.7") -> Decision:
    return store.login_attempt(user, address, POLICY)


@both_stores
def test_five_failures_then_exponential_lockouts_capped(
    store: LimitStore, clock: FakeClock
) -> None:
    assert all(_fail(store).allowed for _ in range(5))
    locks = []
    for _ in range(12):
        refused = _fail(store)
        assert not refused.allowed
        locks.append(refused.retry_after)
        clock.now += refused.retry_after  # wait it out, then fail again
        assert _fail(store).allowed
    assert locks == [2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900, 900]


@both_stores
def test_lockout_is_per_account_and_address(store: Limits) -> None:
    for _ in range(5):
        _fail(store, address="198.51.100.7")
    assert not _fail(store, address="198.51.100.7").allowed
    # The real user elsewhere, and another account from the guesser's address, still get in.
    assert _fail(store, address="203.0.113.9").allowed
    assert _fail(store, user="bob", address="198.51.100.7").allowed


@both_stores
def test_account_wide_lockout_is_short(store: Limits, clock: FakeClock) -> None:
    """Guesses spread over many addresses: account-wide lockout, never longer than 60 s."""
    for i in range(20):
        assert _fail(store, address=f"10.0.{i}.1").allowed
    refused = _fail(store, address="203.0.113.9")
    assert not refused.allowed and refused.retry_after == 2
    longest = 0
    for i in range(30):
        clock.now += 61
        assert _fail(store, address=f"10.1.{i}.1").allowed
        refused = _fail(store, address="203.0.113.9")
        longest = max(longest, refused.retry_after)
    assert longest == 60


@both_stores
def test_success_clears_the_failures(store: Limits) -> None:
    for _ in range(4):
        _fail(store)
    assert _fail(store).allowed  # the 5th: the right password this time
    store.login_succeeded("alice", "198.51.100.7")
    assert all(_fail(store).allowed for _ in range(5))


@both_stores
def test_failures_are_forgotten_after_the_window(store: Limits, clock: FakeClock) -> None:
    for _ in range(5):
        _fail(store)
    clock.now += POLICY.failure_window + 1
    assert all(_fail(store).allowed for _ in range(5))


@both_stores
def test_garbage_usernames_and_addresses_get_bounded_keys(store: Limits) -> None:
    assert subject_key("alice") == "alice"
    key = subject_key("x" * 256 + "\x00'; DROP TABLE logins;--")
    assert key.startswith("~") and len(key) == 33
    assert address_key("2001:db8::1") == "2001:db8::1"
    long_address = "203.0.113.9, " * 100
    assert len(address_key(long_address)) == 33
    for _ in range(5):
        _fail(store, address=long_address)
    assert not _fail(store, address=long_address).allowed
    store.login_succeeded("alice", long_address)
    assert _fail(store, address=long_address).allowed


@both_stores
def test_reset_cli(
    store: Limits,
    store_kind: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    if isinstance(store, LimitStore):
        where = ["--db", str(store.path)]
    else:  # PostgreSQL: named by the environment, as the app's unit has it
        database = request.getfixturevalue("database")
        monkeypatch.setenv("PLATFORM_DATABASE_URL", database.url)
        if database.password is not None:
            monkeypatch.setenv("PLATFORM_DATABASE_PASSWORD", database.password)
        where = []
    for _ in range(6):
        _fail(store)
    store.hit("compute", "alice", Rate(1, 1))
    store.hit("compute", "bob", Rate(1, 1))
    assert main([*where, "reset", "alice"]) == 0
    assert "removed 3 entries" in capsys.readouterr().out
    assert _fail(store).allowed
    assert not store.hit("compute", "bob", Rate(1, 1)).allowed
    assert main([*where, "reset", "--all"]) == 0
    assert store.hit("compute", "bob", Rate(1, 1)).allowed
    assert main(["--db", str(tmp_path / "missing.sqlite3"), "reset", "--all"]) == 1


def test_reset_cli_needs_a_store(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PLATFORM_DATABASE_URL", raising=False)
    assert main(["reset", "alice"]) == 1
    assert "give --db PATH (SQLite) or set PLATFORM_DATABASE_URL" in capsys.readouterr().err
    monkeypatch.setenv("PLATFORM_DATABASE_URL", "postgresql://app:pw-in-url@db/app")
    assert main(["reset", "alice"]) == 1
    err = capsys.readouterr().err
    assert "must not contain a password" in err and "pw-in-url" not in err


# --- PostgreSQL only ---------------------------------------------------------------------


def test_an_unreachable_database_refuses_and_never_shows_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No server needed: nothing listens on port 1. The limiter refuses (503 in the API),
    and neither the exception nor any log line carries the password."""
    from platform_app.database import Database
    from platform_app.limits_pg import PgLimitStore

    password = "never-shown-4b1d9e"
    url = "postgresql://platform_app@127.0.0.1:1/platform_app"
    store = PgLimitStore(Database(url, password, timeout=0.5))
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(LimiterUnavailable, match=r"platform_app@127\.0\.0\.1:1/platform_app"):
            store.hit("compute", "alice", Rate(30, 10))
        with pytest.raises(LimiterUnavailable) as refused:
            store.login_attempt("alice", "198.51.100.7", POLICY)
    finally:
        store.close()
    assert "rate limit store" in caplog.text
    assert password not in caplog.text + str(refused.value) + repr(store.database)


@postgresql_only
def test_a_failing_database_gives_503_not_a_free_pass(
    client: TestClient, database: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The store fails (here its tables are gone): requests are refused, never let through."""
    alice = auth_header(login(client, "alice"))
    with database.connect() as conn:
        conn.execute("DROP TABLE limit_buckets, limit_logins")
    response = client.post("/api/strategy/evaluate", json={"expression": "1"}, headers=alice)
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    body = {"username": "alice", "password": PASSWORDS["alice"]}
    assert client.post("/api/auth/login", json=body).status_code == 503
    assert "limit_buckets" in caplog.text and database.password not in caplog.text


@postgresql_only
def test_the_store_reconnects_after_its_connections_die(store: Limits, database: Any) -> None:
    """What a restart of PostgreSQL does to the pool: its connections die. The next call
    gets a working connection (checked before use), not an error."""
    rate = Rate(per_minute=60, burst=100)
    assert store.hit("compute", "alice", rate).allowed
    app_backends = (
        "FROM pg_stat_activity WHERE application_name = 'platform_app'"
        " AND datname = current_database()"
    )
    with database.connect() as conn:
        killed = conn.execute(f"SELECT count(pg_terminate_backend(pid)) {app_backends}")
        assert killed.fetchone()[0] >= 1
        deadline = time.monotonic() + 10
        while conn.execute(f"SELECT count(*) {app_backends}").fetchone()[0]:
            assert time.monotonic() < deadline, "the backends did not end"
            time.sleep(0.05)
    assert store.hit("compute", "alice", rate).allowed
    assert store.login_attempt("alice", "198.51.100.7", POLICY).allowed


@postgresql_only
def test_pruning_drops_only_rows_that_decide_nothing(store: Any, clock: FakeClock) -> None:
    store.hit("compute", "old", Rate(per_minute=60, burst=5))
    _fail(store, user="old")
    clock.now += POLICY.failure_window + 10
    store.hit("compute", "new", Rate(per_minute=60, burst=5))
    _fail(store, user="new")
    store._prune()
    with store.database.transaction() as conn:
        buckets = conn.execute("SELECT subject FROM limit_buckets").fetchall()
        logins = conn.execute("SELECT DISTINCT subject FROM limit_logins").fetchall()
    assert buckets == [("new",)] and logins == [("new",)]


# --- through the API ---------------------------------------------------------------------


@both_stores
def test_strategy_evaluations_are_limited_per_user(client: TestClient, action_log: Path) -> None:
    """The finding: 100 evaluations from one user were all answered. Burst 10 by default."""
    alice = auth_header(login(client, "alice"))
    statuses, retry_after = [], set()
    for _ in range(100):
        response = client.post("/api/strategy/evaluate", json={"expression": "1+1"}, headers=alice)
        statuses.append(response.status_code)
        if response.status_code == 429:
            retry_after.add(response.headers["retry-after"])
            assert response.headers["cache-control"] == "no-store"
    assert statuses.count(200) <= 11 and statuses.count(429) >= 89, statuses
    assert retry_after and all(v.isdigit() and int(v) >= 1 for v in retry_after)
    # bob is another user: his budget is intact.
    bob = auth_header(login(client, "bob"))
    assert (
        client.post("/api/strategy/evaluate", json={"expression": "2"}, headers=bob).status_code
        == 200
    )
    limited = [r for r in read_actions(action_log) if r["op"] == "rate_limited"]
    assert limited and limited[0]["user"] == "alice" and limited[0]["details"]["scope"] == "compute"


@both_stores
def test_portfolio_writes_are_limited_per_user(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(PLATFORM_LIMIT_WRITE_BURST="3")
    alice = auth_header(login(client, "alice"))
    codes = [
        client.put("/api/portfolios/alice/p", json=[i], headers=alice).status_code for i in range(5)
    ]
    assert codes == [200, 200, 200, 429, 429]


@both_stores
def test_twenty_wrong_passwords_then_the_right_one(client: TestClient, action_log: Path) -> None:
    """The finding: 20 wrong passwords were all answered, then the right one let in."""
    statuses = []
    for _ in range(20):
        response = client.post("/api/auth/login", json={"username": "alice", "password": "wrong"})
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
    assert statuses == [401] * 5 + [429] * 15
    right = client.post(
        "/api/auth/login", json={"username": "alice", "password": PASSWORDS["alice"]}
    )
    assert right.status_code == 429
    ops = [r["op"] for r in read_actions(action_log)]
    assert ops.count("login_failed") == 5 and ops.count("login_throttled") == 16


@both_stores
def test_unknown_usernames_are_throttled_like_real_ones(client: TestClient) -> None:
    for user in ("alice", "nobody-here"):
        statuses = [
            client.post("/api/auth/login", json={"username": user, "password": "x"}).status_code
            for _ in range(7)
        ]
        assert statuses == [401] * 5 + [429] * 2, (user, statuses)


@both_stores
def test_parallel_guesses_cannot_slip_through_while_bcrypt_runs(client: TestClient) -> None:
    def attempt(_: int) -> int:
        body = {"username": "bob", "password": "wrong"}
        return client.post("/api/auth/login", json=body).status_code

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(attempt, range(40)))
    assert statuses.count(401) == 5 and statuses.count(429) == 35, statuses
