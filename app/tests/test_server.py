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
from conftest import read_actions

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
def server(env: dict[str, str], tmp_path: Path) -> Iterator[int]:
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
