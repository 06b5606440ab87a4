#!/usr/bin/env python3
"""Requests to /healthz during two release switches of roles/app; prints failures and times.

    benchmarks/app_release_switch.py -i /tmp/dev-1 --host dev-1 [--via auto|nginx|socket] [--rounds N]
    benchmarks/app_release_switch.py -i inventory/tiers --host tier-edge --via nginx --limit app --rounds 3

1. Copies ./app to a temporary directory with a new version (1.0.0+bench<epoch>, also in
   __version__, so that /healthz tells the releases apart).
2. Starts the load: sequential GETs of /healthz, each on a new connection, from
   `--clients` threads. With --via nginx (the default when https://www.<lab_domain>/healthz
   answers) they run on the controller, through the TLS edge, paced under its rate limit
   (one request every 2.1 s per client; a 429 is counted apart, as the edge's policy; with
   IAC_PROBE_SOURCES, the lab's controller addresses, one client per address). With
   --via socket (or without nginx) 4 unpaced clients run on the host, as root, against the
   app's own unix socket (where platform.socket listens), over SSH: the dense measurement
   of the socket hand-over. (--via loopback is the old name of --via socket.)
3. Runs `ansible-playbook playbooks/app.yml --tags app_release --limit <--limit, default
   --host>` with the bench copy (switch 1), then with the repository's app (switch 2, back
   to the release that served before); --rounds N does this N times under the same load (2N
   switches, failures counted over all). With the edge in front of several app hosts
   (`--host` the edge, `--limit app`: docs/tiers.md "Rolling release"), each switch is a
   rolling release across them, one host at a time.
4. Prints the requests, the failures (target 0), the slowest answer, and for each switch
   the gap between the last answer from the old version and the first from the new one
   (during a roll both versions answer for a while: the time both did is printed instead).

A measurement, not a test (CONTRIBUTING.md): it changes the host's serving release twice
and leaves it on the original one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The load generator: runs as is on the controller (nginx) or on the host (loopback).
LOADER = r"""
import http.client, json, os, socket, ssl, sys, threading, time
mode, address, name, port, cafile, stop_file, clients, interval, sources = sys.argv[1:10]
port, clients, interval = int(port), int(clients), float(interval)
sources = [s for s in sources.split(",") if s]
results, lock = [], threading.Lock()
def one(source):
    t0 = time.time()
    try:
        if mode == "nginx":
            ctx = ssl.create_default_context(cafile=cafile or None)
            raw = socket.create_connection((address, port), timeout=10,
                                           source_address=(source, 0) if source else None)
            sock = ctx.wrap_socket(raw, server_hostname=name)
            conn = http.client.HTTPConnection(name, port, timeout=10)
            conn.sock = sock
        else:
            conn = http.client.HTTPConnection("localhost", timeout=10)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(10)
            sock.connect(address)
            conn.sock = sock
        conn.request("GET", "/healthz", headers={"Host": name, "Connection": "close"})
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        version = json.loads(body).get("version") if resp.status == 200 else None
        return (t0, time.time(), resp.status, version, "")
    except Exception as exc:
        return (t0, time.time(), 0, None, type(exc).__name__ + ": " + str(exc)[:80])
def worker(source):
    while not os.path.exists(stop_file):
        r = one(source)
        with lock:
            results.append(r)
        time.sleep(interval)
