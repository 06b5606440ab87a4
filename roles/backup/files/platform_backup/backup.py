"""The nightly job and its companions: run, check, init, add-key, credential, watchdog."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from platform_backup import manifest, pg, restic
from platform_backup.config import Config, Repository
from platform_backup.util import BackupError, Lock, iso, log, now, parse_iso, read_json, write_json_atomic


def backup_sources(cfg: Config) -> list[str]:
    """The paths to snapshot: the configured ones that exist (required ones must), without
    paths nested in another listed path; the dumps and the manifest are added by the caller."""
    paths = []
    for p in cfg.paths:
        if Path(p).exists() or Path(p).is_symlink():
            paths.append(p)
        elif p in cfg.required_paths:
            raise BackupError(f"required path {p} does not exist: no snapshot taken")
        else:
            log(f"skipping {p}: does not exist (not required)")
    missing_required = [p for p in cfg.required_paths if p not in cfg.paths and not Path(p).exists()]
    if missing_required:
        raise BackupError(f"required paths do not exist: {missing_required}: no snapshot taken")
    paths += [p for p in cfg.required_paths if p not in paths]
    # A path inside another listed path (/etc/nginx inside /etc) is already covered.
    paths = [p for p in paths if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in paths)]
    if not paths:
        raise BackupError("none of the configured paths exists: nothing to back up")
    return paths


def backup_args(cfg: Config, paths: list[str]) -> list[str]:
    args = ["backup", "--json", "--host", cfg.host]
    for tag in cfg.tags:
        args += ["--tag", tag]
    if cfg.exclude_caches:
        args.append("--exclude-caches")
    for pattern in cfg.excludes:
        args += ["--exclude", pattern]
    return args + paths


def forget_args(cfg: Config) -> list[str]:
    """Retention for the repositories this host prunes itself (the local one).

    Snapshots are grouped by host and tags only: restic's default (host and paths) would put
    the snapshots taken before a change of backup_paths in a group of their own, which then
    keeps its newest 7/8/12 forever."""
    r = cfg.retention
    args = ["forget", "--prune", "--host", cfg.host, "--group-by", r.get("group_by", "host,tags")]
    for tag in cfg.tags:
        args += ["--tag", tag]
    return args + ["--keep-daily", str(r["daily"]), "--keep-weekly", str(r["weekly"]),
                   "--keep-monthly", str(r["monthly"])]


def _full_id(cfg: Config, repo: Repository, snap_id: str) -> str:
    if len(snap_id) >= 64:
        return snap_id
    # restic 0.14 reports the short id in its summary: record the full one.
    return restic.snapshots(cfg, repo, snap_id)[0]["id"]


def write_manifest(cfg: Config, paths: list[str], databases: dict[str, Any]) -> dict[str, Any]:
    path = Path(cfg.manifest_file)
    previous: dict[str, dict[str, Any]] = {}
    if path.exists():
        try:
            previous = manifest.read(path)[1]
        except (ValueError, KeyError, OSError):
            previous = {}
    started = time.monotonic()
    entries, counters = manifest.build(paths, cfg.excludes, cfg.exclude_caches, previous)
    header = {"host": cfg.host, "created": iso(now()), "paths": paths, "databases": databases,
              "files": sum(1 for e in entries if e["type"] == "file")}
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest.write(path, header, entries)
    counters["seconds"] = round(time.monotonic() - started, 1)
    counters["entries"] = len(entries)
    log(f"manifest: {len(entries)} entries, {counters['hashed']} files hashed "
        f"({counters['bytes_hashed']} bytes), {counters['reused']} reused, {counters['seconds']} s")
    return counters


def cmd_run(cfg: Config, _args: Any) -> int:
    started = time.monotonic()
    status_path = Path(cfg.status_file)
    previous = read_json(status_path, {}) or {}
    status: dict[str, Any] = {"last_run": iso(now()), "result": "failed", "snapshot_id": None,
                              "repositories": {}, "databases": [], "paths": [], "error": None,
                              "last_success": previous.get("last_success")}
    try:
        with Lock():
            facts: dict[str, Any] = {}
            timings: dict[str, Any] = {"repositories": {}}
            status["timings"] = timings
            mark = time.monotonic()
            if cfg.postgresql["enabled"]:
                facts = pg.dump_all(pg.PgSettings.from_config(cfg.postgresql))
                status["databases"] = sorted(facts)
            timings["dumps"] = round(time.monotonic() - mark, 1)
            paths = backup_sources(cfg)
            status["paths"] = paths
            status["manifest"] = write_manifest(cfg, paths, facts)
            timings["manifest"] = status["manifest"]["seconds"]
            targets = paths + ([cfg.postgresql["dump_dir"]] if cfg.postgresql["enabled"] else []) + [cfg.manifest_file]
            errors = []
            for repo in cfg.repositories:
                entry = status["repositories"].setdefault(
                    repo.name, {"result": "failed", "snapshot_id": None, "pruned": False})
                log(f"backing up {len(targets)} paths to repository {repo.name}")
                mark = time.monotonic()
                proc = restic.run(cfg, repo, backup_args(cfg, targets), capture=True, check=False)
                timings["repositories"][repo.name] = round(time.monotonic() - mark, 1)
                snap = restic.snapshot_id_from(proc.stdout or "")
                if proc.returncode != 0 or not snap:
                    # Exit 3: snapshot written but some files could not be read. Still a failure,
                    # and no pruning: the policy runs only after a complete backup.
                    errors.append(f"backup to {repo.name} failed (restic exit {proc.returncode})")
                    continue
                entry["snapshot_id"] = _full_id(cfg, repo, snap)
                log(f"snapshot {entry['snapshot_id']} saved in repository {repo.name}")
                if repo.prune:
                    restic.run(cfg, repo, forget_args(cfg))
                    entry["pruned"] = True
                entry["result"] = "success"
            first = status["repositories"].get(cfg.repositories[0].name, {})
            status["snapshot_id"] = first.get("snapshot_id")
            if errors:
                raise BackupError("; ".join(errors))
            status["result"] = "success"
            status["last_success"] = status["last_run"]
    except BackupError as exc:
        status["error"] = str(exc)
        log(f"BACKUP FAILED: {exc}")
    finally:
        status["duration_seconds"] = round(time.monotonic() - started, 1)
        status["finished"] = iso(now())
        write_json_atomic(status_path, status)
    if status["result"] == "success":
        clear_alert(cfg)
    return 0 if status["result"] == "success" else 1


def cmd_check(cfg: Config, _args: Any) -> int:
    started = time.monotonic()
    status: dict[str, Any] = {"last_run": iso(now()), "result": "failed",
                              "read_data_subset": cfg.check_read_data_subset, "repositories": {}, "error": None}
    try:
        with Lock():
            errors = []
            for repo in cfg.repositories:
                proc = restic.run(cfg, repo, ["check", f"--read-data-subset={cfg.check_read_data_subset}"],
                                  check=False)
                ok = proc.returncode == 0
                status["repositories"][repo.name] = "success" if ok else "failed"
                if not ok:
                    errors.append(f"check of {repo.name} failed (restic exit {proc.returncode})")
            if errors:
                raise BackupError("; ".join(errors))
            status["result"] = "success"
    except BackupError as exc:
        status["error"] = str(exc)
        log(f"CHECK FAILED: {exc}")
    finally:
        status["duration_seconds"] = round(time.monotonic() - started, 1)
        write_json_atomic(Path(cfg.check_status_file), status)
    return 0 if status["result"] == "success" else 1


def cmd_init(cfg: Config, _args: Any) -> int:
    for repo in cfg.repositories:
        # A missing repository is the expected answer here: restic's complaint is not shown.
        exists = restic.run(cfg, repo, ["cat", "config"], capture=True, check=False,
                            stderr=subprocess.DEVNULL).returncode == 0
        if exists:
            log(f"exists: {repo.name}")
            continue
        restic.run(cfg, repo, ["init"])
        log(f"created: {repo.name}")
    return 0


def cmd_add_key(cfg: Config, args: Any) -> int:
    """Give a repository a second key (the backup server's own, for its retention runs).

    The new key's password arrives on stdin. Idempotent: when it already opens the
    repository, nothing is written ("present"); otherwise `restic key add` ("added")."""
    import sys

    repo = cfg.repository(args.repo)
    password = sys.stdin.readline().rstrip("\n")
    if not password:
        raise BackupError("add-key: no password on stdin")
    # A wrong password is the expected answer here: restic's complaint is not shown.
    probe = restic.run(cfg, repo, ["cat", "config"], capture=True, check=False, password=password,
                       stderr=subprocess.DEVNULL)
    if probe.returncode == 0:
        log(f"present: key of {args.user}@{args.key_host} in {repo.name}")
        return 0
    fd = os.open(Path(cfg.cache_dir) / ".new-key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    tmp = Path(cfg.cache_dir) / ".new-key"
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
        restic.run(cfg, repo, ["key", "add", "--new-password-file", str(tmp), "--user", args.user,
                               "--host", args.key_host])
    finally:
        tmp.unlink(missing_ok=True)
    log(f"added: key of {args.user}@{args.key_host} in {repo.name}")
    return 0


def htpasswd_line(user: str, secret: str) -> str:
    import bcrypt  # python3-bcrypt, installed by roles/backup

    hashed = bcrypt.hashpw(secret.encode(), bcrypt.gensalt(rounds=12)).decode()
    return f"{user}:{hashed}"


def cmd_credential(cfg: Config, args: Any) -> int:
    """Create this host's credential for the off-site REST server when it has none.

    The secret is generated here and never leaves the host; only its bcrypt hash (an
    htpasswd line, kept beside it) is printed, for the backup server's play. Prints JSON:
    {"user", "htpasswd", "created"}."""
    secret_file, hash_file = Path(args.file), Path(args.file + ".htpasswd")
    created = False
    if not secret_file.exists() or not hash_file.exists():
        secret = secrets.token_urlsafe(32)
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret + "\n")
        hash_file.write_text(htpasswd_line(args.user, secret) + "\n")
        os.chmod(hash_file, 0o600)
        created = True
    line = hash_file.read_text().strip()
    if not line.startswith(f"{args.user}:"):
        raise BackupError(f"{hash_file} is for another user than {args.user!r}: remove both files to recreate")
    print(json.dumps({"user": args.user, "htpasswd": line, "created": created}))
    return 0


# --- alerting ------------------------------------------------------------------------------


def alert_text(unit: str, status: dict[str, Any]) -> str:
    return (f"*** BACKUP ALERT: {unit} failed or no backup succeeded recently. "
            f"Last success: {status.get('last_success') or 'never'}; last error: {status.get('error') or '-'}. "
            f"See: journalctl -u {unit} ***\n")


def raise_alert(cfg: Config, unit: str) -> None:
    """Leave the alert where a person logging in sees it (the login message) until a backup
    succeeds again. Run by backup-notify@.service (OnFailure=)."""
    status = read_json(Path(cfg.status_file), {}) or {}
    path = Path(cfg.alert_motd_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(alert_text(unit, status))
    os.chmod(path, 0o644)


def clear_alert(cfg: Config) -> None:
    Path(cfg.alert_motd_file).unlink(missing_ok=True)


def cmd_alert(cfg: Config, args: Any) -> int:
    raise_alert(cfg, args.unit)
    return 0


def overdue(last_success: datetime | None, since: datetime, max_age: timedelta,
            at: datetime | None = None) -> str | None:
    """Why the backup is overdue, or None. Overdue: no success within max_age, counted from
    the last success, or from `since` (when the job was installed) if there was none."""
    at = at or now()
    reference = last_success or since
    age = at - reference
    if age <= max_age:
        return None
    limit = f"limit {max_age.total_seconds() / 3600:.0f} h"
    if last_success is None:
        return f"no backup has succeeded since the job was installed {iso(since)} ({limit})"
    return f"last successful backup {iso(last_success)} is {age.total_seconds() / 3600:.1f} h old ({limit})"


def cmd_watchdog(cfg: Config, _args: Any) -> int:
    """Fail (and so raise the alert through OnFailure=) when no backup succeeded in time."""
    status = read_json(Path(cfg.status_file), {}) or {}
    last = parse_iso(status["last_success"]) if status.get("last_success") else None
    installed = Path(cfg.installed_file)
    since = datetime.fromtimestamp(installed.stat().st_mtime, UTC) if installed.exists() else now()
    reason = overdue(last, since, timedelta(hours=cfg.alert_after_hours))
    if reason:
        log(f"BACKUP OVERDUE: {reason}")
        return 1
    log(f"backup on time: last success {status.get('last_success') or 'none yet, installed ' + iso(since)}")
    return 0
