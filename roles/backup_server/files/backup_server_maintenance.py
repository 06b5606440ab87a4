"""Retention, pruning and integrity checks of the clients' repositories, on the backup server.

Shipped by roles/backup_server to /usr/local/lib/backup-server/ and run by
backup-server-maintenance.service (its own timer) with the server's own restic key (the role's
backup_server_repository_password, a root-only file the REST server's account cannot read):
the clients can only add to their repositories (rclone serve restic --append-only), so
forgetting and pruning happen here, never on a client. Files it writes into a repository are
handed back to the repository's owner (the REST server's account) afterwards.

Retention by ARRIVAL time. A client decides the time written into its snapshots
(`restic backup --time`): with plain `restic forget --keep-*`, a burglar on a client could add
snapshots dated in the coming days, weeks and months (or late in each past day) and the next
server-side run would keep those and forget the real history. Here every snapshot is dated by
the modification time of its file in the repository, which the REST server sets when the
snapshot arrives and a client cannot change; the 7/8/12 rules are applied to those times (UTC
days, ISO weeks, months), per group of host and tags (so a change of the backed-up paths
starts no new group), and the other snapshots are forgotten by id.

For every repository, in order: `restic check` (the structure; a repository that fails it is
not pruned), the retention plan, `restic forget ID...`, `restic prune`. A client whose newest
snapshot arrived more than stale_after_hours ago fails the run too: the server notices a
client that stopped backing up, whatever happened to the client.

  backup-server-maintenance [--config F] [--password-file F] run [CLIENT...]
  backup-server-maintenance [--config F] [--password-file F] plan CLIENT     (JSON, changes nothing)
  backup-server-maintenance [--config F] [--password-file F] restic CLIENT ARGS...
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

CONFIG = Path("/etc/backup-server/maintenance.json")
LOCKED_MARKERS = ("repository is already locked", "unable to create lock")


class MaintenanceError(Exception):
    """A failure that must fail the run (and so raise the alert)."""


def log(msg: str) -> None:
    print(msg, flush=True)


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the retention policy ------------------------------------------------------------------


def newest_per_bucket(items: Iterable[tuple[str, datetime]], bucket: Callable[[datetime], Hashable],
                      n: int) -> set[str]:
    """Ids of the newest item in each of the n newest buckets."""
    buckets: dict[Hashable, tuple[datetime, str]] = {}
    for ident, when in items:
        key = bucket(when)
        if key not in buckets or (when, ident) > buckets[key]:
            buckets[key] = (when, ident)
    newest = sorted(buckets, key=lambda k: buckets[k], reverse=True)[:n] if n > 0 else []
    return {buckets[k][1] for k in newest}


def keep(items: list[tuple[str, datetime]], daily: int, weekly: int, monthly: int) -> set[str]:
    """The snapshots the 7/8/12 policy keeps: per rule, the newest snapshot of each of its N
    newest buckets (UTC day, ISO week, month); a snapshot may count for several rules.
    The same sets as restic's forget walk (tests/unit/test_retention.py proves it)."""
    utc = [(i, t.astimezone(UTC)) for i, t in items]
    return (newest_per_bucket(utc, lambda t: t.date(), daily)
            | newest_per_bucket(utc, lambda t: t.isocalendar()[:2], weekly)
            | newest_per_bucket(utc, lambda t: (t.year, t.month), monthly))


