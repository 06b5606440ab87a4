"""Running restic against one of the job's repositories.

Secrets never appear in process arguments: the repository password is read from
RESTIC_PASSWORD_FILE (or, for a one-off key, RESTIC_PASSWORD in restic's own environment)
and a REST repository's credential is part of RESTIC_REPOSITORY.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from platform_backup.config import Config, Repository
from platform_backup.util import BackupError


def env(cfg: Config, repo: Repository, password: str | None = None) -> dict[str, str]:
    out = dict(os.environ)
    for name in ("RESTIC_PASSWORD", "RESTIC_PASSWORD_COMMAND", "RESTIC_REPOSITORY_FILE"):
        out.pop(name, None)
    out["RESTIC_REPOSITORY"] = repo.location()
    out["RESTIC_CACHE_DIR"] = cfg.cache_dir
    if password is None:
        out["RESTIC_PASSWORD_FILE"] = cfg.password_file
    else:
        out.pop("RESTIC_PASSWORD_FILE", None)
        out["RESTIC_PASSWORD"] = password
    return out


def command(repo: Repository, args: list[str]) -> list[str]:
    cmd = ["restic"]
    if repo.cacert:
        cmd += ["--cacert", repo.cacert]
    return cmd + args


def run(cfg: Config, repo: Repository, args: list[str], *, capture: bool = False, check: bool = True,
        password: str | None = None, stderr: int | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(command(repo, args), env=env(cfg, repo, password), text=True,
                          stdout=subprocess.PIPE if capture else None, stderr=stderr)
    if check and proc.returncode != 0:
        raise BackupError(f"restic {args[0]} on repository {repo.name} failed (exit {proc.returncode})")
    return proc


def snapshot_id_from(output: str) -> str | None:
    """The snapshot id from `restic backup --json` output (its summary message)."""
    for line in output.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and msg.get("message_type") == "summary":
            return msg.get("snapshot_id")
    return None


def snapshots(cfg: Config, repo: Repository, *args: str) -> list[dict[str, Any]]:
    out = run(cfg, repo, ["snapshots", "--json", *args], capture=True).stdout
    return json.loads(out or "[]") or []
