"""PostgreSQL: consistent dumps with the row count of every table, and restores.

Clients run as the cluster's superuser OS account (peer authentication on the local socket:
no database password is stored for backups), switched to by subprocess (setuid/setgid in
the child, no PAM): the backup unit keeps CAP_SETUID/CAP_SETGID for that.

Each database is dumped inside a snapshot exported by a helper session
(`pg_export_snapshot()`); the row counts are taken in a second session that imports the same
snapshot. The counts written to the manifest are therefore exactly the rows the dump holds,
however busy the database is, and the restore drill can require equality.
"""

from __future__ import annotations

import grp
import os
import pwd
import select
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from platform_backup.util import BackupError, log

TABLES_SQL = (
    "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1"
)


@dataclass(frozen=True)
class PgSettings:
    port: int
    os_user: str
    databases: list[str]
    dump_dir: str
    dump_compress: int = 0

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> PgSettings:
        return cls(port=int(data["port"]), os_user=data["os_user"], databases=list(data["databases"]),
                   dump_dir=data["dump_dir"], dump_compress=int(data.get("dump_compress", 0)))


def _as_user(user: str) -> dict[str, Any]:
    if os.geteuid() != 0:
        return {}
    pw = pwd.getpwnam(user)
    return {"user": pw.pw_uid, "group": pw.pw_gid,
            "extra_groups": [g.gr_gid for g in grp.getgrall() if user in g.gr_mem]}


