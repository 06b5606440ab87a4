"""Backups (roles/backup, issue 6): scheduled, complete, restorable, loud on failure, rotated.

The job's configuration on the host (/etc/backup/backup.json, rendered by the role) says
which paths, databases and repositories to expect; the claims checked here are the policy's:
nightly at 03:00 UTC, 7 daily / 8 weekly / 12 monthly, a restore that gives the data back.
"""

from __future__ import annotations

import json
import shlex
import time
from datetime import UTC, date, datetime, timedelta

import pytest

TOOL = "/usr/local/sbin/platform-backup"

pytestmark = pytest.mark.skipif("not config.getoption('hosts')", reason="needs a host")


@pytest.fixture(scope="module")
def cfg(host) -> dict:
    if not host.file("/etc/backup/backup.json").exists:
        pytest.skip("roles/backup is not applied to this host")
    return json.loads(host.check_output("cat /etc/backup/backup.json"))


def _status(host, cfg) -> dict:
    return json.loads(host.check_output(f"cat {cfg['status_file']}"))


def _snapshot_ids(host, repo: str) -> set[str]:
    out = host.check_output(f"{TOOL} restic {repo} snapshots --json --tag nightly")
    return {s["id"] for s in json.loads(out or "[]")}


def _run_backup(host):
    return host.run("systemctl start backup.service")


# --- schedule ---------------------------------------------------------------------------


