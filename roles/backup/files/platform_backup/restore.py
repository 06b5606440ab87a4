"""Restores, and the restore drill that proves one against the snapshot's own manifest."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from platform_backup import manifest, pg, restic
from platform_backup.config import Config, Repository
from platform_backup.util import BackupError, Lock, log


def resolve_snapshot(cfg: Config, repo: Repository, snapshot: str) -> str:
    if snapshot == "latest":
        snaps = restic.snapshots(cfg, repo, "--latest", "1", "--host", cfg.host)
    else:
        snaps = restic.snapshots(cfg, repo, snapshot)
    if not snaps:
        raise BackupError(f"no snapshot {snapshot!r} of host {cfg.host} in repository {repo.name}")
    return sorted(snaps, key=lambda s: s["time"])[-1]["id"]


def restore_files(cfg: Config, repo: Repository, snap_id: str, target: Path, includes: list[str],
                  extra: list[str] | None = None) -> None:
    args = [*(extra or []), "restore", snap_id, "--target", str(target)]
    for inc in includes:
        args += ["--include", inc]
    log(f"restoring snapshot {snap_id[:8]} from {repo.name} to {target}")
    restic.run(cfg, repo, args)


def cmd_restore(cfg: Config, args: Any) -> int:
    target = Path(args.target)
    in_place = target == Path("/")
    if in_place and not args.in_place:
        raise BackupError("restoring to / overwrites the live host: pass --in-place to confirm")
    repo = cfg.repository(args.repo)
    started = time.monotonic()
    dbs: list[str] = []
    with Lock():
        target.mkdir(parents=True, exist_ok=True)
        # In place: restic (0.14) cannot replace existing symlinks, so restore into a staging
        # directory first, then copy over the live tree (files not in the snapshot are kept).
        if in_place:
            Path(cfg.drill_dir).mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(dir=cfg.drill_dir, prefix="in-place.")) if in_place else target
        try:
            snap_id = resolve_snapshot(cfg, repo, args.snapshot)
            restore_files(cfg, repo, snap_id, stage, args.include)
            if in_place:
                # Top-level entries only (never / itself); GNU cp -a replaces files and symlinks and
                # writes through bind-mounted files.
                proc = subprocess.run(["cp", "-a", *sorted(str(p) for p in stage.iterdir()), "/"])
                if proc.returncode != 0:
                    raise BackupError(f"copying the restored files into place failed (exit {proc.returncode})")
            if args.databases and cfg.postgresql["enabled"]:
                dump_dir = stage / cfg.postgresql["dump_dir"].lstrip("/")
                dbs = pg.restore(pg.PgSettings.from_config(cfg.postgresql), dump_dir, args.db_suffix, in_place)
        finally:
            if in_place:
                shutil.rmtree(stage, ignore_errors=True)
    print(json.dumps({"snapshot_id": snap_id, "target": str(target), "databases": dbs,
                      "seconds": round(time.monotonic() - started, 1)}))
    return 0


def check_databases(cfg: Config, scratch: Path, recorded: dict[str, Any], suffix: str,
                    restored: list[str]) -> list[str]:
    """Restore every dump into a scratch database and compare rows per table with the manifest."""
    failures: list[str] = []
    pgs = pg.PgSettings.from_config(cfg.postgresql)
    dump_dir = scratch / pgs.dump_dir.lstrip("/")
    globals_sql = dump_dir / "globals.sql"
    if not globals_sql.exists() or not globals_sql.stat().st_size:
        failures.append("globals.sql (roles) is missing or empty")
    missing = sorted(db for db, facts in recorded.items() if not (dump_dir / facts["dump"]).exists())
    failures += [f"dump of database {db} is missing" for db in missing]
    # Dropped by the caller, even when a restore fails half way.
    restored += [f"{db}{suffix}" for db in recorded]
    pg.restore(pgs, dump_dir, suffix, in_place=False)
    for db, facts in sorted(recorded.items()):
        if db in missing:
            continue
        want: dict[str, int] = facts["tables"]
        got = pg.row_counts(pgs, f"{db}{suffix}")
        bad = sorted(t for t in set(want) | set(got) if want.get(t) != got.get(t))
        for t in bad[:20]:
            failures.append(f"database {db}, table {t}: {want.get(t)} rows recorded, {got.get(t)} restored")
        log(f"database {db}: {len(want)} tables, {sum(want.values())} rows recorded, "
            f"{sum(got.values())} rows restored")
    return failures


def cmd_drill(cfg: Config, args: Any) -> int:
    """Restore a snapshot into scratch space and prove it against the manifest it carries."""
    started = time.monotonic()
    repo = cfg.repository(args.repo)
    extra: list[str] = []
    if args.location:
        # A copy of the local repository (e.g. to prove the drill fails on a damaged one):
        # same password, no cache, so every byte comes from the copy.
        repo = replace(repo, url=args.location, kind="local", cacert=None)
        extra = ["--no-cache"]
    scratch_parent = Path(args.scratch or cfg.drill_dir)
    scratch_parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=scratch_parent, prefix="drill."))
    failures: list[str] = []
    suffix = f"_drill_{os.getpid()}"
    restored_dbs: list[str] = []
    verdict = manifest.Verdict()
    snap_id = "?"
    t_restore = 0.0
    try:
        with Lock():
            snap_id = resolve_snapshot(cfg, repo, args.snapshot)
            restore_files(cfg, repo, snap_id, scratch, [], extra)
        t_restore = time.monotonic() - started
        mpath = scratch / cfg.manifest_file.lstrip("/")
        if not mpath.exists():
            raise BackupError(f"snapshot {snap_id[:8]} carries no manifest ({cfg.manifest_file})")
        header, entries = manifest.read(mpath)
        verdict = manifest.verify(scratch, entries, live_host=not args.location)
        failures += verdict.failures
        log(f"files proven against the manifest of {header['created']}: {verdict.checked} entries, "
            f"{len(verdict.grew)} grew and {len(verdict.changed)} changed while the backup ran, "
            f"{len(verdict.removed)} removed since, {len(verdict.failures)} failures")
        for path in verdict.grew[:5] + verdict.changed[:5]:
            log(f"  changed while the backup ran: {path}")
        if cfg.postgresql["enabled"]:
            failures += check_databases(cfg, scratch, header.get("databases", {}), suffix, restored_dbs)
    except BackupError as exc:
        failures.append(str(exc))
    finally:
        pgs = pg.PgSettings.from_config(cfg.postgresql) if cfg.postgresql["enabled"] else None
        for name in restored_dbs if pgs else []:
            pg.drop(pgs, name)
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    elapsed = time.monotonic() - started
    for failure in failures[:50]:
        log(f"DIFF: {failure}")
    if len(failures) > 50:
        log(f"... and {len(failures) - 50} more differences")
    result = "PASS" if not failures else "FAIL"
    summary = {"result": result, "snapshot_id": snap_id, "repository": repo.name, "entries": verdict.checked,
               "grew": len(verdict.grew), "changed": len(verdict.changed), "removed": len(verdict.removed),
               "failures": len(failures), "restore_seconds": round(t_restore, 1), "seconds": round(elapsed, 1)}
    log(f"restore drill {result}: snapshot {snap_id[:8]} from {repo.name}, "
        f"restore {t_restore:.1f}s, total {elapsed:.1f}s")
    log("drill-summary: " + json.dumps(summary, sort_keys=True))
    return 0 if not failures else 1
