"""Per-user rate limits and login throttling (platform_app.limits), shared across processes."""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import PASSWORDS, auth_header, login, read_actions
from fastapi.testclient import TestClient

from platform_app.limits import (
    Decision,
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
def store(tmp_path: Path, clock: FakeClock) -> LimitStore:
    return LimitStore(tmp_path / "limits.sqlite3", clock=clock)


# --- the token bucket -------------------------------------------------------------------


def test_bucket_allows_the_burst_then_one_per_interval(store: LimitStore, clock: FakeClock) -> None:
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


def test_bucket_refills_completely(store: LimitStore, clock: FakeClock) -> None:
    rate = Rate(per_minute=60, burst=5)
    for _ in range(5):
        store.hit("compute", "alice", rate)
    clock.now += 3600
    assert sum(store.hit("compute", "alice", rate).allowed for _ in range(10)) == 5


def test_clock_moved_back_does_not_lock_anyone_out(store: LimitStore, clock: FakeClock) -> None:
    rate = Rate(per_minute=60, burst=2)
    store.hit("compute", "alice", rate)
    clock.now -= 86400
    assert store.hit("compute", "alice", rate).allowed


def _hammer(path: str, count: int, start: float) -> int:
    store = LimitStore(Path(path))
    while time.time() < start:
        time.sleep(0.001)
    return sum(
        store.hit("compute", "alice", Rate(per_minute=1, burst=10)).allowed for _ in range(count)
    )


def test_one_budget_across_processes(tmp_path: Path) -> None:
    """Four processes (like uvicorn workers) share one budget: 10 in all, not 10 each.
    Several rounds: a race between the processes shows only now and then."""
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        for round_ in range(5):
            path = str(tmp_path / f"limits-{round_}.sqlite3")
            LimitStore(Path(path)).check()
            start = time.time() + 0.5
            allowed = pool.starmap(_hammer, [(path, 25, start)] * 4)
            assert sum(allowed) == 10, (round_, allowed)


# --- login throttling --------------------------------------------------------------------

POLICY = LoginPolicy(
    address_free_failures=5,
    account_free_failures=20,
    lockout_base=2,
    address_lockout_max=900,
    account_lockout_max=60,
    failure_window=86400,
)


def _fail(store: LimitStore, user: str = "alice", address: str = "198.51.100.7") -> Decision:
    return store.login_attempt(user, address, POLICY)


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


def test_lockout_is_per_account_and_address(store: LimitStore) -> None:
    for _ in range(5):
        _fail(store, address="198.51.100.7")
    assert not _fail(store, address="198.51.100.7").allowed
    # The real user elsewhere, and another account from the guesser's address, still get in.
    assert _fail(store, address="203.0.113.9").allowed
    assert _fail(store, user="bob", address="198.51.100.7").allowed


def test_account_wide_lockout_is_short(store: LimitStore, clock: FakeClock) -> None:
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


def test_success_clears_the_failures(store: LimitStore) -> None:
    for _ in range(4):
        _fail(store)
    assert _fail(store).allowed  # the 5th: the right password this time
    store.login_succeeded("alice", "198.51.100.7")
    assert all(_fail(store).allowed for _ in range(5))


def test_failures_are_forgotten_after_the_window(store: LimitStore, clock: FakeClock) -> None:
    for _ in range(5):
        _fail(store)
    clock.now += POLICY.failure_window + 1
    assert all(_fail(store).allowed for _ in range(5))


def test_garbage_usernames_and_addresses_get_bounded_keys(store: LimitStore) -> None:
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


def test_reset_cli(store: LimitStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(6):
        _fail(store)
    store.hit("compute", "alice", Rate(1, 1))
    store.hit("compute", "bob", Rate(1, 1))
    assert main(["--db", str(store.path), "reset", "alice"]) == 0
    assert "removed 3 entries" in capsys.readouterr().out
    assert _fail(store).allowed
    assert not store.hit("compute", "bob", Rate(1, 1)).allowed
    assert main(["--db", str(tmp_path / "missing.sqlite3"), "reset", "--all"]) == 1


# --- through the API ---------------------------------------------------------------------


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


def test_portfolio_writes_are_limited_per_user(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(PLATFORM_LIMIT_WRITE_BURST="3")
    alice = auth_header(login(client, "alice"))
    codes = [
        client.put("/api/portfolios/alice/p", json=[i], headers=alice).status_code for i in range(5)
    ]
    assert codes == [200, 200, 200, 429, 429]


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


def test_unknown_usernames_are_throttled_like_real_ones(client: TestClient) -> None:
    for user in ("alice", "nobody-here"):
        statuses = [
            client.post("/api/auth/login", json={"username": user, "password": "x"}).status_code
            for _ in range(7)
        ]
        assert statuses == [401] * 5 + [429] * 2, (user, statuses)


def test_parallel_guesses_cannot_slip_through_while_bcrypt_runs(client: TestClient) -> None:
    def attempt(_: int) -> int:
        body = {"username": "bob", "password": "wrong"}
        return client.post("/api/auth/login", json=body).status_code

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(attempt, range(40)))
    assert statuses.count(401) == 5 and statuses.count(429) == 35, statuses
