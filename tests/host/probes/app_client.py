"""Run ON the host, as root: requests straight to the app's own socket (not through nginx).

Usage: python3 - ENDPOINT < PLAN.json
ENDPOINT is what platform.socket listens on: "unix:/run/platform/app.sock" or
"tcp:127.0.0.1:8000" (earlier versions of roles/app). The plan comes on stdin (it may
carry a password, never put on a command line):

    {"login": {"username": "alice", "password": "...", "headers": {...}},   # optional
     "requests": [{"method": "GET", "path": "/x", "body": {...}, "headers": {...}}, ...],
     "repeat": {"count": 100, "method": "POST", "path": "/api/x/{i}", "body": {...},
                "headers": {...}},                                        # optional
     "concurrency": 8,
     "reset": ["cmd", "arg"]}                                             # optional

A request with "pad": N gets the body {"notes": "x" * N} (built here: a large body never
travels on a command line). "requests" run in order, then "repeat" COUNT times ({i} in the path is replaced by the
index) on CONCURRENCY threads. With "reset", a 429 runs that command (which lifts the
user's limits) and the request is sent again (up to RESET_TRIES times). Prints JSON: the login's status, and
per request [status, Retry-After or null, first 200 bytes of the body (a request's "keep": N keeps N)], plus elapsed
seconds of the repeat. Standard library only: the host needs nothing installed for it.
"""

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ENDPOINT = sys.argv[1]
PLAN = json.load(sys.stdin)
_reset_lock = threading.Lock()


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=60)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(60)
        sock.connect(self.unix_path)
        self.sock = sock


def connection() -> http.client.HTTPConnection:
    kind, _, where = ENDPOINT.partition(":")
    if kind == "unix":
        return UnixConnection(where)
    address, _, port = where.rpartition(":")
    return http.client.HTTPConnection(address, int(port), timeout=60)


def send(method: str, path: str, body=None, headers=None, keep: int = 200) -> list:
    conn = connection()
    try:
        payload = None if body is None else json.dumps(body)
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=payload, headers=all_headers)
        resp = conn.getresponse()
        data = resp.read()
        return [resp.status, resp.getheader("Retry-After"), data[:keep].decode("utf-8", "replace")]
    except OSError as exc:
        return [0, None, f"{type(exc).__name__}: {exc}"]
    finally:
        conn.close()


RESET_TRIES = 10


def send_with_reset(method: str, path: str, body=None, headers=None, keep: int = 200) -> list:
    """Send; on a 429 lift the limits and send again. On a busy host the other threads
    can use up the fresh burst before this one's resend goes out, so this tries up to
    RESET_TRIES times; a 429 that outlasts them all is returned as it is."""
    result = send(method, path, body, headers, keep)
    tries = 0
    while result[0] == 429 and PLAN.get("reset") and tries < RESET_TRIES:
        tries += 1
        with _reset_lock:
            subprocess.run(PLAN["reset"], check=True, capture_output=True)  # noqa: S603
        result = send(method, path, body, headers, keep)
    return result


out: dict = {"login": None, "results": [], "elapsed": 0.0}
auth: dict = {}
if PLAN.get("login"):
    creds = {k: PLAN["login"][k] for k in ("username", "password")}
    status, _, text = send("POST", "/api/auth/login", creds, PLAN["login"].get("headers"), 1 << 16)
    out["login"] = status
    if status == 200:
        auth = {"Authorization": "Bearer " + json.loads(text)["access_token"]}
for item in PLAN.get("requests", []):
    body = {"notes": "x" * int(item["pad"])} if "pad" in item else item.get("body")
    out["results"].append(
        send_with_reset(item.get("method", "GET"), item["path"], body, {**auth, **(item.get("headers") or {})},
                        int(item.get("keep", 200)))
    )
repeat = PLAN.get("repeat")
if repeat:
    def one(i: int) -> list:
        return send_with_reset(repeat.get("method", "GET"), repeat["path"].replace("{i}", str(i)),
                               repeat.get("body"), {**auth, **(repeat.get("headers") or {})})
    start = time.monotonic()
    with ThreadPoolExecutor(int(PLAN.get("concurrency", 1))) as pool:
        out["results"].extend(pool.map(one, range(int(repeat["count"]))))
    out["elapsed"] = time.monotonic() - start
json.dump(out, sys.stdout)
