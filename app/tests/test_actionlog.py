"""Action records: one JSONL line per significant action, and the journald datagram."""

from __future__ import annotations

import json
import os
import re
import socket
import struct
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import auth_header, login, read_actions
from fastapi.testclient import TestClient

from platform_app.actionlog import ActionLogger, FileSink, JournaldSink, SocketSink, make_record
from platform_app.journald import JournalClient, encode_entry, encode_field

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def _assert_record(record: dict[str, Any], user: str | None, op: str) -> None:
    assert set(record) == {"ts", "user", "op", "details", "ip"}
    assert RFC3339_UTC.match(record["ts"]), record["ts"]
    datetime.fromisoformat(record["ts"].replace("Z", "+00:00"))
    assert record["user"] == user
    assert record["op"] == op
    assert isinstance(record["details"], dict)
    assert record["ip"] == "testclient"  # request.client.host under TestClient


def _new_lines(action_log: Path, before: int) -> list[dict[str, Any]]:
    return read_actions(action_log)[before:]


def test_login_and_failed_login_each_write_one_line(client: TestClient, action_log: Path) -> None:
    login(client, "alice")
    lines = read_actions(action_log)
    assert len(lines) == 1
    _assert_record(lines[0], "alice", "login")
    assert lines[0]["details"] == {"role": "user"}

    client.post("/api/auth/login", json={"username": "alice", "password": "nope"})
    lines = read_actions(action_log)
    assert len(lines) == 2
    _assert_record(lines[1], "alice", "login_failed")
    assert "nope" not in action_log.read_text()


def test_failed_login_with_garbage_username_records_no_username(
    client: TestClient, action_log: Path
) -> None:
    client.post("/api/auth/login", json={"username": "pass word!", "password": "x"})
    (record,) = read_actions(action_log)
    _assert_record(record, None, "login_failed")


@pytest.mark.parametrize(
    ("method", "path", "body", "user", "op", "details"),
    [
        ("PUT", "/api/portfolios/alice/main", {"a": 1}, "alice", "portfolio_write",
         {"owner": "alice", "name": "main", "bytes": 8}),
        ("GET", "/api/portfolios/alice/main", None, "alice", "portfolio_read",
         {"owner": "alice", "name": "main"}),
        ("GET", "/api/portfolios/alice", None, "alice", "portfolio_list", {"owner": "alice"}),
        ("GET", "/api/portfolios/bob/main", None, "alice", "access_denied",
         {"owner": "bob", "name": "main", "attempted": "read"}),
        ("GET", "/api/admin/actions?limit=5", None, "root", "admin_view", {"limit": 5}),
        ("POST", "/api/strategy/evaluate", {"expression": "__import__('os')"}, "alice",
         "strategy_rejected", None),
    ],
)  # fmt: skip
def test_significant_actions_write_exactly_one_line(
    client: TestClient,
    tokens: dict[str, str],
    action_log: Path,
    method: str,
    path: str,
    body: Any,
    user: str,
    op: str,
    details: dict[str, Any] | None,
) -> None:
    client.put("/api/portfolios/alice/main", json={"a": 1}, headers=auth_header(tokens["alice"]))
    before = len(read_actions(action_log))
    client.request(method, path, json=body, headers=auth_header(tokens[user]))
    (record,) = _new_lines(action_log, before)
    _assert_record(record, user, op)
    if details is not None:
        assert record["details"] == details


def test_reads_without_side_effects_are_not_logged(
    client: TestClient, tokens: dict[str, str], action_log: Path
) -> None:
    before = len(read_actions(action_log))
    headers = auth_header(tokens["alice"])
    client.get("/api/me", headers=headers)
    client.get("/api/market/status", headers=headers)
    client.post("/api/strategy/evaluate", json={"expression": "1+1"}, headers=headers)
    client.get("/healthz")
    assert _new_lines(action_log, before) == []


