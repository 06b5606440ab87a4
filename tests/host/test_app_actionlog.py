"""Policy: "All significant user actions are logged ... Logs are retained and accessible via
the admin panel for audit purposes" (claim actionlog).

The chain (docs/app.md, "Action log"): the app sends each record as a datagram to
platform-actionlog.socket; the copier platform-actionlog.service (another user) appends it
to monthly JSONL files; admins read those files back through GET /api/admin/actions. The
app may read the files and never write, truncate, rename or delete them. Set in roles/app
(app_actionlog_*), enforced by the directory's owner and modes and the app's sandbox,
proven here: through the TLS edge as an admin, as the app's user with the groups its unit
gives it, in the mount table of the running app, and with a flood larger than journald's
rate limit. Logins: the audit accounts (conftest `account`).
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import pytest
from appsock import actionlog_dir, app_settings, app_site, reset_limits, run_plan, wait
from tiers import APP, app_hosts_behind, inventory_host

from policy import require

# The hosts these checks are about (tests/host/tiers.py).
HOST_GROUPS = APP

# App hosts sharing a database share the audit user's limits (conftest.py).
pytestmark = [pytest.mark.claim("actionlog"), pytest.mark.usefixtures("one_check_per_app_user")]

FIELD_NAMES = {"action": "op"}


@pytest.fixture(scope="module")
def logdir(host) -> str:
    return actionlog_dir(host)


def _month_file(logdir: str) -> str:
    return f"{logdir}/actions-{datetime.now(UTC):%Y-%m}.jsonl"


@pytest.fixture(scope="module")
def site(host, sites, hostvars) -> str:
    return app_site(host, sites, hostvars)


def _request(probe, site, path, **kwargs):
    """probe.request, waiting out the edge's API rate limit (60/min per IP) on a 429."""
    for _ in range(20):
        resp = probe.request(site, path, **kwargs)
        if resp.status != 429:
            return resp
        time.sleep(2)
    return resp


def _login(probe, site, account, role: str) -> tuple[str, dict[str, str]]:
    """Log in with an audit account (conftest `account`): its name and a bearer header."""
    user, password = account(role)
    body = json.dumps({"username": user, "password": password})
    resp = _request(probe, site, "/api/auth/login", method="POST", body=body,
                    headers={"Content-Type": "application/json"})  # fmt: skip
    assert resp.status == 200, resp.body[:200]
    return user, {"Authorization": f"Bearer {resp.json()['access_token']}"}


def test_admins_read_the_action_log_through_the_api(probe, site, account, host, hostvars, request, logdir, evidence):
    """The finding: /api/admin/actions answered [] in the deployed (journald) mode.

    Behind an edge that balances across app hosts, each host keeps its own action log and
    the API shows the log of the host that answers (docs/tiers.md): the record is looked for
    until an answer shows it, and compared with the file of every app host."""
    req = require("actionlog")
    _, admin = _login(probe, site, account, "app_admin")
    name, user = _login(probe, site, account, "app_user")
    marker = f"audit-{uuid.uuid4().hex[:10]}"
    # A significant action with a marker: the user tries to read someone else's portfolio
    # (a made-up owner: refused and recorded all the same, nobody's data is touched).
    assert _request(probe, site, f"/api/portfolios/audit-nobody/{marker}", headers=user).status == 403

    def through_api():
        resp = _request(probe, site, f"{req['admin_api']}?limit=200", headers=admin)
        assert resp.status == 200, resp.body[:200]
        found = [r for r in resp.json()["actions"] if r.get("details", {}).get("name") == marker]
        return found

    started = time.monotonic()
    found = wait(through_api, timeout=60, interval=2)
    delay = time.monotonic() - started
    me = hostvars["inventory_hostname"]
    serving = [host if name == me else inventory_host(request, name) for name in app_hosts_behind(hostvars)]
    lines = [line for h in serving
             for line in h.check_output(f"grep -F {marker} {_month_file(logdir)} || true").splitlines()]
    in_file = [json.loads(line) for line in lines]
    evidence("actionlog", admin_api=req["admin_api"], record_seen_via_api=bool(found),
             seconds_until_visible=round(delay, 1), record=found[0] if found else None)  # fmt: skip
    assert found, f"the admin API never showed the record {marker} (the JSONL file has {len(in_file)})"
    record = found[0]
    # The policy's "action" is the record's "op".
    assert {FIELD_NAMES.get(f, f) for f in req["fields"]} <= set(record), record
    assert record["user"] == name and record["op"] == "access_denied"
    # The API shows exactly what the append-only file holds.
    assert record in in_file


