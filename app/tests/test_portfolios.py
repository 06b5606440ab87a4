"""Portfolio storage: ownership, modes, atomic writes and traversal defences."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from conftest import auth_header, read_actions
from fastapi.testclient import TestClient

from platform_app.portfolios import InvalidName, PortfolioStore

DOC = {"positions": [{"symbol": "ACME", "qty": 10}], "cash": 1000.5}


def _state(env: dict[str, str]) -> Path:
    return Path(env["PLATFORM_STATE_DIR"])


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


def test_overwrite_replaces_content(client: TestClient, tokens: dict[str, str]) -> None:
    headers = auth_header(tokens["alice"])
    client.put("/api/portfolios/alice/main", json=DOC, headers=headers)
    client.put("/api/portfolios/alice/main", json={"cash": 1}, headers=headers)
    assert client.get("/api/portfolios/alice/main", headers=headers).json() == {"cash": 1}


def test_missing_portfolio_is_404(client: TestClient, tokens: dict[str, str]) -> None:
    response = client.get("/api/portfolios/alice/none", headers=auth_header(tokens["alice"]))
    assert response.status_code == 404


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
    bob_file = _state(env) / "users" / "bob" / "secret.json"
    assert json.loads(bob_file.read_text()) == {"x": 1}


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


def test_owner_can_delete(client: TestClient, tokens: dict[str, str], action_log: Path) -> None:
    headers = auth_header(tokens["alice"])
    client.put("/api/portfolios/alice/old", json=[1], headers=headers)
    assert client.delete("/api/portfolios/alice/old", headers=headers).status_code == 200
    assert client.get("/api/portfolios/alice/old", headers=headers).status_code == 404
    assert client.delete("/api/portfolios/alice/old", headers=headers).status_code == 404
    assert read_actions(action_log)[-1]["op"] == "portfolio_delete"


def test_portfolio_count_is_capped(make_client, env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    from conftest import login

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
    assert sorted(p.name for p in (_state(env) / "users" / "alice").iterdir()) == [
        "p2.json", "p3.json", "p4.json",
    ]  # fmt: skip


def test_portfolio_size_is_capped(make_client) -> None:  # type: ignore[no-untyped-def]
    from conftest import login

    client = make_client(PLATFORM_PORTFOLIO_MAX_BYTES="2048")
    headers = auth_header(login(client, "alice"))
    small = {"notes": "x" * 1000}
    assert client.put("/api/portfolios/alice/ok", json=small, headers=headers).status_code == 200
    big = {"notes": "x" * 3000}
    response = client.put("/api/portfolios/alice/big", json=big, headers=headers)
    assert response.status_code == 413
    assert client.get("/api/portfolios/alice/big", headers=headers).status_code == 404


def test_portfolio_count_cap_holds_under_concurrency(tmp_path: Path) -> None:
    """Writers in parallel threads (as in several workers) never exceed the cap."""
    from concurrent.futures import ThreadPoolExecutor

    from platform_app.portfolios import PortfolioLimitReached

    store = PortfolioStore(tmp_path, max_count=5)

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


@pytest.mark.parametrize("name", ["..", "../bob/x", "a/b", "", ".hidden", "x\x00"])
def test_store_rejects_bad_names_directly(env: dict[str, str], name: str) -> None:
    store = PortfolioStore(_state(env))
    with pytest.raises(InvalidName):
        store.write("alice", name, {})


@pytest.mark.parametrize("owner", ["..", "../alice", "a/b", ""])
def test_store_rejects_bad_owners_directly(env: dict[str, str], owner: str) -> None:
    store = PortfolioStore(_state(env))
    with pytest.raises(InvalidName):
        store.write(owner, "main", {})


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
