"""The admin-only action viewer."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import auth_header, login, make_settings, read_actions
from fastapi.testclient import TestClient

from platform_app.actionlog import MonthlyFilesReader
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
    settings = make_settings(env, journal_socket=str(fake_socket))
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


def _journald_env(env: dict[str, str], tmp_path: Path) -> tuple[dict[str, str], str]:
    fake_socket = tmp_path / "journal.sock"
    fake_socket.touch()
    env = {k: v for k, v in env.items() if k != "PLATFORM_ACTION_LOG"}
    return env, str(fake_socket)


def _write_month(directory: Path, month: str, users: list[str]) -> None:
    lines = [
        json.dumps({"ts": f"{month}-01T00:00:00.000Z", "user": u, "op": "login"}) for u in users
    ]
    (directory / f"actions-{month}.jsonl").write_text("\n".join(lines) + "\n")


def test_admin_reads_the_copiers_monthly_files_in_journald_mode(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Deployed mode: records go to the journal; admins read the copier's JSONL files."""
    log_dir = tmp_path / "actionlog"
    log_dir.mkdir()
    _write_month(log_dir, "2026-10", ["a1", "a2", "a3"])
    _write_month(log_dir, "2026-11", ["b1", "b2"])
    (log_dir / "notes.txt").write_text("not a monthly file\n")
    env, fake_socket = _journald_env(env, tmp_path)
    env["PLATFORM_ACTION_LOG_READ_DIR"] = str(log_dir)
    sink = _MemorySink()
    with TestClient(
        create_app(make_settings(env, journal_socket=fake_socket), sink=sink)
    ) as client:
        token = login(client, "root")
        body = client.get("/api/admin/actions?limit=4", headers=auth_header(token)).json()
        assert "note" not in body
        # The newest four, oldest first, across the change of month.
        assert [r["user"] for r in body["actions"]] == ["a2", "a3", "b1", "b2"]
        everything = client.get("/api/admin/actions", headers=auth_header(token)).json()
        assert [r["user"] for r in everything["actions"]] == ["a1", "a2", "a3", "b1", "b2"]
    # The view itself is recorded (to the journal), never into the files.
    assert [json.loads(line)["op"] for line in sink.lines] == ["login", "admin_view", "admin_view"]
    assert sorted(os.listdir(log_dir)) == [
        "actions-2026-10.jsonl",
        "actions-2026-11.jsonl",
        "notes.txt",
    ]


def test_admin_gets_503_when_the_files_are_unreadable(env: dict[str, str], tmp_path: Path) -> None:
    log_dir = tmp_path / "actionlog"
    log_dir.mkdir()
    (log_dir / "actions-2026-11.jsonl").mkdir()  # cannot be read as a file, even by root
    env, fake_socket = _journald_env(env, tmp_path)
    env["PLATFORM_ACTION_LOG_READ_DIR"] = str(log_dir)
    with TestClient(
        create_app(make_settings(env, journal_socket=fake_socket), sink=_MemorySink())
    ) as client:
        token = login(client, "root")
        response = client.get("/api/admin/actions", headers=auth_header(token))
    assert response.status_code == 503


def test_monthly_reader_with_missing_directory_raises(tmp_path: Path) -> None:
    from platform_app.actionlog import ActionLogUnreadable

    with pytest.raises(ActionLogUnreadable):
        MonthlyFilesReader(tmp_path / "missing").tail(5)