def test_timer_runs_nightly_at_0300_utc(host) -> None:
    timer = host.service("backup.timer")
    assert timer.is_enabled and timer.is_running
    # TZ=UTC: systemctl prints times in its own time zone; the claim is about UTC.
    calendar = host.check_output("TZ=UTC systemctl show backup.timer -p TimersCalendar --value")
    assert "OnCalendar=*-*-* 03:00:00 UTC" in calendar
    assert host.check_output("systemctl show backup.timer -p Persistent --value") == "yes"
    nxt = host.check_output("TZ=UTC systemctl show backup.timer -p NextElapseUSecRealtime --value")
    when = datetime.strptime(nxt, "%a %Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC)
    assert (when.hour, when.minute, when.second) == (3, 0, 0)
    host_now = datetime.fromtimestamp(int(host.check_output("date +%s")), UTC)
    assert timedelta(0) < when - host_now <= timedelta(hours=24)


def test_integrity_check_is_scheduled(host, cfg) -> None:
    assert host.service("backup-check.timer").is_enabled
    on_failure = host.check_output("systemctl show backup-check.service -p OnFailure --value")
    assert on_failure == "backup-notify@backup-check.service.service"
    assert cfg["check_read_data_subset"].endswith("%")


def test_integrity_check_runs_and_writes_status(host, cfg) -> None:
    run = host.run("systemctl start backup-check.service")
    assert run.rc == 0, host.run("journalctl -u backup-check.service -n 20 --no-pager").stdout
    status = json.loads(host.check_output(f"cat {cfg['check_status_file']}"))
    assert status["result"] == "success"
    assert set(status["repositories"]) == {r["name"] for r in cfg["repositories"]}


def test_failures_go_to_the_notifier(host) -> None:
    on_failure = host.check_output("systemctl show backup.service -p OnFailure --value")
    assert on_failure == "backup-notify@backup.service.service"


# --- a run now ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fresh_run(host, cfg) -> dict:
    result = _run_backup(host)
    assert result.rc == 0, host.run("journalctl -u backup.service -n 30 --no-pager").stdout
    return _status(host, cfg)


def test_run_now_succeeds_and_writes_status(fresh_run, cfg) -> None:
    assert fresh_run["result"] == "success"
    assert fresh_run["error"] is None
    assert fresh_run["duration_seconds"] >= 0
    assert len(fresh_run["snapshot_id"]) == 64
    for repo in cfg["repositories"]:
        entry = fresh_run["repositories"][repo["name"]]
        assert entry["result"] == "success" and entry["pruned"], repo["name"]


@pytest.mark.parametrize("repo", ["local", "offsite"])
def test_snapshot_holds_paths_and_database_dumps(host, cfg, fresh_run, repo) -> None:
    if repo not in {r["name"] for r in cfg["repositories"]}:
        pytest.skip(f"no {repo} repository configured")
    snap = fresh_run["repositories"][repo]["snapshot_id"]
    nodes = [json.loads(line) for line in host.check_output(f"{TOOL} restic {repo} ls --json {snap}").splitlines()]
    paths = {n["path"] for n in nodes if n.get("struct_type") == "node"}
    for p in cfg["paths"]:
        if host.file(p).exists:
            assert p in paths, f"{p} exists on the host but is not in snapshot {snap[:8]}"
    dump_dir = cfg["postgresql"]["dump_dir"]
    if cfg["postgresql"]["enabled"]:
        assert fresh_run["databases"], "no database was dumped"
        for db in fresh_run["databases"]:
            assert f"{dump_dir}/{db}.dump" in paths
        assert f"{dump_dir}/globals.sql" in paths
    # Caches are excluded.
    for excluded in cfg["excludes"]:
        if "*" not in excluded:
            assert not any(p == excluded or p.startswith(excluded + "/") for p in paths), excluded


def test_password_never_in_process_arguments_or_world_readable(host, cfg) -> None:
    pw = host.file(cfg["password_file"])
    assert pw.mode == 0o600 and pw.user == "root"
    assert host.file("/etc/backup/backup.json").mode == 0o600


def test_offsite_account_is_sftp_only(host, cfg) -> None:
    repo = next((r for r in cfg["repositories"] if r["name"] == "offsite"), None)
    if repo is None:
        pytest.skip("no off-site repository configured")
    ssh = repo["options"][0].removeprefix("sftp.command=").removesuffix(" -s sftp")
    shell = host.run(f"{ssh} id")
    assert shell.rc != 0
    assert "uid=" not in shell.stdout


# --- restore drill -----------------------------------------------------------------------


def test_restore_drill_passes(host, fresh_run) -> None:
    drill = host.run(f"{TOOL} drill")
    assert drill.rc == 0, drill.stdout + drill.stderr
    assert "restore drill PASS" in drill.stdout
    assert "rows restored" in drill.stdout


def test_restore_drill_detects_a_changed_file(host, fresh_run) -> None:
    target = "/var/lib/platform/.drill-canary"
    host.run_expect([0], f"mkdir -p /var/lib/platform && echo before > {target}")
    try:
        assert _run_backup(host).rc == 0
        host.run_expect([0], f"echo after > {target}")
        drill = host.run(f"{TOOL} drill")
        assert drill.rc != 0
        assert f"content differs (sha256): {target}" in drill.stdout
    finally:
        host.run(f"rm -f {target}")
        _run_backup(host)


# --- failure is loud, and earlier snapshots survive ---------------------------------------


def test_run_with_postgresql_down_fails_loudly_and_keeps_snapshots(host, cfg, fresh_run) -> None:
    if not cfg["postgresql"]["enabled"]:
        pytest.skip("PostgreSQL dumps are off")
    repos = [r["name"] for r in cfg["repositories"]]
    before = {r: _snapshot_ids(host, r) for r in repos}
    since = host.check_output("date '+%Y-%m-%d %H:%M:%S'")
    host.run_expect([0], "systemctl stop postgresql")
    try:
        run = _run_backup(host)
        assert run.rc != 0
        assert host.run("systemctl is-failed backup.service").stdout.strip() == "failed"
        status = _status(host, cfg)
        assert status["result"] == "failed"
        assert "PostgreSQL" in status["error"]
        assert status["repositories"] == {}, "a snapshot was attempted without the dumps"
        after = {r: _snapshot_ids(host, r) for r in repos}
        assert after == before
        # The notifier logs to the journal with priority err.
        for _ in range(20):
            journal = host.run(f"journalctl -t backup -p err --since {shlex.quote(since)} --no-pager -q").stdout
            if "FAILED: backup.service" in journal:
                break
            time.sleep(0.5)
        assert "FAILED: backup.service" in journal
    finally:
        host.run("systemctl start postgresql")
        host.run("systemctl reset-failed backup.service")
    assert _run_backup(host).rc == 0
    assert _status(host, cfg)["result"] == "success"


# --- rotation policy ---------------------------------------------------------------------
#
# restic's forget walks the snapshots newest first. For each rule (daily, weekly, monthly)
# it keeps a snapshot when the rule still has budget and the snapshot's bucket (its day,
# ISO week or month) differs from the bucket of the last snapshot that rule kept. The rules
# are evaluated independently, so they OVERLAP: the newest snapshot is at once a daily, a
# weekly and a monthly one. With one snapshot a night, 7/8/12 therefore keeps fewer than
# 7+8+12 = 27 snapshots (borg, whose rules do not overlap, would keep 27).
#
# The expected set below is computed the other way round, per rule as a set: the newest
# snapshot of each of the N newest days / ISO weeks / months, then the union.


def expected_kept(times: list[datetime], daily: int, weekly: int, monthly: int) -> set[datetime]:
    def newest_per_bucket(key, n: int) -> set[datetime]:
        buckets: dict = {}
        for t in times:
            buckets.setdefault(key(t), []).append(t)
        newest_buckets = sorted(buckets, reverse=True)[:n]
        return {max(buckets[b]) for b in newest_buckets}

    return (
        newest_per_bucket(lambda t: t.date(), daily)
        | newest_per_bucket(lambda t: t.isocalendar()[:2], weekly)
        | newest_per_bucket(lambda t: (t.year, t.month), monthly)
    )


NIGHTS = 400
LAST_NIGHT = date(2026, 3, 15)  # fixed: the result must not depend on the day the test runs


def test_retention_policy_is_7_8_12(cfg) -> None:
    assert cfg["retention"] == {"daily": 7, "weekly": 8, "monthly": 12}


def test_rotation_keeps_exactly_the_expected_snapshots(host, cfg) -> None:
    keep = cfg["retention"]
    times = [datetime.combine(LAST_NIGHT - timedelta(days=i), datetime.min.time()).replace(hour=3)
             for i in range(NIGHTS)]
    repo = host.check_output("mktemp -d /var/tmp/retention-test.XXXXXX")
    env = f"RESTIC_REPOSITORY={repo}/repo RESTIC_PASSWORD_FILE={repo}/pw RESTIC_CACHE_DIR={repo}/cache"
    stamps = "\n".join(t.strftime("%Y-%m-%d %H:%M:%S") for t in times)
    try:
        # A throw-away password for a throw-away repository (never a real secret).
        host.run_expect([0], f"umask 077; echo retention-test > {repo}/pw; echo x > {repo}/file; {env} restic init -q")
        # One tiny snapshot per night, with its time set by --time; parallel (backups take
        # shared locks) to keep the test fast.
        script = (f"cd {repo} && printf '%s\\n' {shlex.quote(stamps)} | "
                  f"{env} xargs -P 8 -I{{}} restic backup -q --host sim --time {{}} file")
        host.run_expect([0], script)
        snaps = json.loads(host.check_output(f"{env} restic snapshots --json"))
        assert len(snaps) == NIGHTS
        host.run_expect([0], f"{env} restic forget -q --host sim --keep-daily {keep['daily']} "
                             f"--keep-weekly {keep['weekly']} --keep-monthly {keep['monthly']}")
        kept = {
            datetime.fromisoformat(s["time"][:19])
            for s in json.loads(host.check_output(f"{env} restic snapshots --json"))
        }
    finally:
        host.run(f"rm -rf {shlex.quote(repo)}")
    expected = expected_kept(times, keep["daily"], keep["weekly"], keep["monthly"])
    assert sorted(kept) == sorted(expected)
    # Spelled out for the policy's reader: overlap makes it 7 + 7 + 12 - 1 distinct nights here.
    assert len(expected) == 25
