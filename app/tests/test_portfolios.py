"""Portfolio storage: ownership, caps, modes, atomic writes and traversal defences.

Tests marked ``@both_stores`` run on the file store and on PostgreSQL (conftest.py)."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import auth_header, both_stores, login, postgresql_only, read_actions
from fastapi.testclient import TestClient

from platform_app.portfolios import (
    InvalidName,
    PortfolioLimitReached,
    PortfolioNotFound,
    Portfolios,
    PortfolioStore,
    PortfolioTooLarge,
    serialize,
)

DOC = {"positions": [{"symbol": "ACME", "qty": 10}], "cash": 1000.5}


def _state(env: dict[str, str]) -> Path:
    return Path(env["PLATFORM_STATE_DIR"])


@pytest.fixture
def make_store(
    store_kind: str, env: dict[str, str], request: pytest.FixtureRequest
) -> Callable[..., Portfolios]:
    """Makes stores of the kind under test; each PostgreSQL one has a pool of its own, as
    another worker or app host has."""
    if store_kind == "file":
        return lambda **caps: PortfolioStore(_state(env), **caps)
    from platform_app.portfolios_pg import PgPortfolioStore

    make_database = request.getfixturevalue("make_database")
    return lambda **caps: PgPortfolioStore(make_database(), **caps)


@both_stores
def test_owner_can_write_read_and_list(
    client: TestClient, tokens: dict[str, str], env: dict[str, str]
) -> None:
    headers = auth_header(tokens["alice"])
    put = client.put("/api/portfolios/alice/main", json=DOC, headers=headers)
    assert put.status_code == 200, put.text
    assert put.headers["cache-control"] == "no-store"
    got = client.get("/api/portfolios/alice/main", headers=headers)
    assert got.status_code == 200
    assert got.json() == DOC
    client.put("/api/portfolios/alice/growth-2", json=[1, 2], headers=headers)
    listing = client.get("/api/portfolios/alice", headers=headers)
    assert listing.json() == {"owner": "alice", "portfolios": ["growth-2", "main"]}


def test_files_and_directories_are_private(
    client: TestClient, tokens: dict[str, str], env: dict[str, str]
) -> None:
    client.put("/api/portfolios/alice/main", json=DOC, headers=auth_header(tokens["alice"]))
    user_dir = _state(env) / "users" / "alice"
    assert stat.S_IMODE(os.stat(user_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(user_dir.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(user_dir / "main.json").st_mode) == 0o600
    assert json.loads((user_dir / "main.json").read_text()) == DOC
    assert [p.name for p in user_dir.iterdir()] == ["main.json"]  # no temp files left


@both_stores
def test_overwrite_replaces_content(client: TestClient, tokens: dict[str, str]) -> None:
    headers = auth_header(tokens["alice"])
    client.put("/api/portfolios/alice/main", json=DOC, headers=headers)
    client.put("/api/portfolios/alice/main", json={"cash": 1}, headers=headers)
    assert client.get("/api/portfolios/alice/main", headers=headers).json() == {"cash": 1}


@both_stores
def test_missing_portfolio_is_404(client: TestClient, tokens: dict[str, str]) -> None:
    response = client.get("/api/portfolios/alice/none", headers=auth_header(tokens["alice"]))
    assert response.status_code == 404


@both_stores
def test_cross_user_access_is_403_and_logged(
    client: TestClient, tokens: dict[str, str], action_log: Path, env: dict[str, str]
) -> None:
    client.put("/api/portfolios/bob/secret", json={"x": 1}, headers=auth_header(tokens["bob"]))
    alice = auth_header(tokens["alice"])
    before = len(read_actions(action_log))
    assert client.get("/api/portfolios/bob/secret", headers=alice).status_code == 403
    assert client.put("/api/portfolios/bob/secret", json={}, headers=alice).status_code == 403
    assert client.get("/api/portfolios/bob", headers=alice).status_code == 403
    # Admins are not owners either.
    root = auth_header(tokens["root"])
    assert client.get("/api/portfolios/bob/secret", headers=root).status_code == 403
    new = read_actions(action_log)[before:]
    assert [r["op"] for r in new] == ["access_denied"] * 4
    assert [r["user"] for r in new] == ["alice", "alice", "alice", "root"]
    assert new[0]["details"] == {"owner": "bob", "attempted": "read", "name": "secret"}
    bob = auth_header(tokens["bob"])
    assert client.get("/api/portfolios/bob/secret", headers=bob).json() == {"x": 1}


@both_stores
def test_unknown_and_existing_other_owners_answer_alike(
    client: TestClient, tokens: dict[str, str]
) -> None:
    """No username enumeration: bob (exists) and mallory (does not) give the same answer."""
    client.put("/api/portfolios/bob/main", json={"x": 1}, headers=auth_header(tokens["bob"]))
    headers = auth_header(tokens["alice"])
    for method, suffix in [("GET", "/main"), ("GET", ""), ("PUT", "/main"), ("DELETE", "/main")]:
        answers = []
        for owner in ("bob", "mallory"):
            body = {"y": 2} if method == "PUT" else None
            response = client.request(
                method, f"/api/portfolios/{owner}{suffix}", json=body, headers=headers
            )
            answers.append((response.status_code, response.content))
        assert (
            answers[0]
            == answers[1]
            == (403, b'{"detail":"only the owner may access this portfolio"}')
        ), (method, suffix, answers)


@both_stores
def test_owner_can_delete(client: TestClient, tokens: dict[str, str], action_log: Path) -> None:
    headers = auth_header(tokens["alice"])
    client.put("/api/portfolios/alice/old", json=[1], headers=headers)
    assert client.delete("/api/portfolios/alice/old", headers=headers).status_code == 200
    assert client.get("/api/portfolios/alice/old", headers=headers).status_code == 404
    assert client.delete("/api/portfolios/alice/old", headers=headers).status_code == 404
    assert read_actions(action_log)[-1]["op"] == "portfolio_delete"


@both_stores
def test_portfolio_count_is_capped(make_client, env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    client = make_client(PLATFORM_PORTFOLIO_MAX_COUNT="3", PLATFORM_LIMIT_WRITE_BURST="100")
    headers = auth_header(login(client, "alice"))
    for name in ("p1", "p2", "p3"):
        assert (
            client.put(f"/api/portfolios/alice/{name}", json=[1], headers=headers).status_code
            == 200
        )
    refused = client.put("/api/portfolios/alice/p4", json=[1], headers=headers)
    assert refused.status_code == 409 and "at most 3" in refused.text
    # Replacing an existing one is not a new one; after a delete there is room again.
    assert client.put("/api/portfolios/alice/p3", json=[2], headers=headers).status_code == 200
    assert client.delete("/api/portfolios/alice/p1", headers=headers).status_code == 200
    assert client.put("/api/portfolios/alice/p4", json=[1], headers=headers).status_code == 200
    listing = client.get("/api/portfolios/alice", headers=headers).json()
    assert listing["portfolios"] == ["p2", "p3", "p4"]


@both_stores
def test_portfolio_size_is_capped(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(PLATFORM_PORTFOLIO_MAX_BYTES="2048")
    headers = auth_header(login(client, "alice"))
    small = {"notes": "x" * 1000}
    assert client.put("/api/portfolios/alice/ok", json=small, headers=headers).status_code == 200
    big = {"notes": "x" * 3000}
    response = client.put("/api/portfolios/alice/big", json=big, headers=headers)
    assert response.status_code == 413
    assert client.get("/api/portfolios/alice/big", headers=headers).status_code == 404


@both_stores
def test_portfolio_count_cap_holds_under_concurrency(make_store: Callable[..., Portfolios]) -> None:
    """Writers in parallel threads (as in several workers) never exceed the cap."""
    store = make_store(max_count=5)

    def write(i: int) -> bool:
        try:
            store.write("alice", f"n{i}", {"i": i})
            return True
        except PortfolioLimitReached:
            return False

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(write, range(40)))
    assert sum(results) == 5
    assert len(store.list("alice")) == 5


@both_stores
def test_the_last_place_goes_to_exactly_one_racer(make_store: Callable[..., Portfolios]) -> None:
    """Eight writers, each with a store of its own (another worker, or with PostgreSQL
    another app host), race for the one place left: exactly one gets it. Several rounds:
    a race shows only now and then."""
    racers = [make_store(max_count=3) for _ in range(8)]
    for racer in racers:
        racer.list("nobody")  # connected before the race
    for round_ in range(5):
        owner = f"user{round_}"
        racers[0].write(owner, "a", [1])
        racers[0].write(owner, "b", [2])
        barrier = threading.Barrier(len(racers))

        def race(i: int, owner: str = owner, barrier: threading.Barrier = barrier) -> bool:
            barrier.wait()
            try:
                racers[i].write(owner, f"new{i}", [i])
                return True
            except PortfolioLimitReached:
                return False

        with ThreadPoolExecutor(len(racers)) as pool:
            won = list(pool.map(race, range(len(racers))))
        assert sum(won) == 1, (round_, won)
        assert len(racers[0].list(owner)) == 3


@both_stores
def test_store_round_trip_and_errors(make_store: Callable[..., Portfolios]) -> None:
    store = make_store(max_count=2, max_bytes=1024)
    document: Any = {"name": "Épargne €", "nested": [1, 2.5, None, True, {"k": "ü"}], "z": 0}
    size = store.write("alice", "main", document)
    assert size == len(serialize(document))
    assert store.read("alice", "main") == document
    assert store.write("alice", "main", ["replaced"]) == len(b'["replaced"]\n')
    assert store.read("alice", "main") == ["replaced"]
    store.write("alice", "Zeta", None)
    assert store.read("alice", "Zeta") is None
    assert store.list("alice") == ["Zeta", "main"]  # code point order on both stores
    assert store.list("bob") == []
    with pytest.raises(PortfolioLimitReached, match="at most 2 portfolios per user"):
        store.write("alice", "third", {})
    with pytest.raises(PortfolioNotFound):
        store.read("bob", "main")
    with pytest.raises(PortfolioNotFound):
        store.delete("alice", "missing")
    store.delete("alice", "Zeta")
    assert store.list("alice") == ["main"]
    # The cap counts the stored bytes: 1024 fit, 1025 do not.
    exactly = "x" * (1024 - len(serialize("")))
    assert store.write("alice", "big", exactly) == 1024
    with pytest.raises(PortfolioTooLarge, match="at most 1024 bytes"):
        store.write("alice", "big", exactly + "x")
    assert store.read("alice", "big") == exactly


@pytest.mark.parametrize("name", ["a.b", "x" * 65, "main.json", "sp ace", "é", "a%00b"])
def test_invalid_name_is_400(client: TestClient, tokens: dict[str, str], name: str) -> None:
    headers = auth_header(tokens["alice"])
    response = client.put(f"/api/portfolios/alice/{name}", json=DOC, headers=headers)
    assert response.status_code == 400


def test_body_must_be_json(client: TestClient, tokens: dict[str, str]) -> None:
    headers = {**auth_header(tokens["alice"]), "Content-Type": "application/json"}
    response = client.put("/api/portfolios/alice/main", content=b"{not json", headers=headers)
    assert response.status_code == 400


def test_body_size_is_capped(client: TestClient, tokens: dict[str, str]) -> None:
    big = {"blob": "x" * (300 * 1024)}
    response = client.put(
        "/api/portfolios/alice/main", json=big, headers=auth_header(tokens["alice"])
    )
    assert response.status_code == 413


TRAVERSALS = [
    "/api/portfolios/alice/..%2fbob%2fsecret",
    "/api/portfolios/alice/..%2Fbob%2Fsecret",
    "/api/portfolios/alice/%2e%2e%2fbob%2fsecret",
    "/api/portfolios/alice/%2E%2E%2Fbob%2Fsecret",
    "/api/portfolios/alice/..%5cbob%5csecret",
    "/api/portfolios/alice/%252e%252e%252fbob%252fsecret",
    "/api/portfolios/alice/..%c0%afbob%c0%afsecret",
    "/api/portfolios/alice/..",
    "/api/portfolios/alice/%2e%2e",
    "/api/portfolios/alice/%2e",
    "/api/portfolios/..%2fbob/secret",
    "/api/portfolios/%2e%2e/users",
    "/api/portfolios/alice%2f..%2fbob/secret",
    "/api/portfolios/alice/secret%00",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_attempts_are_refused(
    client: TestClient, tokens: dict[str, str], env: dict[str, str], path: str
) -> None:
    client.put(
        "/api/portfolios/bob/secret", json={"bob": "only"}, headers=auth_header(tokens["bob"])
    )
    headers = auth_header(tokens["alice"])
    read = client.get(path, headers=headers)
    assert read.status_code in (400, 403, 404, 405), (path, read.status_code)
    assert "only" not in read.text
    write = client.put(path, json={"pwned": True}, headers=headers)
    assert write.status_code in (400, 403, 404, 405), (path, write.status_code)
    assert json.loads((_state(env) / "users" / "bob" / "secret.json").read_text()) == {
        "bob": "only"
    }
    # Nothing was written anywhere but inside users/bob.
    written = sorted(p.relative_to(_state(env)).as_posix() for p in _state(env).rglob("*"))
    assert written == ["users", "users/bob", "users/bob/secret.json"]


@both_stores
@pytest.mark.parametrize("name", ["..", "../bob/x", "a/b", "", ".hidden", "x\x00"])
def test_store_rejects_bad_names_directly(make_store: Callable[..., Portfolios], name: str) -> None:
    store = make_store()
    for call in (store.read, store.delete, lambda owner, name: store.write(owner, name, {})):
        with pytest.raises(InvalidName):
            call("alice", name)


@both_stores
@pytest.mark.parametrize("owner", ["..", "../alice", "a/b", ""])
def test_store_rejects_bad_owners_directly(
    make_store: Callable[..., Portfolios], owner: str
) -> None:
    store = make_store()
    for call in (store.read, store.delete, lambda owner, name: store.write(owner, name, {})):
        with pytest.raises(InvalidName):
            call(owner, "main")
    with pytest.raises(InvalidName):
        store.list(owner)


def test_store_refuses_symlink_escape(env: dict[str, str], tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text('{"outside": true}')
    store = PortfolioStore(_state(env))
    store.write("alice", "main", {"ok": 1})
    link = _state(env) / "users" / "alice" / "evil.json"
    link.symlink_to(outside)
    with pytest.raises(InvalidName):
        store.read("alice", "evil")
    with pytest.raises(InvalidName):
        store.write("alice", "evil", {"overwritten": True})
    assert json.loads(outside.read_text()) == {"outside": True}


def test_store_refuses_symlinked_user_dir(env: dict[str, str], tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    users = _state(env) / "users"
    users.mkdir(mode=0o700)
    (users / "alice").symlink_to(elsewhere)
    store = PortfolioStore(_state(env))
    with pytest.raises(InvalidName):
        store.write("alice", "main", {})
    assert list(elsewhere.iterdir()) == []


@postgresql_only
def test_postgresql_rows_hold_the_file_store_bytes(
    make_store: Callable[..., Portfolios], database: Any, tmp_path: Path
) -> None:
    """``document`` is exactly the file's content, ``bytes`` its size: the caps agree."""
    document = {"b": 1, "a": ["é", 2.50, {"y": None}], "big": 10**20}
    make_store().write("alice", "main", document)
    files = PortfolioStore(tmp_path)
    files.write("alice", "main", document)
    on_disk = (tmp_path / "users" / "alice" / "main.json").read_bytes()
    with database.connect() as conn:
        text, size = conn.execute(
            "SELECT document, bytes FROM portfolios WHERE owner = 'alice' AND name = 'main'"
        ).fetchone()
    assert text.encode("utf-8") == on_disk and size == len(on_disk)


@pytest.mark.postgresql
def test_workers_starting_at_once_create_the_tables_once(
    database: Any, make_database: Callable[..., Any]
) -> None:
    """Eight processes (two hosts' workers) start at once on a database without the app's
    tables: every one comes up (concurrent CREATE TABLE IF NOT EXISTS can collide in the
    catalog without the advisory lock). Several rounds, tables dropped in between."""
    from platform_app.database import TABLES, Database

    for _ in range(5):
        with database.connect() as conn:
            conn.execute(f"DROP TABLE IF EXISTS {', '.join(TABLES)}")
        starters = [Database(database.url, database.password) for _ in range(8)]
        barrier = threading.Barrier(len(starters))

        def start(db: Database, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            db.create_schema()

        with ThreadPoolExecutor(len(starters)) as pool:
            list(pool.map(start, starters))  # re-raises the first failure
    make_database()  # and once more on existing tables