def test_file_sink_uses_o_append_and_one_write_per_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[int] = []
    writes: list[bytes] = []
    real_open, real_write = os.open, os.write

    def spy_open(path: Any, flags: int, mode: int = 0o777) -> int:
        opened.append(flags)
        return real_open(path, flags, mode)

    def spy_write(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "write", spy_write)
    path = tmp_path / "actions.jsonl"
    ActionLogger(FileSink(path)).log("login", user="alice", ip="127.0.0.1", details={"k": "v\nw"})
    monkeypatch.undo()

    assert len(opened) == 1
    for flag in (os.O_APPEND, os.O_CREAT, os.O_WRONLY):
        assert opened[0] & flag
    assert len(writes) == 1 and writes[0].endswith(b"\n") and writes[0].count(b"\n") == 1
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    record = json.loads(path.read_text())
    assert record["details"] == {"k": "v\nw"}
    assert record["ip"] == "127.0.0.1"


def test_file_sink_tail_returns_last_records_and_skips_garbage(tmp_path: Path) -> None:
    path = tmp_path / "actions.jsonl"
    sink = FileSink(path)
    for i in range(50):
        sink.write(json.dumps(make_record(f"u{i}", "login", None, None)))
    with path.open("ab") as handle:
        handle.write(b"not json\n")
    assert [r["user"] for r in sink.tail(3)] == ["u47", "u48", "u49"]
    assert len(sink.tail(1000)) == 50
    assert FileSink(tmp_path / "missing.jsonl").tail(5) == []


def test_failing_sink_does_not_break_requests(make_client: Any, tmp_path: Path) -> None:
    client = make_client(PLATFORM_ACTION_LOG=f"file:{tmp_path}/no/such/dir/actions.jsonl")
    assert (
        client.post(
            "/api/auth/login", json={"username": "alice", "password": "alice-pass-1"}
        ).status_code
        == 200
    )


# --- journald native protocol -------------------------------------------------


@pytest.fixture
def journal_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "journal.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(5)
    yield path, server
    server.close()


def _parse_datagram(data: bytes) -> dict[str, bytes]:
    """A reference parser of the native protocol, independent of the encoder."""
    fields: dict[str, bytes] = {}
    while data:
        newline = data.index(b"\n")
        line = data[:newline]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value
            data = data[newline + 1 :]
        else:
            (length,) = struct.unpack("<Q", data[newline + 1 : newline + 9])
            start = newline + 9
            fields[line.decode()] = data[start : start + length]
            assert data[start + length : start + length + 1] == b"\n"
            data = data[start + length + 1 :]
    return fields


def test_journald_sink_sends_a_correct_datagram(
    journal_socket: tuple[str, socket.socket],
) -> None:
    path, server = journal_socket
    logger = ActionLogger(JournaldSink("platform-actions", JournalClient(path)))
    logger.log("login", user="alice", ip="10.0.0.5", details={"role": "user"})
    datagram = server.recv(65536)
    assert datagram.endswith(b"\n")
    fields = _parse_datagram(datagram)
    assert set(fields) == {"MESSAGE", "SYSLOG_IDENTIFIER", "PRIORITY"}
    assert fields["SYSLOG_IDENTIFIER"] == b"platform-actions"
    assert fields["PRIORITY"] == b"6"
    assert datagram.startswith(b"MESSAGE={")  # simple KEY=value form for one-line JSON
    record = json.loads(fields["MESSAGE"])
    assert record["user"] == "alice" and record["op"] == "login" and record["ip"] == "10.0.0.5"
    assert RFC3339_UTC.match(record["ts"])


def test_journald_sink_through_the_app(
    env: dict[str, str], journal_socket: tuple[str, socket.socket]
) -> None:
    from conftest import make_settings

    from platform_app.factory import create_app

    path, server = journal_socket
    env = {**env, "PLATFORM_ACTION_LOG": "journald", "PLATFORM_ACTION_LOG_IDENTIFIER": "lab-act"}
    settings = make_settings(env, journal_socket=path)
    with TestClient(create_app(settings)) as client:
        login(client, "bob")
    fields = _parse_datagram(server.recv(65536))
    assert fields["SYSLOG_IDENTIFIER"] == b"lab-act"
    assert json.loads(fields["MESSAGE"])["user"] == "bob"