threads = [threading.Thread(target=worker, args=(sources[i % len(sources)] if sources else "",))
           for i in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
json.dump(results, sys.stdout)
"""


def inventory_vars(inventory: str, host: str) -> dict:
    out = subprocess.run(
        [str(REPO / ".venv/bin/ansible-inventory"), "-i", inventory, "--host", host],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def ssh_base(address: str, key: str) -> list[str]:
    return [
        "ssh",
        "-i",
        key,
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        f"root@{address}",
    ]


def nginx_answers(address: str, name: str, cafile: str | None) -> bool:
    import http.client
    import socket

    try:
        ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
        sock = ctx.wrap_socket(socket.create_connection((address, 443), timeout=3), server_hostname=name)
        conn = http.client.HTTPConnection(name, 443, timeout=3)
        conn.sock = sock
        conn.request("GET", "/healthz", headers={"Host": name})
        return conn.getresponse().status == 200
    except OSError:
        return False


def bench_copy(tmp: Path, version: str) -> Path:
    app = tmp / "app"
    shutil.copytree(REPO / "app", app, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    pyproject = app / "pyproject.toml"
    pyproject.write_text(re.sub(r'(?m)^version = ".*"', f'version = "{version}"', pyproject.read_text()))
    init = app / "platform_app" / "__init__.py"
    init.write_text(re.sub(r'__version__ = ".*"', f'__version__ = "{version}"', init.read_text()))
    return app


def probe_sources() -> list[str]:
    """The lab controller's own addresses of IAC_PROBE_SOURCES (A.B.C.D-E), one per client."""
    import socket

    spec = os.environ.get("IAC_PROBE_SOURCES", "")
    found = re.fullmatch(r"(\d+\.\d+\.\d+)\.(\d+)-(\d+)", spec)
    if not found:
        return []
    mine = []
    for last in range(int(found.group(2)), int(found.group(3)) + 1):
        address = f"{found.group(1)}.{last}"
        try:
            socket.create_server((address, 0)).close()
        except OSError:
            continue
        mine.append(address)
    return mine


def playbook(inventory: str, host: str, source: Path, key: str) -> float:
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_PRIVATE_KEY_FILE": key,
        "ANSIBLE_COLLECTIONS_PATH": str(REPO / "collections"),
    }
    started = time.monotonic()
    run = subprocess.run(
        [
            str(REPO / ".venv/bin/ansible-playbook"),
            "-i",
            inventory,
            str(REPO / "playbooks/app.yml"),
            "--limit",
            host,
            "--tags",
            "app_release",
            "-e",
            f"app_source={source}",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if run.returncode != 0:
        sys.exit(f"ansible-playbook failed:\n{run.stdout[-3000:]}")
    return time.monotonic() - started


def hand_overs(results: list, plays: list) -> list[str]:
    """Per play (target, started, ended): which versions answered from its start to the next
    play's, and how long the old and the new one answered side by side (a roll across
    several app hosts) or how long nothing answered between them (a single host)."""
    ok = sorted((r for r in results if r[2] == 200), key=lambda r: r[1])
    lines = []
    old = ok[0][3] if ok else None
    for index, (_, started, _) in enumerate(plays):
        until = plays[index + 1][1] if index + 1 < len(plays) else float("inf")
        window = [r for r in ok if started <= r[1] < until]
        new = window[-1][3] if window else old
        counts = {v: sum(1 for r in window if r[3] == v) for v in dict.fromkeys(r[3] for r in window)}
        first_new = min((r[1] for r in window if r[3] == new), default=None)
        last_old = max((r[1] for r in window if r[3] == old), default=None)
        if new == old or first_new is None or last_old is None:
            how = "no hand-over seen"
        elif last_old > first_new:
            how = f"both answered for {last_old - first_new:.1f} s"
        else:
            how = f"{first_new - last_old:.2f} s between the last old and the first new answer"
        lines.append(f"switch {old} -> {new}: {how}; answers {counts}")
        old = new
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-i", "--inventory", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--via", choices=["auto", "nginx", "socket", "loopback"], default="auto")
    parser.add_argument(
        "--limit",
        help="the hosts whose release switches (default: --host; with the edge as --host, e.g. 'app')",
    )
    parser.add_argument("--clients", type=int, help="load threads (default: 4 on the socket, 1 via nginx)")
    parser.add_argument(
        "--interval",
        type=float,
        help="pause between two requests of a client (default: 0 on the socket; 2.1 s via nginx, "
        "under the edge's general rate limit of 30 requests per minute per client IP)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="switch to the bench copy and back N times under one load (default 1: two switches)",
    )
    args = parser.parse_args()

    key = os.environ.get("ANSIBLE_PRIVATE_KEY_FILE", str(REPO / ".lab/ssh/id_ed25519"))
    hv = inventory_vars(args.inventory, args.host)
    address = hv.get("ansible_host", args.host)
    name = f"www.{hv['lab_domain']}"
    cafile = os.environ.get("IAC_CA_BUNDLE", str(REPO / ".lab/ca-root.pem"))
    cafile = cafile if cafile and Path(cafile).exists() else ""
    via = "socket" if args.via == "loopback" else args.via
    if via == "auto":
        via = "nginx" if nginx_answers(address, name, cafile or None) else "socket"
    # A flag file (on the controller or the host) that tells the load threads to stop.
    sources = probe_sources() if via == "nginx" else []
    clients = args.clients or ((len(sources) or 1) if via == "nginx" else 4)
    interval = args.interval if args.interval is not None else (2.1 if via == "nginx" else 0.0)
    stop_file = f"/tmp/app-bench-stop-{os.getpid()}"  # noqa: S108 - a flag, no data in it
    if via == "nginx":
        loader = [
            sys.executable,
            "-c",
            LOADER,
            "nginx",
            address,
            name,
            "443",
            cafile,
            stop_file,
            str(clients),
            str(interval),
            ",".join(sources),
        ]
        stop = ["touch", stop_file]
    else:
        # The app's unix socket, as systemd has it (platform.socket), not as the inventory says.
        sock = subprocess.run(
            [*ssh_base(address, key), "systemctl show --property=Listen --value platform.socket"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[0]
        cmd = f"python3 -c {shlex_quote(LOADER)} socket {sock} {name} 0 '' {stop_file} {clients} {interval} ''"
        loader = [*ssh_base(address, key), f"rm -f {stop_file}; {cmd}"]
        stop = [*ssh_base(address, key), f"touch {stop_file}"]
    target = name if via == "nginx" else f"{sock} on {args.host}"
    limit = args.limit or args.host
    print(
        f"load: {clients} clients, {interval} s apart, GET /healthz via {via} ({target})"
        + (f", from {len(sources)} client addresses" if sources else "")
    )
    print(f"release switches on: {limit}")

    plays = []
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(loader, stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(3)
            for round_ in range(args.rounds):
                version = f"1.0.0+bench{int(time.time())}"
                source = bench_copy(Path(tmp) / str(round_), version)
                print(f"round {round_ + 1}/{args.rounds}: switch to {version}, then back", flush=True)
                for target, app in ((version, source), ("the repository's app", REPO / "app")):
                    started = time.time()
                    seconds = playbook(args.inventory, limit, app, key)
                    plays.append((target, started, seconds))
                    time.sleep(2)
        finally:
            subprocess.run(stop, check=False)
            out, _ = proc.communicate(timeout=120)
    results = json.loads(out)
    # 429: the edge's rate limit (a policy answer, not a failure of the switch).
    limited = [r for r in results if r[2] == 429]
    failed = [r for r in results if r[2] not in (200, 429)]
    latencies = sorted(r[1] - r[0] for r in results)
    for to, _, seconds in plays:
        print(f"play: switch to {to} {seconds:.1f} s (a whole ansible-playbook run)")
    print(
        f"switches: {len(plays)}; requests: {len(results)}, failed: {len(failed)} over all switches, "
        f"rate-limited by the edge (429): {len(limited)}"
    )
    if latencies:
        p50 = latencies[len(latencies) // 2]
        print(f"latency: median {p50 * 1000:.1f} ms, max {latencies[-1] * 1000:.0f} ms")
    for line in hand_overs(results, plays):
        print(line)
    for r in failed[:10]:
        print(f"  failed at {time.strftime('%H:%M:%S', time.localtime(r[0]))}: status {r[2]} {r[4]}")
    return 1 if failed else 0


def shlex_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


if __name__ == "__main__":
    sys.exit(main())