def group_key(snapshot: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """Snapshots are grouped by host and tags, never by paths."""
    return snapshot.get("hostname", ""), tuple(sorted(snapshot.get("tags") or []))


def plan(snapshots: list[dict[str, Any]], arrivals: dict[str, datetime], retention: dict[str, int]) -> dict[str, Any]:
    """Which snapshots to keep and forget, by arrival time, per group."""
    groups: dict[tuple[str, tuple[str, ...]], list[tuple[str, datetime]]] = {}
    unknown = []
    for snap in snapshots:
        when = arrivals.get(snap["id"])
        if when is None:
            unknown.append(snap["id"])  # listed but its file is gone: nothing to decide
            continue
        groups.setdefault(group_key(snap), []).append((snap["id"], when))
    kept: set[str] = set()
    for items in groups.values():
        kept |= keep(items, int(retention["daily"]), int(retention["weekly"]), int(retention["monthly"]))
    every = {s["id"] for s in snapshots} - set(unknown)
    return {"keep": sorted(kept), "forget": sorted(every - kept), "groups": len(groups)}


# --- restic on the server ------------------------------------------------------------------


@dataclass
class Server:
    cfg: dict[str, Any]
    password_file: str

    def repo(self, client: str) -> Path:
        if "/" in client or client in ("", ".", ".."):
            raise MaintenanceError(f"not a client name: {client!r}")
        return Path(self.cfg["data_dir"]) / client

    def restic(self, client: str, args: list[str], *, capture: bool = True) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
        env.update(RESTIC_REPOSITORY=str(self.repo(client)), RESTIC_PASSWORD_FILE=self.password_file,
                   RESTIC_CACHE_DIR=self.cfg["cache_dir"])
        deadline = time.monotonic() + float(self.cfg.get("lock_wait_seconds", 3600))
        while True:
            proc = subprocess.run(["restic", *args], env=env, text=True,
                                  stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE)
            if proc.returncode == 0 or not any(m in proc.stderr for m in LOCKED_MARKERS):
                return proc
            if time.monotonic() > deadline:
                return proc
            # A client's backup holds the lock: the backups start at 03:00, let them finish.
            log(f"{client}: repository locked, retrying in 60 s")
            time.sleep(60)

    def must(self, client: str, args: list[str]) -> str:
        proc = self.restic(client, args)
        if proc.returncode != 0:
            err = proc.stderr.strip().splitlines()[-3:]
            raise MaintenanceError(f"restic {args[0]} failed (exit {proc.returncode}): {' / '.join(err)}")
        return proc.stdout

    def hand_back(self, client: str) -> int:
        """Give every file of the repository to the repository directory's owner (the REST
        server's account must read what prune wrote); returns how many were changed."""
        repo = self.repo(client)
        st = repo.stat()
        changed = 0
        for dirpath, dirs, files in os.walk(repo):
            for name in dirs + files:
                path = os.path.join(dirpath, name)
                if os.lstat(path).st_uid != st.st_uid:
                    os.lchown(path, st.st_uid, st.st_gid)
                    changed += 1
        return changed

    def arrivals(self, client: str) -> dict[str, datetime]:
        """Snapshot id -> when its file arrived on this server (mtime, set by the REST server)."""
        out = {}
        for path in (self.repo(client) / "snapshots").iterdir():
            out[path.name] = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        return out

    def snapshots(self, client: str) -> list[dict[str, Any]]:
        return json.loads(self.must(client, ["snapshots", "--json", "--no-lock"]) or "[]") or []

    def plan(self, client: str) -> dict[str, Any]:
        return plan(self.snapshots(client), self.arrivals(client), self.cfg["retention"])

    def maintain(self, client: str, at: datetime) -> dict[str, Any]:
        started = time.monotonic()
        result: dict[str, Any] = {"result": "failed", "error": None}
        repo = self.repo(client)
        if not (repo / "config").exists():
            result.update(result="absent", error=None)
            log(f"{client}: no repository yet")
            return result
        try:
            self.must(client, ["check"])
            result["check"] = "success"
            decision = self.plan(client)
            arrivals = self.arrivals(client)
            result.update(snapshots=len(decision["keep"]) + len(decision["forget"]),
                          kept=len(decision["keep"]), forgotten=decision["forget"])
            if decision["forget"]:
                # In chunks: a year of forgotten nights must not overflow the argument list.
                for i in range(0, len(decision["forget"]), 200):
                    self.must(client, ["forget", *decision["forget"][i:i + 200]])
                self.must(client, ["prune"])
                result["pruned"] = True
            else:
                result["pruned"] = False
            newest = max(arrivals.values(), default=None)
            result["newest_arrival"] = iso(newest) if newest else None
            limit = timedelta(hours=float(self.cfg.get("stale_after_hours", 26)))
            since = newest or datetime.fromtimestamp((repo / "config").stat().st_mtime, UTC)
            if at - since > limit:
                hours = limit.total_seconds() / 3600
                raise MaintenanceError(f"no snapshot arrived since {iso(since)} (limit {hours:.0f} h)")
            result["result"] = "success"
            log(f"{client}: kept {result['kept']} of {result['snapshots']} snapshots, "
                f"forgot {len(decision['forget'])}, newest arrived {result['newest_arrival']}")
        except (MaintenanceError, OSError, ValueError) as exc:
            result["error"] = str(exc)
            log(f"{client}: MAINTENANCE FAILED: {exc}")
        finally:
            if os.geteuid() == 0:
                try:
                    self.hand_back(client)
                except OSError as exc:
                    result.update(result="failed", error=f"handing the files back failed: {exc}")
        result["seconds"] = round(time.monotonic() - started, 1)
        return result


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def cmd_run(server: Server, clients: list[str]) -> int:
    at = datetime.now(UTC)
    names = clients or list(server.cfg["clients"])
    status: dict[str, Any] = {"last_run": iso(at), "clients": {}}
    for client in names:
        status["clients"][client] = server.maintain(client, at)
    failed = sorted(c for c, r in status["clients"].items() if r["result"] == "failed")
    status["result"] = "failed" if failed else "success"
    status["error"] = f"failed: {', '.join(failed)}" if failed else None
    status["finished"] = iso(datetime.now(UTC))
    write_json_atomic(Path(server.cfg["status_file"]), status)
    if not failed:
        Path(server.cfg["alert_motd_file"]).unlink(missing_ok=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="backup-server-maintenance", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(CONFIG))
    p.add_argument("--password-file", default=None)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("run")
    s.add_argument("clients", nargs="*")
    s = sub.add_parser("plan")
    s.add_argument("client")
    s = sub.add_parser("restic")
    s.add_argument("client")
    s.add_argument("restic_args", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    os.umask(0o077)
    cfg = json.loads(Path(args.config).read_text())
    server = Server(cfg, args.password_file or cfg["password_file"])
    try:
        if args.command == "run":
            return cmd_run(server, args.clients)
        if args.command == "plan":
            print(json.dumps(server.plan(args.client), indent=2, sort_keys=True))
            return 0
        return server.restic(args.client, args.restic_args, capture=False).returncode
    except MaintenanceError as exc:
        log(f"ERROR: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
