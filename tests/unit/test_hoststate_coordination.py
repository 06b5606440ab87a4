"""How the host checks' workers keep out of each other's way (tests/host/hoststate.py), run
with real processes on this machine:

- `exclusive(key)`: one holder at a time (a user's portfolios, which app hosts sharing one
  database count against one quota; tiered lab, 2026-12-04: the quota check counted another
  host's portfolio that was deleted meanwhile, and 100 of 100 were accepted).
- `cut_off(host)` and `guard(host)`: while the firewall lockout check has a host refusing
  new SSH connections, another worker's command on that host waits instead of timing out
  (tiered lab, 2026-12-04: a backup client's check timed out on its server); the lockout
  waits for commands already under way, and a process never waits for its own cut-off.
"""

from __future__ import annotations

import multiprocessing
import time
import uuid

import hoststate

CTX = multiprocessing.get_context("fork")


def _hold_exclusive(key: str, seconds: float, out) -> None:
    with hoststate.exclusive(key):
        out.put(("in", time.monotonic()))
        time.sleep(seconds)
        out.put(("out", time.monotonic()))


def test_exclusive_lets_one_holder_in_at_a_time():
    key, out = f"unit-{uuid.uuid4().hex}", CTX.Queue()
    workers = [CTX.Process(target=_hold_exclusive, args=(key, 0.5, out)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(20)
    events = sorted((out.get(timeout=5) for _ in range(6)), key=lambda e: e[1])
    assert [kind for kind, _ in events] == ["in", "out"] * 3, events
    (hoststate.BUSY_DIR / f"{key}.lock").unlink()


class _Backend:
    def __init__(self, out) -> None:
        self.out = out

    def run(self, command: str):
        self.out.put((command, time.monotonic()))
        return command


class _Host:
    def __init__(self, out) -> None:
        self.backend = _Backend(out)


def _cut_off_for(name: str, seconds: float, ready, out) -> None:
    with hoststate.cut_off(name):
        out.put(("cut", time.monotonic()))
        ready.set()
        # The process that cut the host off still reaches it (its own checks' clean-up).
        hoststate.guard(_Host(out), name).backend.run("own")
        time.sleep(seconds)
        out.put(("restored", time.monotonic()))


def test_a_command_waits_while_another_worker_has_the_host_cut_off():
    name, out, ready = f"unit-{uuid.uuid4().hex}", CTX.Queue(), CTX.Event()
    lockout = CTX.Process(target=_cut_off_for, args=(name, 2.0, ready, out))
    lockout.start()
    assert ready.wait(10)
    host = hoststate.guard(_Host(out), name)
    assert hoststate.guard(host, name) is host  # guarded once, however often asked
    host.backend.run("other")
    lockout.join(20)
    events = dict(out.get(timeout=5) for _ in range(4))
    assert events["cut"] <= events["own"] < events["restored"]
    assert events["other"] >= events["restored"], events
    assert not list(hoststate.BUSY_DIR.glob(f"*{name}@*")), "markers left behind"


def _slow_command(name: str, started, out) -> None:
    class Slow(_Backend):
        def run(self, command: str):
            started.set()
            time.sleep(1.5)
            return super().run(command)

    host = _Host(out)
    host.backend = Slow(out)
    hoststate.guard(host, name).backend.run("under way")


def test_the_cut_off_waits_for_a_command_under_way():
    name, out, started = f"unit-{uuid.uuid4().hex}", CTX.Queue(), CTX.Event()
    worker = CTX.Process(target=_slow_command, args=(name, started, out))
    worker.start()
    assert started.wait(10)
    with hoststate.cut_off(name):
        cut = time.monotonic()
    worker.join(20)
    command, finished = out.get(timeout=5)
    assert command == "under way" and cut >= finished
