"""End to end: the real ``uvicorn platform_app.main:app`` on a loopback port."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import both_stores, read_actions

APP_DIR = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _request(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    """Sends ``path`` byte for byte (http.client does not normalise dot segments)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        payload = None if body is None else json.dumps(body)
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        connection.request(method, path, body=payload, headers=all_headers)
        response = connection.getresponse()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, response.read().decode()
    finally:
        connection.close()


@pytest.fixture
def server(
    env: dict[str, str], tmp_path: Path, users_document_cost12: dict[str, Any]
) -> Iterator[int]:
    # A real server accepts bcrypt cost >= 12 only.
    users_file = tmp_path / "users-cost12.json"
    users_file.write_text(json.dumps(users_document_cost12))
    env["PLATFORM_USERS_FILE"] = str(users_file)
    port = _free_port()
    log = (tmp_path / "uvicorn.log").open("wb")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PLATFORM_", "STATE_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "platform_app.main:app", "--host", "127.0.0.1",
         "--port", str(port), "--proxy-headers", "--forwarded-allow-ips", "127.0.0.1",
         "--no-server-header", "--log-level", "warning"],
        cwd=APP_DIR,
        env={**clean, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _request(port, "GET", "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                output = (tmp_path / "uvicorn.log").read_text()
                pytest.fail(f"uvicorn did not start: {output}")
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_real_server_login_traversal_and_forwarded_ip(
    server: int, env: dict[str, str], action_log: Path
) -> None:
    status, headers, body = _request(
        server,
        "POST",
        "/api/auth/login",
        {"username": "alice", "password": "alice-pass-1"},
        {"X-Forwarded-For": "203.0.113.7"},
    )
    assert status == 200, body
    assert headers["cache-control"] == "no-store"
    token = json.loads(body)["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    # The proxy (127.0.0.1) is trusted, so the client IP is taken from X-Forwarded-For.
    assert read_actions(action_log)[-1]["ip"] == "203.0.113.7"

    assert _request(server, "PUT", "/api/portfolios/alice/main", {"a": 1}, auth)[0] == 200
    for path in [
        "/api/portfolios/alice/../bob/x",
        "/api/portfolios/alice/..%2fbob%2fx",
        "/api/portfolios/alice/%2e%2e%2f%2e%2e%2fusers",
        "/api/portfolios/alice/..%252f..%252fetc",
        "/api/portfolios/alice/..",
        "/api/portfolios/alice/%2e%2e",
        "/api/portfolios/alice/main%2ejson",
        "/api/portfolios/..%2f..%2fetc/passwd",
        "/api/portfolios/alice/..\\..\\x",
    ]:
        status, _, body = _request(server, "GET", path, headers=auth)
        assert status in (400, 403, 404, 405), (path, status, body)
        status, _, _ = _request(server, "PUT", path, {"pwned": 1}, auth)
        assert status in (400, 403, 404, 405), (path, status)
    state = Path(env["PLATFORM_STATE_DIR"])
    assert sorted(p.relative_to(state).as_posix() for p in state.rglob("*")) == [
        "users",
        "users/alice",
        "users/alice/main.json",
    ]


def test_real_server_refuses_to_start_without_secret(env: dict[str, str]) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PLATFORM_", "STATE_"))}
    env = {k: v for k, v in env.items() if k != "PLATFORM_JWT_SECRET"}
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "platform_app.main:app", "--port", str(_free_port())],
        cwd=APP_DIR,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 78
    assert "PLATFORM_JWT_SECRET is not set" in result.stderr


# --- as deployed: a unix socket only the proxy can open, several workers ---------------------


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(self.path)
        self.sock = sock


def _unix_request(
    path: str, method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    connection = _UnixHTTPConnection(path)
    try:
        payload = None if body is None else json.dumps(body)
        connection.request(
            method,
            url,
            body=payload,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        response = connection.getresponse()
        return (
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            response.read().decode(),
        )
    finally:
        connection.close()


@pytest.fixture
def unix_server(
    env: dict[str, str], tmp_path: Path, users_document_cost12: dict[str, Any]
) -> Iterator[str]:
    """uvicorn as roles/app runs it: 2 workers on a unix socket, X-Forwarded-For trusted
    from any peer of that socket (only the proxy's group may connect to it)."""
    users_file = tmp_path / "users-cost12.json"
    users_file.write_text(json.dumps(users_document_cost12))
    env["PLATFORM_USERS_FILE"] = str(users_file)
    sock_path = str(tmp_path / "app.sock")
    log = (tmp_path / "uvicorn.log").open("wb")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PLATFORM_", "STATE_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "platform_app.main:app", "--uds", sock_path,
         "--workers", "2", "--proxy-headers", "--forwarded-allow-ips", "*",
         "--no-server-header", "--no-access-log", "--log-level", "warning"],
        cwd=APP_DIR, env={**clean, **env}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _unix_request(sock_path, "GET", "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"uvicorn did not start: {(tmp_path / 'uvicorn.log').read_text()}")
            time.sleep(0.2)
        yield sock_path
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@both_stores
def test_two_workers_share_one_budget_per_user(unix_server: str) -> None:
    """100 evaluations from one user, spread over 2 worker processes: one budget (burst 10,
    30/min), not one per worker. With PostgreSQL, both workers also create the tables at
    once when they start (under the advisory lock)."""
    from concurrent.futures import ThreadPoolExecutor

    status, _, body = _unix_request(
        unix_server, "POST", "/api/auth/login", {"username": "alice", "password": "alice-pass-1"}
    )
    assert status == 200, body
    auth = {"Authorization": f"Bearer {json.loads(body)['access_token']}"}

    def evaluate(_: int) -> tuple[int, str | None]:
        code, headers, _ = _unix_request(
            unix_server, "POST", "/api/strategy/evaluate", {"expression": "1+1"}, auth
        )
        return code, headers.get("retry-after")

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(evaluate, range(100)))
    elapsed = time.monotonic() - started
    ok = sum(1 for code, _ in results if code == 200)
    limited = [after for code, after in results if code == 429]
    assert ok + len(limited) == 100, results
    assert 1 <= ok <= 10 + int(elapsed / 2) + 1, (ok, elapsed)
    assert all(after and int(after) >= 1 for after in limited)


@both_stores
def test_login_lockout_is_per_forwarded_address(unix_server: str, action_log: Path) -> None:
    guesser = {"X-Forwarded-For": "198.51.100.7"}
    statuses = [
        _unix_request(unix_server, "POST", "/api/auth/login",
                      {"username": "bob", "password": "wrong"}, guesser)[0]
        for _ in range(7)
    ]  # fmt: skip
    assert statuses == [401] * 5 + [429] * 2
    right = {"username": "bob", "password": "bob-pass-2"}
    assert _unix_request(unix_server, "POST", "/api/auth/login", right, guesser)[0] == 429
    # The real user from their own address is not locked out by the guesser.
    elsewhere = {"X-Forwarded-For": "203.0.113.9"}
    assert _unix_request(unix_server, "POST", "/api/auth/login", right, elsewhere)[0] == 200
    records = read_actions(action_log)
    assert records[-1]["op"] == "login" and records[-1]["ip"] == "203.0.113.9"
    assert {r["ip"] for r in records if r["op"] == "login_failed"} == {"198.51.100.7"}
