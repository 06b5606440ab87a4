"""The off-site backup server (roles/backup_server, docs/backups.md), seen from the server.

Run against the backup servers: `pytest --hosts=ansible://backup_servers ... tests/host/test_backup_server.py`
(the host baseline on them: the same tests/host/test_baseline_*.py with the same --hosts).
Claims proven here (policy/claims.yml):
  backup.offsite_append_only  the REST server runs append-only, private repositories, TLS 1.3,
                              reachable from the client hosts only; no SSH way into the data
  backup.retention            7/8/12 applied by the server's own timer and key, by ARRIVAL time,
                              grouped by host and tags: 400 simulated nights with forged times
                              and a change of paths keep exactly the policy's 25
  host.sandbox                the server's units' systemd exposure is bounded
"""

from __future__ import annotations

import json
import re
import shlex
import socket
from datetime import UTC, date, datetime, timedelta

import pytest
from tiers import TIER_HOSTS, inventory_host

from policy import require

REST_UNIT = "backup-rest-server.service"
MAINT_UNIT = "backup-server-maintenance.service"
TOOL = "/usr/local/sbin/backup-server-maintenance"
CONFIG = "/etc/backup-server/maintenance.json"

pytestmark = pytest.mark.skipif("not config.getoption('hosts')", reason="needs a host")
# Checks of the off-site backup servers only (tests/host/conftest.py: HOST_GROUPS).
HOST_GROUPS = ("backup_servers",)


@pytest.fixture(scope="module")
def cfg(host) -> dict:
    if not host.file(CONFIG).exists:
        pytest.skip("roles/backup_server is not applied to this host")
    with host.sudo():
        return json.loads(host.check_output(f"cat {CONFIG}"))


@pytest.fixture(scope="module")
def exec_start(host, cfg) -> str:
    with host.sudo():
        return host.check_output(f"systemctl show {REST_UNIT} -p ExecStart --value")


def _port(exec_start: str) -> int:
    return int(re.search(r"--addr \S*:(\d+)", exec_start).group(1))


@pytest.fixture(scope="module")
def clients(request, hostvars) -> dict:
    """Every host that carries a tier of the platform (the clients of this server): the
    `platform` hosts, and on a tiered inventory the edge, app, analytics and db hosts."""
    groups = hostvars.get("groups") or {}
    names = list(dict.fromkeys(n for g in TIER_HOSTS for n in groups.get(g, [])))
    if not names:
        pytest.skip("the inventory has no host that carries a tier of the platform")
    return {name: inventory_host(request, name) for name in names}


@pytest.mark.claim("backup.offsite_append_only")
def test_rest_server_is_append_only_private_and_tls13(host, exec_start, evidence) -> None:
    service = host.service(REST_UNIT)
    flags = ["--append-only", "--private-repos", "--min-tls-version tls1.3", "--cache-objects=false", "--htpasswd"]
    with host.sudo():
        user = host.check_output(f"systemctl show {REST_UNIT} -p User --value")
        listening = host.run(f"ss -Hltn 'sport = :{_port(exec_start)}'").stdout.strip()
    evidence("backup.offsite_append_only", unit_active=service.is_running, user=user,
             flags={f: f in exec_start for f in flags}, listening=bool(listening))
    assert service.is_enabled and service.is_running
    assert user and user != "root"
    for flag in flags:
        assert flag in exec_start, flag
    assert listening


@pytest.mark.claim("backup.offsite_append_only")
def test_secrets_and_data_belong_to_nobody_else(host, cfg, evidence) -> None:
    """The maintenance key is root's alone (the REST server's account cannot read it); the TLS
    key is readable by that account and nobody else; the repositories are its own."""
    with host.sudo():
        key, tls = host.file(cfg["password_file"]), host.file("/etc/backup-server/tls/server.key")
        data = host.file(cfg["data_dir"])
        rest_user = host.check_output(f"systemctl show {REST_UNIT} -p User --value")
        htpasswd = host.check_output("cat /etc/backup-server/htpasswd")
    hashes = [line.split(":", 1)[1] for line in htpasswd.splitlines() if line and not line.startswith("#")]
    evidence("backup.offsite_append_only", maintenance_key=[oct(key.mode), key.user, key.group],
             tls_key=[oct(tls.mode), tls.user, tls.group], data_dir=[oct(data.mode), data.user],
             credentials=len(hashes), all_bcrypt=all(h.startswith("$2") for h in hashes))
    assert key.mode == 0o600 and key.user == "root"
    assert tls.mode == 0o640 and tls.user == "root" and tls.group == rest_user
    assert data.user == rest_user
    assert data.mode == 0o700
    assert hashes and all(h.startswith(("$2a$", "$2b$", "$2y$")) for h in hashes)


