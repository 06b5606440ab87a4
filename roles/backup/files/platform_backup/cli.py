"""The command line: /usr/local/sbin/platform-backup SUBCOMMAND.

  run        dump every PostgreSQL database (row counts in the dump's own snapshot), write the
             manifest, snapshot paths + dumps + manifest into every repository, apply the
             retention policy to the repositories this host prunes (the local one; the
             off-site server prunes its own); writes the status file. Non-zero exit on failure.
  check      restic check --read-data-subset=N% on every repository; writes its status file.
  init       create the repositories that do not exist yet (prints "created: NAME").
  add-key    REPO --user U --key-host H: add a key whose password comes on stdin (idempotent).
  credential --file F --user U: create this host's off-site credential if missing; print
             its htpasswd line (bcrypt) as JSON.
  restic     REPO ARGS...: run restic against a named repository with the job's settings.
  restore    restore a snapshot to a path (scratch or /) and its databases.
  drill      restore a snapshot into scratch space and prove it against its manifest.
  watchdog   fail when no backup succeeded within alert_after_hours (raises the alert).
  alert      UNIT: leave the failure notice in the login message (backup-notify@.service).

Secrets never appear in process arguments.
"""

from __future__ import annotations

import argparse
import os

from platform_backup import backup, config, restic, restore
from platform_backup.util import BackupError, log


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="platform-backup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run").set_defaults(func=backup.cmd_run)
    sub.add_parser("check").set_defaults(func=backup.cmd_check)
    sub.add_parser("init").set_defaults(func=backup.cmd_init)
    sub.add_parser("watchdog").set_defaults(func=backup.cmd_watchdog)
    s = sub.add_parser("alert")
    s.add_argument("unit")
    s.set_defaults(func=backup.cmd_alert)
    s = sub.add_parser("add-key")
    s.add_argument("repo")
    s.add_argument("--user", required=True)
    s.add_argument("--key-host", required=True)
    s.set_defaults(func=backup.cmd_add_key)
    s = sub.add_parser("credential")
    s.add_argument("--file", required=True)
    s.add_argument("--user", required=True)
    s.set_defaults(func=backup.cmd_credential)
    s = sub.add_parser("restic")
    s.add_argument("repo")
    s.add_argument("restic_args", nargs=argparse.REMAINDER)
    s.set_defaults(func=cmd_restic)
    s = sub.add_parser("restore")
    s.add_argument("--repo", default="local")
    s.add_argument("--snapshot", default="latest")
    s.add_argument("--target", required=True)
    s.add_argument("--include", action="append", default=[])
    s.add_argument("--databases", action="store_true")
    s.add_argument("--db-suffix", default="_restored")
    s.add_argument("--in-place", action="store_true")
    s.set_defaults(func=restore.cmd_restore)
    s = sub.add_parser("drill")
    s.add_argument("--repo", default="local")
    s.add_argument("--snapshot", default="latest")
    # A copy of the local repository to drill instead (never the real one is damaged on purpose).
    s.add_argument("--location", default=None)
    # Default: drill_dir of the configuration; a private directory (mkdtemp, 0700) is made inside.
    s.add_argument("--scratch", default=None)
    s.add_argument("--keep", action="store_true")
    s.set_defaults(func=restore.cmd_drill)
    return p


def cmd_restic(cfg: config.Config, args: argparse.Namespace) -> int:
    return restic.run(cfg, cfg.repository(args.repo), args.restic_args, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.umask(0o077)
    try:
        # The credential is created before the role writes the configuration.
        return args.func(None if args.command == "credential" else config.load(), args)
    except BackupError as exc:
        log(f"ERROR: {exc}")
        return 1
