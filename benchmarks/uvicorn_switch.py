#!/usr/bin/env python3
"""Requests lost when uvicorn hands over a socket it does not own (systemd's platform.socket).

    benchmarks/uvicorn_switch.py [--switches 10] [--workers 2] [--clients 4]

This process plays systemd: it holds a listening unix socket, runs the server on it as fd 3
(like platform.service), and switches servers under load (SIGTERM to the old one, then a new
one, as a release switch or a restart does), while CLIENTS threads send GETs, each on a new
connection. Run once with uvicorn itself and once with roles/app's launcher
(roles/app/files/uvicorn-drain.py); prints requests and failures of each. Needs uvicorn in
the interpreter that runs it (the controller's .venv has it, requirements.txt).
A measurement, not a test: tests/unit/test_uvicorn_drain.py asserts the launcher's zero.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "roles" / "app" / "files" / "uvicorn-drain.py"
APP = """
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})
"""


def switch_under_load(command: list[str], workers: int = 2, switches: int = 10, clients: int = 4) -> dict:
    """Switch servers SWITCHES times under load; return the requests answered and the failures."""
    with tempfile.TemporaryDirectory() as scratch:
        Path(scratch, "bench_app.py").write_text(APP)
        path = str(Path(scratch, "app.sock"))
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(4096)

        def start() -> subprocess.Popen:
            args = [*command, "bench_app:app", "--fd", "3", "--workers", str(workers), "--no-access-log",
                    "--log-level", "warning", "--timeout-graceful-shutdown", "10"]  # fmt: skip
            return subprocess.Popen(  # noqa: S603 - our own command
                args, cwd=scratch, pass_fds=(3, listener.fileno()),  # 3: dup2-ed below, kept open
                preexec_fn=lambda: os.dup2(listener.fileno(), 3),  # noqa: PLW1509 - before exec only
            )  # fmt: skip

        answered, failures, lock, stop = [0], [], threading.Lock(), threading.Event()

        def client() -> None:
            while not stop.is_set():
                try:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    sock.settimeout(10)
                    sock.connect(path)
                    conn = http.client.HTTPConnection("localhost", timeout=10)
                    conn.sock = sock
                    conn.request("GET", "/")
                    conn.getresponse().read()
                    conn.close()
                    with lock:
                        answered[0] += 1
                except (OSError, http.client.HTTPException) as exc:
                    with lock:
                        failures.append(type(exc).__name__)

        server = start()
        time.sleep(2)
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        try:
            for _ in range(switches):
                time.sleep(1.0)
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=60)
                server = start()
                time.sleep(1.0)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
            listener.close()
    return {"answered": answered[0], "failed": len(failures), "errors": sorted(set(failures))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switches", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    print(f"{args.switches} switches under load, {args.workers} workers, {args.clients} clients, "
          f"uvicorn from {sys.executable}")  # fmt: skip
    for label, command in (("uvicorn itself", [sys.executable, "-m", "uvicorn"]),
                           ("roles/app launcher (drains)", [sys.executable, str(LAUNCHER)])):  # fmt: skip
        started = time.monotonic()
        out = switch_under_load(command, args.workers, args.switches, args.clients)
        print(f"  {label:30} {out['answered']:7d} requests, {out['failed']:3d} failed {out['errors'] or ''}"
              f" ({time.monotonic() - started:.0f} s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