@pytest.mark.claim("backup.offsite_append_only")
def test_no_ssh_way_into_the_repositories(host, cfg, evidence) -> None:  # cfg: skips where not a backup server
    """The SFTP account of earlier releases is gone: the data is reachable through the
    append-only server only."""
    with host.sudo():
        shell = host.user("restic").shell if host.user("restic").exists else None
        dropin = host.file("/etc/ssh/sshd_config.d/60-backup-sftp.conf").exists
        keys = host.file("/etc/ssh/authorized_keys/restic").exists
    evidence("backup.offsite_append_only", account_shell=shell, sftp_dropin=dropin, authorized_keys=keys)
    assert shell in (None, "/usr/sbin/nologin", "/bin/false")
    assert not dropin and not keys


@pytest.mark.claim("backup.offsite_append_only")
def test_rest_port_reachable_from_clients_only(host, hostvars, exec_start, clients, evidence) -> None:
    address = hostvars.get("ansible_host") or hostvars["inventory_hostname"]
    port = _port(exec_start)
    connect = f"python3 -c \"import socket; socket.create_connection(('{address}', {port}), 10)\""
    from_clients = {name: client.run(connect) for name, client in clients.items()}
    try:
        socket.create_connection((address, port), timeout=5).close()
        from_controller = "open"
    except OSError as exc:
        from_controller = type(exc).__name__
    with host.sudo():
        ruleset = host.check_output("nft list table inet baseline")
    evidence("backup.offsite_append_only", port=port, from_clients_rc={n: r.rc for n, r in from_clients.items()},
             from_controller=from_controller)
    refused = {n: r.stderr.strip()[-200:] for n, r in from_clients.items() if r.rc != 0}
    assert not refused, f"clients that cannot reach the REST port: {refused}"
    assert from_controller != "open", "the REST port answers the controller, which is no client"
    assert f"tcp dport {port}" in ruleset


@pytest.mark.claim("backup.retention")
def test_server_retention_is_the_policy_by_arrival_on_its_own_timer(host, cfg, evidence) -> None:
    want = require("backup.retention")
    r = cfg["retention"]
    timer = host.service("backup-server-maintenance.timer")
    with host.sudo():
        calendar = host.check_output("TZ=UTC systemctl show backup-server-maintenance.timer -p TimersCalendar --value")
        caps = host.check_output(f"systemctl show {MAINT_UNIT} -p CapabilityBoundingSet --value")
        network = host.check_output(f"systemctl show {MAINT_UNIT} -p PrivateNetwork --value")
        on_failure = host.check_output(f"systemctl show {MAINT_UNIT} -p OnFailure --value")
    evidence("backup.retention", server=r, calendar=calendar, capabilities=caps, on_failure=on_failure)
    assert (r["daily"], r["weekly"], r["monthly"]) == (want["keep_daily"], want["keep_weekly"], want["keep_monthly"])
    assert r["by"] == "arrival" and r["group_by"] == "host,tags"
    assert timer.is_enabled and timer.is_running and "OnCalendar=" in calendar
    assert set(caps.split()) <= {"cap_dac_override", "cap_chown", "cap_fowner"} and network == "yes"
    assert on_failure == f"backup-server-notify@{MAINT_UNIT}.service"


@pytest.mark.claim("backup.retention")
@pytest.mark.disruptive
def test_maintenance_runs_with_the_servers_own_key(host, cfg, evidence) -> None:
    with host.sudo():
        run = host.run(f"systemctl start {MAINT_UNIT}")
        status = json.loads(host.check_output(f"cat {cfg['status_file']}"))
        journal = host.run(f"journalctl -u {MAINT_UNIT} -n 30 --no-pager").stdout
    evidence("backup.retention", rc=run.rc, clients={c: {k: v.get(k) for k in ("result", "kept", "snapshots")}
                                                     for c, v in status["clients"].items()})
    assert run.rc == 0, journal
    assert status["result"] == "success"
    assert any(v["result"] == "success" for v in status["clients"].values()), "no client repository maintained"


NIGHTS = 400
PATHS_CHANGE_AT = 200
LAST_NIGHT = date(2026, 3, 15)


def _expected(arrivals: list[datetime], d: int, w: int, m: int) -> set[datetime]:
    def newest(key, n):
        buckets: dict = {}
        for t in arrivals:
            buckets.setdefault(key(t), []).append(t)
        return {max(buckets[b]) for b in sorted(buckets, reverse=True)[:n]}

    return (newest(lambda t: t.date(), d) | newest(lambda t: t.isocalendar()[:2], w)
            | newest(lambda t: (t.year, t.month), m))