def test_journald_binary_form_for_values_with_newlines() -> None:
    encoded = encode_field("MESSAGE", "two\nlines")
    assert encoded == b"MESSAGE\n" + struct.pack("<Q", 9) + b"two\nlines\n"
    assert encode_field("PRIORITY", "6") == b"PRIORITY=6\n"
    entry = encode_entry({"MESSAGE": "a\nb", "PRIORITY": "6"})
    assert _parse_datagram(entry) == {"MESSAGE": b"a\nb", "PRIORITY": b"6"}


@pytest.mark.parametrize("name", ["message", "_PRIVATE", "BAD-NAME", "", "A=B"])
def test_journald_rejects_invalid_field_names(name: str) -> None:
    with pytest.raises(ValueError, match="invalid journal field name"):
        encode_field(name, "x")


def test_journald_oversized_entry_goes_through_memfd(
    journal_socket: tuple[str, socket.socket],
) -> None:
    path, server = journal_socket
    big = "x" * (512 * 1024)  # larger than any unix datagram the kernel accepts by default
    JournalClient(path).send({"MESSAGE": big, "PRIORITY": "6"})
    message, fds, _flags, _addr = socket.recv_fds(server, 1024, 1)
    assert message == b"" and len(fds) == 1
    with os.fdopen(fds[0], "rb") as handle:
        handle.seek(0)  # journald maps the memfd; the offset is shared with the sender
        fields = _parse_datagram(handle.read())
    assert fields["MESSAGE"] == big.encode()


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A unix datagram socket like platform-actionlog.socket (SO_PASSCRED set)."""
    path = str(tmp_path / "records.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    server.settimeout(5)
    try:
        yield path, server
    finally:
        server.close()


def _receive(server: socket.socket) -> tuple[dict[str, Any], int]:
    data, ancillary, _, _ = server.recvmsg(1 << 20, socket.CMSG_SPACE(12))
    uid = next(
        struct.unpack("iII", payload[:12])[1]
        for level, kind, payload in ancillary
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
    )
    return json.loads(data), uid


def test_socket_sink_sends_one_datagram_per_record_with_credentials(
    env: dict[str, str], collector: tuple[str, socket.socket]
) -> None:
    """Deployed mode: each record is one datagram; the kernel tells the collector who sent it."""
    from conftest import make_settings

    from platform_app.factory import create_app

    path, server = collector
    env = {**env, "PLATFORM_ACTION_LOG": f"socket:{path}"}
    with TestClient(create_app(make_settings(env))) as client:
        login(client, "alice")
        client.post("/api/auth/login", json={"username": "alice", "password": "wrong"})
    first, uid = _receive(server)
    second, _ = _receive(server)
    assert (first["op"], first["user"], second["op"]) == ("login", "alice", "login_failed")
    assert uid == os.getuid()


def test_socket_sink_truncates_details_of_an_oversized_record(
    collector: tuple[str, socket.socket],
) -> None:
    path, server = collector
    ActionLogger(SocketSink(Path(path))).log(
        "strategy_rejected", user="bob", ip=None, details={"reason": "x" * 400_000}
    )
    record, _ = _receive(server)
    assert record["op"] == "strategy_rejected" and record["user"] == "bob"
    assert record["details"]["truncated"] is True and record["details"]["bytes"] > 400_000


def test_socket_sink_failure_never_breaks_the_request(env: dict[str, str], tmp_path: Path) -> None:
    """No collector listening: the request still succeeds; the failure is logged."""
    from conftest import make_settings

    from platform_app.factory import create_app

    env = {**env, "PLATFORM_ACTION_LOG": f"socket:{tmp_path / 'nobody.sock'}"}
    with TestClient(create_app(make_settings(env))) as client:
        assert (
            client.post(
                "/api/auth/login", json={"username": "alice", "password": "alice-pass-1"}
            ).status_code
            == 200
        )
