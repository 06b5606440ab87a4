"""What the host checks must leave exactly as they found it, read in one SSH round trip.

tests/host/conftest.py snapshots each host before its first check and
tests/host/test_zz_nothing_left_behind.py compares at the end, so a check that leaves a
ban, a changed fail2ban setting, a stopped service, a firewall rule or a stray file behind
fails the run that introduced it (even when that check itself failed). When no disruptive
check ran (an audit), the main processes must not even have restarted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Units whose state the checks may touch (a missing unit reads "inactive" both times).
UNITS = [
    "nginx.service", "platform.socket", "platform.service", "platform-actionlog.service",
    "umami.service", "postgresql.service", "fail2ban.service", "nftables.service",
    "ssh.socket", "ssh.service", "backup.timer", "certbot.timer",
]
# Where a check could leave a file: names only (not contents), pruned of what the system
# itself changes while the checks run (systemd's private tmp dirs, Ansible's remote tmp,
# caches, the package manager's state).
# These are paths ON THE HOST, listed read-only (no temporary file is made on the controller).
FILE_ROOTS = ["/etc", "/opt", "/usr/local", "/srv", "/root", "/home", "/tmp", "/var/tmp"]  # noqa: S108
PRUNE = [
    "/tmp/systemd-private-*", "/var/tmp/systemd-private-*",  # noqa: S108
    "/root/.ansible", "/root/.cache",
    "/tmp/.ansible*",  # noqa: S108
    "/root/.lesshst", "/root/.bash_history", "/etc/ld.so.cache",
    # Release trees: their top directory is listed (a release a check adds or removes
    # shows), not the thousands of files inside.
    "/opt/platform/releases/*/*", "/opt/umami/*/*",
    # A backup server's repositories (backup_server_data_dir) grow with every backup a client
    # makes, and the clients' checks run backups at the same time as this host's: each
    # repository's directory is listed, not the snapshots the clients add to it.
    "/srv/restic/repos/*/*",
]

_SCRIPT = r"""
set +e
units="{units} $(systemctl list-units 'postgresql@*' --no-legend --plain 2>/dev/null | awk '{{print $1}}')"
printf '{{'
printf '"units": {{'
sep=''
for u in $units; do
  printf '%s"%s": ["%s", "%s"]' "$sep" "$u" "$(systemctl is-active "$u" 2>/dev/null)" \
    "$(systemctl show -p MainPID --value "$u" 2>/dev/null)"
  sep=', '
done
printf '}}, "fail2ban": {{'
sep=''
if command -v fail2ban-client >/dev/null 2>&1 && fail2ban-client ping >/dev/null 2>&1; then
  for j in $(fail2ban-client status | sed -n 's/.*Jail list:[[:space:]]*//p' | tr ',' ' '); do
    printf '%s"%s": "bantime=%s maxretry=%s findtime=%s banned=%s"' "$sep" "$j" \
      "$(fail2ban-client get "$j" bantime)" "$(fail2ban-client get "$j" maxretry)" \
      "$(fail2ban-client get "$j" findtime)" \
      "$(fail2ban-client get "$j" banned 2>/dev/null | tr -d '[]", \n')"
    sep=', '
  done
fi
# fail2ban's own table (f2b-*) appears with its first ban: its bans are compared above.
rules=$(nft list tables 2>/dev/null | awk '$3 !~ /^f2b-/ {{print $2, $3}}' | while read -r family table; do
  nft -s list table "$family" "$table" | grep -v -e '^\s*elements = ' -e '^\s*[0-9a-f.:/, ]*[,}}]$'
done)
printf '}}, "nft": "%s"' "$(printf '%s' "$rules" | sha256sum | cut -c1-16)"
printf ', "files": ['
find {roots} -xdev \( {prune} \) -prune -o -print 2>/dev/null | LC_ALL=C sort \
  | sed 's/\\/\\\\/g; s/"/\\"/g; s/.*/"&"/' | paste -sd, -
printf ']}}\n'
"""


def _script() -> str:
    prune = " -o ".join(f"-path '{p}'" for p in PRUNE)
    return _SCRIPT.format(units=" ".join(UNITS), roots=" ".join(FILE_ROOTS), prune=prune)


def snapshot(host) -> dict[str, Any]:
    """The host's state as the checks could change it (root needed for fail2ban and nft)."""
    with host.sudo():
        out = host.check_output("bash -c " + _quote(_script()))
    return json.loads(out)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def differences(before: dict[str, Any], after: dict[str, Any], *, pids: bool) -> list[str]:
    """What changed between two snapshots, one line each (empty: nothing)."""
    out = []
    for unit, (state, pid) in before["units"].items():
        now_state, now_pid = after["units"].get(unit, ["missing", ""])
        if now_state != state:
            out.append(f"unit {unit}: {state} before, {now_state} after")
        elif pids and state == "active" and pid not in ("", "0") and now_pid != pid:
            out.append(f"unit {unit}: main PID {pid} before, {now_pid} after (restarted)")
    for jail in sorted(set(before["fail2ban"]) | set(after["fail2ban"])):
        if before["fail2ban"].get(jail) != after["fail2ban"].get(jail):
            was, now = before["fail2ban"].get(jail), after["fail2ban"].get(jail)
            out.append(f"fail2ban {jail}: {was!r} before, {now!r} after")
    if before["nft"] != after["nft"]:
        out.append("the nftables ruleset changed (rules, not just set elements)")
    added = sorted(set(after["files"]) - set(before["files"]))
    removed = sorted(set(before["files"]) - set(after["files"]))
    for label, paths in (("left behind", added), ("removed", removed)):
        if paths:
            shown = ", ".join(_collapse(paths)[:15])
            out.append(f"{len(paths)} file(s) {label}: {shown}")
    return out