def _attempts_script(path: str, directory: str) -> str:
    """Python for the host: read PATH, then try every way to change it or its directory.
    Each attempt that could succeed is harmless (truncate to the current size, chmod to the
    current mode, a rename undone at once, a new file removed), so a broken defence is
    reported, never exploited."""
    return f"""
import errno, json, os
path, directory = {path!r}, {directory!r}
out = {{}}
def attempt(name, fn):
    try:
        fn()
        out[name] = "allowed"
    except OSError as exc:
        out[name] = errno.errorcode.get(exc.errno, str(exc.errno))
def read():
    with open(path, "rb") as handle:
        handle.read(1)
def open_for_append():
    os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
def truncate():
    os.truncate(path, os.stat(path).st_size)
def rename():
    os.rename(path, path + ".probe")
    os.rename(path + ".probe", path)
def chmod():
    os.chmod(path, os.stat(path).st_mode & 0o7777)
def create():
    fd = os.open(os.path.join(directory, ".probe"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    os.unlink(os.path.join(directory, ".probe"))
for name, fn in [("read", read), ("append", open_for_append), ("truncate", truncate),
                 ("rename", rename), ("chmod", chmod), ("create_in_dir", create)]:
    attempt(name, fn)
print(json.dumps(out))
"""


def test_the_app_can_read_but_never_rewrite_the_action_log(host, logdir, evidence):
    """Two layers, each measured on the running service: as the app's user with exactly
    the groups its unit gives it (file permissions), read yes, change no; and in the
    running app's own mount namespace (its sandbox) the directory is a read-only mount.
    (Entering that namespace needs CAP_SYS_PTRACE, which lab containers lack: the mount
    table of the app's main process, /proc/PID/mountinfo, shows the same thing.)"""
    user = host.check_output("systemctl show --property=User --value platform.service")
    groups = host.check_output("systemctl show --property=SupplementaryGroups --value platform.service").split()
    path = _month_file(logdir)
    if not host.file(path).exists:  # first day of a month, no action yet: make one
        run_plan(host, {"requests": [{"method": "POST", "path": "/api/auth/login",
                                      "body": {"username": "nobody-x", "password": "x"}}]})  # fmt: skip
        assert wait(lambda: host.file(path).exists, timeout=30), f"{path} never appeared"
    script = _attempts_script(path, logdir)
    as_app = f"setpriv --reuid={user} --regid={user} --groups={','.join(groups) or user}"
    attempts = json.loads(host.check_output(f"{as_app} python3 - <<'EOF'\n{script}EOF"))
    pid = host.check_output("systemctl show --property=MainPID --value platform.service")
    mounts = [line.split() for line in host.check_output(f"cat /proc/{pid}/mountinfo").splitlines()]
    # The mount that holds the directory: the last one (mounted over the others) whose
    # mount point is the directory or its closest parent.
    holders = [m for m in mounts if logdir == m[4] or logdir.startswith(m[4].rstrip("/") + "/")]
    deepest = max(len(m[4]) for m in holders)
    log_mount = [m for m in holders if len(m[4]) == deepest]
    listing = host.check_output(f"stat -c '%U:%G %a %n' {logdir} {logdir}/*.jsonl")
    evidence("actionlog", app_user=user, app_groups=groups, as_app_user=attempts,
             app_mount=[" ".join(m[3:6]) for m in log_mount], files=listing.splitlines())  # fmt: skip
    assert attempts["read"] == "allowed", f"the app cannot read the action log: {attempts}"
    changed = [name for name, how in attempts.items() if name != "read" and how == "allowed"]
    assert not changed, f"the app could {changed} the action log"
    assert require("actionlog")["app_can_rewrite"] is False
    root, _, options = log_mount[-1][3:6]
    assert "ro" in options.split(","), f"{logdir} is writable in the app's sandbox: {log_mount[-1]}"
    assert "inaccessible" not in root, f"{logdir} is hidden from the app: {log_mount[-1]}"


