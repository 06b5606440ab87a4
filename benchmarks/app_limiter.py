#!/usr/bin/env python3
"""Cost of one decision of the app's shared per-user limiter (app/platform_app/limits.py).

    benchmarks/app_limiter.py                       # on the controller (app/ on sys.path)
    benchmarks/app_limiter.py --host dev-4 -i /tmp/dev-4   # on a lab host, with the
        # serving release's venv, on tmpfs under /run like the real store

Each of P processes (like uvicorn's workers) makes N decisions (hit() for one user: one
BEGIN IMMEDIATE transaction on the SQLite store in WAL mode) as fast as it can, all on the
same store. Prints the mean and the 99th percentile per decision and the decisions per
second of all processes together. A measurement, not a test (CONTRIBUTING.md); the store
it uses is a scratch file, removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def worker(args: tuple[str, int, float]) -> list[float]:
    from platform_app.limits import LimitStore, Rate

    path, count, start = args
    store = LimitStore(Path(path))
    rate = Rate(per_minute=100_000, burst=10_000)  # never refuses: measure the cost only
    while time.time() < start:
        time.sleep(0.001)
    costs = []
    for i in range(count):
        t0 = time.perf_counter()
        store.hit("compute", f"user{i % 50}", rate)
        costs.append(time.perf_counter() - t0)
    return costs


def measure(directory: str, processes: int, count: int) -> dict:
    import multiprocessing

    from platform_app.limits import LimitStore

    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        path = os.path.join(tmp, "limits.sqlite3")
        LimitStore(Path(path)).check()
        start = time.time() + 2.0  # every process started and waiting
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            results = pool.map(worker, [(path, count, start)] * processes)
    # All processes run at once: together they take as long as the slowest one.
    wall = max(sum(r) for r in results)
    costs = sorted(c for r in results for c in r)
    return {
        "processes": processes,
        "decisions": len(costs),
        "mean_ms": round(1000 * sum(costs) / len(costs), 3),
        "p99_ms": round(1000 * costs[int(len(costs) * 0.99)], 3),
        "per_second": round(len(costs) / wall),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="run on this lab host (needs -i)")
    parser.add_argument("-i", "--inventory")
    parser.add_argument("--dir", default=None, help="directory of the scratch store (default: /run or /tmp)")
    parser.add_argument("--count", type=int, default=2000, help="decisions per process")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.host:
        inv = subprocess.run([str(REPO / ".venv/bin/ansible-inventory"), "-i", args.inventory, "--host", args.host],
                             capture_output=True, text=True, check=True)  # fmt: skip
        address = json.loads(inv.stdout).get("ansible_host", args.host)
        key = os.environ.get("ANSIBLE_PRIVATE_KEY_FILE", str(REPO / ".lab/ssh/id_ed25519"))
        ssh = ["ssh", "-i", key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
               "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"root@{address}"]  # fmt: skip
        remote = (f"cat > /tmp/.app_limiter.py && /opt/platform/current/venv/bin/python /tmp/.app_limiter.py"
                  f" --dir /run --count {args.count} --json; rc=$?; rm -f /tmp/.app_limiter.py; exit $rc")  # fmt: skip
        out = subprocess.run([*ssh, remote], input=Path(__file__).read_text(), capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(out.stderr)
        rows = json.loads(out.stdout)
        where = f"{args.host} (/run, serving release's venv)"
    else:
        sys.path.insert(0, str(REPO / "app"))
        directory = args.dir or ("/run" if os.access("/run", os.W_OK) else tempfile.gettempdir())
        rows = [measure(directory, p, args.count) for p in (1, 2, 4)]
        where = f"{os.uname().nodename} ({directory})"
        if args.json:
            json.dump(rows, sys.stdout)
            return 0
    print(f"shared limiter, one decision = one SQLite transaction, on {where}")
    for row in rows:
        print(f"  {row['processes']} process(es): {row['decisions']} decisions, mean {row['mean_ms']} ms,"
              f" p99 {row['p99_ms']} ms, {row['per_second']} decisions/s together")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