def _collapse(paths: list[str]) -> list[str]:
    """Paths with their children folded into the top one: a new directory shows once."""
    tops: list[str] = []
    for path in paths:
        if not tops or not path.startswith(tops[-1].rstrip("/") + "/"):
            tops.append(path)
    return tops


def describe_units(snap: dict[str, Any]) -> str:
    return ", ".join(f"{u}={s}" for u, (s, _) in snap["units"].items() if not re.match(r"^(inactive|unknown)$", s))


# --- Checks of one host that change another (e.g. a scratch repository on the backup server) ---
# Each host's checks run on one xdist worker, so the host that is touched may reach its last
# check while another worker's check still holds its scratch state (it removes it when done).
# A marker per touch, on the controller, tells the touched host's last check to wait.
BUSY_DIR = Path(tempfile.gettempdir()) / f"iac-checks-touching-{os.getuid()}"


@contextlib.contextmanager
def touching(other_host: str, what: str) -> Iterator[None]:
    """Mark `other_host` as changed by this worker's check until the block ends."""
    BUSY_DIR.mkdir(mode=0o700, exist_ok=True)
    marker = BUSY_DIR / f"{other_host}@{os.getpid()}.{time.monotonic_ns()}"
    marker.write_text(what)
    try:
        yield
    finally:
        marker.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_until_untouched(name: str, timeout: float = 1800) -> list[str]:
    """Wait while a live worker's check holds state on host `name` (markers of dead workers,
    e.g. an interrupted run, are removed). Returns what was still held at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        held = [marker.read_text(errors="replace") for marker in _held(f"{name}@*")]
        if not held or time.monotonic() > deadline:
            return held
        time.sleep(2)


@contextlib.contextmanager
def exclusive(key: str) -> Iterator[None]:
    """One check at a time, across this run's workers, for what `key` names: e.g. a user's
    portfolios, which app hosts sharing one database all count against one quota (a
    portfolio another host's check writes meanwhile would be counted in, or refused)."""
    BUSY_DIR.mkdir(mode=0o700, exist_ok=True)
    with open(BUSY_DIR / f"{key}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _held(pattern: str, *, others_only: bool = False) -> list[Path]:
    """Live workers' markers (those of dead workers are removed); `others_only`: not this
    process's own (a check never waits for its own cut-off)."""
    live = []
    for marker in BUSY_DIR.glob(pattern) if BUSY_DIR.is_dir() else []:
        pid = int(marker.name.split("@", 1)[1].split(".", 1)[0])
        if others_only and pid == os.getpid():
            continue
        if _alive(pid):
            live.append(marker)
        else:
            marker.unlink(missing_ok=True)
    return live


# A check that cuts the controller off from a host for a while (the firewall lockout check:
# new SSH connections fail until the host rolls its ruleset back) marks it; another worker's
# command on that host (a handle from guard below, which tiers.inventory_host applies) waits
# until the mark is gone, and the check waits for commands already under way.
@contextlib.contextmanager
def cut_off(name: str, timeout: float = 600) -> Iterator[None]:
    BUSY_DIR.mkdir(mode=0o700, exist_ok=True)
    marker = BUSY_DIR / f"cutoff-{name}@{os.getpid()}.{time.monotonic_ns()}"
    marker.write_text("")
    try:
        deadline = time.monotonic() + timeout
        while _held(f"inflight-{name}@*", others_only=True) and time.monotonic() < deadline:
            time.sleep(0.5)
        yield
    finally:
        marker.unlink(missing_ok=True)


def guard(host, name: str, timeout: float = 600):
    """`host` (another inventory host's testinfra host) with every command waiting while a
    check has `name` cut off (cut_off above)."""
    backend = host.backend
    if getattr(backend, "_iac_guarded", False):
        return host
    run = backend.run

    def guarded_run(command, *args, **kwargs):
        BUSY_DIR.mkdir(mode=0o700, exist_ok=True)
        deadline = time.monotonic() + timeout
        while True:
            while _held(f"cutoff-{name}@*", others_only=True) and time.monotonic() < deadline:
                time.sleep(1)
            inflight = BUSY_DIR / f"inflight-{name}@{os.getpid()}.{time.monotonic_ns()}"
            inflight.write_text("")
            if not _held(f"cutoff-{name}@*", others_only=True) or time.monotonic() >= deadline:
                break
            inflight.unlink(missing_ok=True)  # cut off meanwhile: wait for it to end
        try:
            return run(command, *args, **kwargs)
        finally:
            inflight.unlink(missing_ok=True)

    backend.run = guarded_run
    backend._iac_guarded = True
    return host