@pytest.mark.claim("backup.retention")
@pytest.mark.disruptive
def test_server_rotation_over_simulated_years_ignores_forged_times_and_path_changes(host, cfg, evidence) -> None:
    """400 nights arrive (the snapshot files' mtimes), each snapshot CLAIMING the time of the
    mirror night (the newest claims to be the oldest), the older 200 with another set of
    paths. The server's tool, with the policy's numbers, keeps exactly the 25 snapshots the
    policy picks by arrival."""
    want = require("backup.retention")
    arrivals = [datetime.combine(LAST_NIGHT - timedelta(days=i), datetime.min.time()).replace(hour=3, tzinfo=UTC)
                for i in range(NIGHTS)]
    claimed = {arrivals[i]: arrivals[NIGHTS - 1 - i] for i in range(NIGHTS)}  # arrival -> forged time
    by_claim = {v.strftime("%Y-%m-%d %H:%M:%S"): k for k, v in claimed.items()}
    with host.sudo():
        tmp = host.check_output("mktemp -d /var/tmp/server-retention-test.XXXXXX")
    env = f"RESTIC_REPOSITORY={tmp}/data/sim RESTIC_PASSWORD_FILE={tmp}/pw RESTIC_CACHE_DIR={tmp}/cache"
    scratch_cfg = {"data_dir": f"{tmp}/data", "clients": ["sim"], "password_file": f"{tmp}/pw",
                   "cache_dir": f"{tmp}/cache", "status_file": f"{tmp}/status.json",
                   "alert_motd_file": f"{tmp}/motd", "lock_wait_seconds": 0, "stale_after_hours": 10**7,
                   "retention": {"daily": want["keep_daily"], "weekly": want["keep_weekly"],
                                 "monthly": want["keep_monthly"], "by": "arrival", "group_by": "host,tags"}}
    old = "\n".join(claimed[a].strftime("%Y-%m-%d %H:%M:%S") for a in arrivals[PATHS_CHANGE_AT:])
    new = "\n".join(claimed[a].strftime("%Y-%m-%d %H:%M:%S") for a in arrivals[:PATHS_CHANGE_AT])
    try:
        with host.sudo():
            # A throw-away password for a throw-away repository (never a real secret).
            host.run_expect([0], f"umask 077; mkdir -p {tmp}/data; echo server-retention-test > {tmp}/pw; "
                                 f"echo x > {tmp}/a; echo y > {tmp}/b; {env} restic init -q")
            for stamps, paths in ((old, "a b"), (new, "a")):
                host.run_expect([0], f"cd {tmp} && printf '%s\\n' {shlex.quote(stamps)} | {env} xargs -P 8 -I{{}} "
                                     f"restic backup -q --host sim --tag nightly --time {{}} {paths}")
            snaps = json.loads(host.check_output(f"{env} restic snapshots --json"))
            assert len(snaps) == NIGHTS
            # Each snapshot file gets its arrival as mtime (what the REST server records).
            touches = "\n".join(
                f"touch -d '{by_claim[s['time'][:19].replace('T', ' ')].strftime('%Y-%m-%d %H:%M:%S')} UTC' "
                f"{tmp}/data/sim/snapshots/{s['id']}" for s in snaps)
            host.run_expect([0], touches)
            host.run_expect([0], f"printf '%s' {shlex.quote(json.dumps(scratch_cfg))} > {tmp}/cfg.json")
            run = host.run(f"{TOOL} --config {tmp}/cfg.json --password-file {tmp}/pw run sim")
            left = json.loads(host.check_output(f"{env} restic snapshots --json"))
            check = host.run(f"{env} restic check")
    finally:
        with host.sudo():
            host.run(f"rm -rf {shlex.quote(tmp)}")
    kept_arrivals = {by_claim[s["time"][:19].replace("T", " ")] for s in left}
    expected = _expected(arrivals, want["keep_daily"], want["keep_weekly"], want["keep_monthly"])
    evidence("backup.retention", nights=NIGHTS, kept=len(kept_arrivals), expected=len(expected),
             rc=run.rc, check_rc=check.rc)
    assert run.rc == 0, run.stdout[-2000:] + run.stderr[-1000:]
    assert sorted(kept_arrivals) == sorted(expected)
    assert len(expected) == 25
    assert check.rc == 0


@pytest.mark.claim("host.sandbox")
def test_server_units_exposure_is_bounded(host, cfg, evidence) -> None:  # cfg: skips where not a backup server
    bounds = require("host.sandbox")["exposure_max"]
    scores = {}
    for unit in (REST_UNIT, MAINT_UNIT):
        with host.sudo():
            out = host.check_output(f"systemd-analyze security --no-pager {unit}")
        scores[unit] = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out).group(1))
    evidence("host.sandbox", exposure=scores, bounds={u: bounds.get(u) for u in scores})
    for unit, score in scores.items():
        assert score <= bounds[unit], f"{unit}: {score} > {bounds[unit]}"
