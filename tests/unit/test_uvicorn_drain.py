"""roles/app's launcher (roles/app/files/uvicorn-drain.py) loses no request when its server
is switched under load on a socket it does not own, as systemd's platform.socket is: the
release-switch race of uvicorn itself (a reset for a connection accepted just before it
stopped). A real uvicorn, real processes and a real unix socket; no lab needed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("uvicorn_switch", ROOT / "benchmarks" / "uvicorn_switch.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_switches_under_load_lose_no_request():
    out = bench.switch_under_load([sys.executable, str(bench.LAUNCHER)], workers=2, switches=6, clients=4)
    assert out["answered"] > 1000, out  # the load really ran across the switches
    assert out["failed"] == 0, out


def test_one_worker_too():
    out = bench.switch_under_load([sys.executable, str(bench.LAUNCHER)], workers=1, switches=3, clients=4)
    assert out["answered"] > 500 and out["failed"] == 0, out