def _journald_rate_limit(host) -> tuple[int, int]:
    """journald's per-unit burst as it applies on this host, and its interval in seconds.
    RateLimitBurst (default 10,000) is scaled by the space the journal may still use
    (journald-rate-limit.c: x (log2(bytes) - 16) / 4 above 1 MiB: x3 at 256 MiB, x4 at
    4 GiB, x5 at 64 GiB); we take the free space of the journal's file system, an upper
    bound."""
    config = host.check_output("systemd-analyze cat-config systemd/journald.conf")
    burst, interval = 10000, 30
    for line in config.splitlines():
        key, _, value = line.strip().partition("=")
        if key == "RateLimitBurst" and value.strip().isdigit():
            burst = int(value)
        elif key == "RateLimitIntervalSec" and value.strip().rstrip("s").isdigit():
            interval = int(value.strip().rstrip("s"))
    journal = "/var/log/journal" if host.file("/var/log/journal").is_directory else "/run/log/journal"
    free = int(host.check_output(f"df --output=avail -B1 {journal} | tail -1"))
    k = free.bit_length() - 1
    return (burst if k <= 20 else burst * (k - 16) // 4), interval


@pytest.mark.disruptive
def test_no_action_record_is_lost_under_a_flood(host, account, logdir, evidence):
    """N actions in, N records out, with N beyond what journald lets one unit log in its
    rate-limit interval on this host (the records used to travel through the journal and
    were dropped there): the audit user tries to read N portfolios of a made-up owner as
    fast as the app answers, each an access_denied record with a unique name, then every one must be in
    the JSONL files."""
    req = require("actionlog")
    burst, interval = _journald_rate_limit(host)
    # At least the policy's N, and at least what journald lets one unit log in one interval
    # on this host: a record limit of any kind would have to drop some of them.
    count = max(req["flood_records_min"], burst)
    mode = app_settings(host).get("PLATFORM_ACTION_LOG", "journald")
    marker = f"flood-{uuid.uuid4().hex[:8]}"
    since = host.check_output("date -u '+%Y-%m-%d %H:%M:%S'")
    user, password = account("app_user")
    plan = {
        "login": {"username": user, "password": password},
        "repeat": {"count": count, "method": "GET", "path": f"/api/portfolios/audit-nobody/{marker}-{{i}}"},
        "concurrency": 16,
    }
    try:
        reset_limits(host, user)
        flood = run_plan(host, plan, timeout=1800)
    finally:
        reset_limits(host, user)
    statuses = [r[0] for r in flood["results"]]
    sent = statuses.count(403)

    def copied() -> int:
        out = host.check_output(
            f"grep -hoF '\"name\":\"{marker}-' {logdir}/actions-*.jsonl | wc -l || true"
        )
        return int(out or 0)

    started = stalled_since = time.monotonic()
    last = -1
    # Done when all arrived, or when nothing new arrived for 60 s (the copier is idle).
    while True:
        now = copied()
        if now >= sent:
            break
        if now == last and time.monotonic() - stalled_since > 60:
            break
        if now != last:
            last, stalled_since = now, time.monotonic()
        time.sleep(5)
    lag = time.monotonic() - started
    names = host.check_output(
        f"grep -hoE '\"name\":\"{marker}-[0-9]+' {logdir}/actions-*.jsonl | sort -u | wc -l"
    )
    distinct = int(names or 0)
    suppressed = host.run(
        f"journalctl --quiet --no-pager --output=cat --since '{since}' --identifier=systemd-journald"
        " | grep -i 'suppressed' || true"
    ).stdout.strip()
    evidence("actionlog", flood_actions=count, journald_burst=burst, journald_interval_s=interval,
             records_sent_to=mode, answered_403=sent, records_in_jsonl=copied(),
             distinct_records=distinct, flood_seconds=round(flood["elapsed"], 1),
             requests_per_second=round(count / flood["elapsed"]), copier_lag_s=round(lag, 1),
             journald_suppressed=suppressed.splitlines()[:5])  # fmt: skip
    assert sent == count, f"only {sent} of {count} requests answered 403: {sorted(set(statuses))}"
    assert distinct == count, f"{count} actions in, {distinct} records out ({suppressed or 'no journald message'})"