def run(pgs: PgSettings, args: list[str], *, stdout: int | IO[bytes] | None = subprocess.PIPE,
        stdin: int | IO[bytes] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run a PostgreSQL client program as the cluster's superuser OS account."""
    proc = subprocess.run(args, stdout=stdout, stderr=subprocess.PIPE, stdin=stdin, cwd="/",
                          **_as_user(pgs.os_user))
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise BackupError(f"{args[0]} failed (exit {proc.returncode}): {err}")
    return proc


def psql(pgs: PgSettings, db: str, *sql: str) -> list[list[str]]:
    """Run statements in one session (one -c each) and return the rows of their output."""
    args = ["psql", "-X", "-q", "-p", str(pgs.port), "-d", db, "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1"]
    for statement in sql:
        args += ["-c", statement]
    out = run(pgs, args)
    return [line.split("\t") for line in out.stdout.decode().splitlines() if line]


def is_ready(pgs: PgSettings) -> bool:
    return run(pgs, ["pg_isready", "-q", "-p", str(pgs.port)], check=False).returncode == 0


def databases(pgs: PgSettings) -> list[str]:
    present = [r[0] for r in psql(pgs, "postgres",
               "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1")]
    if not pgs.databases:
        return present
    missing = sorted(set(pgs.databases) - set(present))
    if missing:
        raise BackupError(f"databases to back up do not exist: {missing}")
    return list(pgs.databases)


def count_sql(tables: list[str]) -> str:
    """One query counting the rows of every table (names come from the catalog, quoted by format('%I'))."""
    if not tables:
        return "SELECT NULL, NULL WHERE false"
    # The names come from the catalog, quoted by format('%I'): not user input.
    return " UNION ALL ".join(
        f"SELECT '{t.replace(chr(39), chr(39) * 2)}', count(*) FROM {t}"  # noqa: S608
        for t in tables
    )


def row_counts(pgs: PgSettings, db: str, snapshot: str | None = None) -> dict[str, int]:
    """Rows per table, in the given exported snapshot (or now)."""
    tables = [r[0] for r in psql(pgs, db, TABLES_SQL)]
    statements = ["BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"]
    if snapshot:
        statements.append(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
    statements += [count_sql(tables), "COMMIT"]
    return {name: int(n) for name, n in psql(pgs, db, *statements)}


class ExportedSnapshot:
    """A session holding an exported snapshot open while the dump and the counts import it."""

    def __init__(self, pgs: PgSettings, db: str, timeout: float = 120) -> None:
        self.pgs, self.db, self.timeout = pgs, db, timeout

    def __enter__(self) -> str:
        self.proc = subprocess.Popen(
            ["psql", "-X", "-q", "-At", "-p", str(self.pgs.port), "-d", self.db, "-v", "ON_ERROR_STOP=1"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/",
            **_as_user(self.pgs.os_user))
        assert self.proc.stdin is not None and self.proc.stdout is not None
        # `\g |cat`: the id goes out through a child that exits at once, so it is flushed
        # while psql (and the transaction) stays open, waiting for more input.
        self.proc.stdin.write(b"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n"
                              b"SELECT pg_export_snapshot() \\g |cat\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        line = self.proc.stdout.readline().decode().strip() if ready else ""
        if not line:
            self.__exit__()
            err = self.proc.stderr.read().decode(errors="replace").strip() if self.proc.stderr else ""
            raise BackupError(f"exporting a snapshot of database {self.db} failed: {err or 'timed out'}")
        return line

    def __exit__(self, *exc: object) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()  # psql ends; the read-only transaction is rolled back
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def dump_all(pgs: PgSettings) -> dict[str, dict[str, Any]]:
    """Dump every database and the roles into the staging directory; return per-database facts.

    Dumps go to a fresh directory that replaces the staging directory only when all of them
    succeeded, so a snapshot never holds a mix of old and new dumps."""
    if not is_ready(pgs):
        raise BackupError(f"PostgreSQL is not accepting connections on port {pgs.port}: no snapshot taken")
    staging = Path(pgs.dump_dir)
    staging.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=staging.parent, prefix=f".{staging.name}."))
    facts: dict[str, dict[str, Any]] = {}
    try:
        for db in databases(pgs):
            dump = work / f"{db}.dump"
            with ExportedSnapshot(pgs, db) as snap, open(dump, "wb") as fh:
                run(pgs, ["pg_dump", "-p", str(pgs.port), "-Fc", "-Z", str(pgs.dump_compress),
                          f"--snapshot={snap}", "-d", db], stdout=fh)
                counts = row_counts(pgs, db, snap)
            facts[db] = {"dump": dump.name, "tables": counts}
            log(f"dumped database {db}: {len(counts)} tables, {sum(counts.values())} rows, "
                f"{dump.stat().st_size} bytes")
        with open(work / "globals.sql", "wb") as fh:
            run(pgs, ["pg_dumpall", "-p", str(pgs.port), "--globals-only"], stdout=fh)
        (work / "databases.txt").write_text("".join(f"{db}\n" for db in facts))
        os.chmod(work, 0o700)
        old = staging.with_name(f".{staging.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if staging.exists():
            staging.rename(old)
        work.rename(staging)
        shutil.rmtree(old, ignore_errors=True)
        return facts
    finally:
        shutil.rmtree(work, ignore_errors=True)


def restore(pgs: PgSettings, dump_dir: Path, suffix: str, in_place: bool) -> list[str]:
    """Restore every dump of dump_dir: as <db><suffix> (scratch) or over the live databases."""
    port = str(pgs.port)
    if not is_ready(pgs):
        raise BackupError("PostgreSQL is not running: cannot restore databases")
    restored = []
    globals_sql = dump_dir / "globals.sql"
    if in_place and globals_sql.exists():
        # Roles that exist already make CREATE ROLE fail: those errors are expected.
        with open(globals_sql, "rb") as fh:
            run(pgs, ["psql", "-X", "-q", "-p", port, "-d", "postgres"], stdin=fh, check=False)
    for dump in sorted(dump_dir.glob("*.dump")):
        db = dump.stem
        # The restored files are root's: pg_restore reads the dump on stdin.
        with open(dump, "rb") as fh:
            if in_place and db == "postgres":
                # The maintenance database cannot be dropped while we connect through it.
                run(pgs, ["pg_restore", "-p", port, "--clean", "--if-exists", "-d", "postgres"], stdin=fh)
                name = db
            elif in_place:
                # --create recreates the database with its owner and settings from the dump.
                run(pgs, ["dropdb", "-p", port, "--if-exists", "--force", db])
                run(pgs, ["pg_restore", "-p", port, "--exit-on-error", "--create", "-d", "postgres"], stdin=fh)
                name = db
            else:
                name = f"{db}{suffix}"
                run(pgs, ["dropdb", "-p", port, "--if-exists", name])
                run(pgs, ["createdb", "-p", port, name])
                run(pgs, ["pg_restore", "-p", port, "--exit-on-error", "--no-owner", "--no-privileges", "-d", name],
                    stdin=fh)
        log(f"restored database {db} as {name}")
        restored.append(name)
    return restored


def drop(pgs: PgSettings, name: str) -> None:
    run(pgs, ["dropdb", "-p", str(pgs.port), "--if-exists", name], check=False)
