"""The admin-only action viewer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import auth_header, login, read_actions
from fastapi.testclient import TestClient

from platform_app.config import load_settings
from platform_app.factory import create_app


def test_admin_actions_without_token_is_401(client: TestClient) -> None:
    response = client.get("/api/admin/actions")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_admin_actions_with_garbage_token_is_401(client: TestClient) -> None:
    response = client.get("/api/admin/actions", headers=auth_header("not.a.jwt"))
    assert response.status_code == 401


def test_admin_actions_for_regular_user_is_403(client: TestClient, tokens: dict[str, str]) -> None:
    response = client.get("/api/admin/actions", headers=auth_header(tokens["alice"]))
    assert response.status_code == 403
    assert response.headers["cache-control"] == "no-store"


def test_admin_actions_for_admin_returns_last_records(
    client: TestClient, tokens: dict[str, str], action_log: Path
) -> None:
    response = client.get("/api/admin/actions?limit=2", headers=auth_header(tokens["root"]))
    assert response.status_code == 200
    actions: list[dict[str, Any]] = response.json()["actions"]
    assert [a["user"] for a in actions] == ["bob", "root"]  # logins, in order
    assert all(a["op"] == "login" for a in actions)
    # The view itself is logged afterwards.
    assert read_actions(action_log)[-1]["op"] == "admin_view"
    assert read_actions(action_log)[-1]["details"] == {"limit": 2}


def test_admin_actions_limit_is_bounded(client: TestClient, tokens: dict[str, str]) -> None:
    headers = auth_header(tokens["root"])
    assert client.get("/api/admin/actions?limit=0", headers=headers).status_code == 422
    assert client.get("/api/admin/actions?limit=100000", headers=headers).status_code == 422


def test_admin_actions_with_journald_sink_is_empty_with_note(
    env: dict[str, str], tmp_path: Path
) -> None:
    # With PLATFORM_ACTION_LOG unset, an existing journal socket selects "journald".
    fake_socket = tmp_path / "journal.sock"
    fake_socket.touch()
    env = {k: v for k, v in env.items() if k != "PLATFORM_ACTION_LOG"}
    settings = load_settings(env, journal_socket=str(fake_socket))
    assert settings.action_log.kind == "journald"
    sink = _MemorySink()
    with TestClient(create_app(settings, sink=sink)) as client:
        token = login(client, "root")
        body = client.get("/api/admin/actions", headers=auth_header(token)).json()
    assert body["actions"] == []
    assert "journal" in body["note"]
    assert [json.loads(line)["op"] for line in sink.lines] == ["login", "admin_view"]


class _MemorySink:
    readable = False

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, line: str) -> None:
        self.lines.append(line)

    def tail(self, limit: int) -> list[dict[str, Any]]:
        return []
