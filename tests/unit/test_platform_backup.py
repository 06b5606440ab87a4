"""roles/backup/files/platform_backup: the backup tool's logic, without a host.

The host checks (tests/host/test_backups.py) run the tool for real; here its decisions are
pinned down: restic's exclude semantics (the manifest must list what restic stores), the
manifest's verdicts on a busy host and on damage, the retention grouping, the watchdog's
"missing backup" arithmetic and the credential handling.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from platform_backup import backup, manifest
from platform_backup.config import Config, Repository, with_credentials
from platform_backup.util import BackupError

# --- restic's --exclude semantics ---------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/var/lib/platform/cache", "/var/lib/platform/cache", True),
        ("/var/lib/platform/cache", "/var/lib/platform/cache/a/b", True),  # the subtree goes with it
        ("/var/lib/platform/cache", "/var/lib/platform/cachex", False),
        ("/var/lib/platform/cache", "/srv/var/lib/platform/cache", False),  # absolute: from the root
        ("/var/lib/platform/**/.cache", "/var/lib/platform/.cache", True),  # ** may be nothing
        ("/var/lib/platform/**/.cache", "/var/lib/platform/users/alice/.cache/x", True),
        ("/var/lib/platform/**/.cache", "/var/lib/other/.cache", False),
        ("/opt/platform/**/__pycache__", "/opt/platform/releases/1/app/__pycache__/m.pyc", True),
        ("/var/lib/platform/**/.tmp-*", "/var/lib/platform/.tmp-drill.json", True),
        ("/var/lib/platform/**/.tmp-*", "/var/lib/platform/users/alice/portfolios/.tmp-k2x.json", True),
        ("/var/lib/platform/**/.tmp-*", "/var/lib/platform/users/alice/portfolios/p.json", False),
        (".cache", "/home/alice/.cache/thumbs", True),  # relative: anywhere
        ("*.tmp", "/etc/x/file.tmp", True),
        ("*.tmp", "/etc/x/file.tmpl", False),
        ("/etc/*/secret", "/etc/a/secret", True),
        ("/etc/*/secret", "/etc/a/b/secret", False),  # * never crosses a /
    ],
)
def test_exclude_patterns_match_like_restic(pattern: str, path: str, expected: bool) -> None:
    assert manifest.matches(pattern, path) is expected


def _tree(root: Path) -> None:
    (root / "data/users/alice").mkdir(parents=True)
    (root / "data/users/alice/p.json").write_text('{"a": 1}')
    (root / "data/cache").mkdir()
    (root / "data/cache/big").write_text("x" * 100)
    (root / "data/tagged").mkdir()
    (root / "data/tagged/CACHEDIR.TAG").write_bytes(manifest.CACHEDIR_SIGNATURE + b"\n")
    (root / "data/tagged/junk").write_text("junk")
    (root / "data/link").symlink_to("users/alice/p.json")


def test_walk_applies_excludes_and_cache_tags_like_restic(tmp_path: Path) -> None:
    _tree(tmp_path)
    paths = [p for p, _ in manifest.walk([str(tmp_path / "data")], [str(tmp_path / "data/cache")], True)]
    rel = sorted(os.path.relpath(p, tmp_path) for p in paths)
    # restic --exclude-caches keeps the tagged directory and its CACHEDIR.TAG, nothing else in it.
    assert rel == ["data", "data/link", "data/tagged", "data/tagged/CACHEDIR.TAG", "data/users",
                   "data/users/alice", "data/users/alice/p.json"]


# --- the manifest and its verdicts ------------------------------------------------------------


def _manifest(tmp_path: Path) -> dict[str, dict]:
    _tree(tmp_path)
    entries, counters = manifest.build([str(tmp_path / "data")], [], True)
    assert counters["hashed"] == 3  # p.json, CACHEDIR.TAG... and nothing inside the cache dir
    return {e["path"]: e for e in entries}


def _restore_copy(tmp_path: Path) -> Path:
    """What restic restore gives back: the same tree, with the same times, under a scratch root."""
    root = tmp_path / "restore"
    dest = root / str(tmp_path / "data").lstrip("/")
    dest.parent.mkdir(parents=True)
    os.system(f"cp -a {tmp_path / 'data'} {dest}")  # noqa: S605 (test fixture, fixed paths)
    return root


def test_identical_restore_passes(tmp_path: Path) -> None:
    entries = _manifest(tmp_path)
    verdict = manifest.verify(_restore_copy(tmp_path), entries, live_host=False)
    assert verdict.failures == [] and verdict.checked == len(entries)


def test_damaged_content_with_the_recorded_mtime_fails(tmp_path: Path) -> None:
    entries = _manifest(tmp_path)
    root = _restore_copy(tmp_path)
    victim = root / str(tmp_path / "data/users/alice/p.json").lstrip("/")
    st = victim.stat()
    victim.write_text('{"a": 2}')  # same size, other bytes
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    verdict = manifest.verify(root, entries, live_host=False)
    assert any("content differs from the manifest (sha256)" in f for f in verdict.failures)


def test_a_log_that_grew_while_the_backup_ran_passes(tmp_path: Path) -> None:
    entries = _manifest(tmp_path)
    root = _restore_copy(tmp_path)
    log = root / str(tmp_path / "data/users/alice/p.json").lstrip("/")
    with open(log, "a") as fh:
        fh.write("\n{\"appended\": true}")
    verdict = manifest.verify(root, entries, live_host=False)
    assert verdict.failures == [] and len(verdict.grew) == 1


def test_a_file_rewritten_after_the_manifest_is_counted_not_failed(tmp_path: Path) -> None:
    entries = _manifest(tmp_path)
    root = _restore_copy(tmp_path)
    f = root / str(tmp_path / "data/users/alice/p.json").lstrip("/")
    f.write_text('{"rewritten": true}')
    later = entries[str(tmp_path / "data/users/alice/p.json")]["mtime_ns"] + 10**9
    os.utime(f, ns=(later, later))
    verdict = manifest.verify(root, entries, live_host=False)
    assert verdict.failures == [] and len(verdict.changed) == 1


def test_an_older_version_fails(tmp_path: Path) -> None:
    entries = _manifest(tmp_path)
    root = _restore_copy(tmp_path)
    f = root / str(tmp_path / "data/users/alice/p.json").lstrip("/")
    f.write_text("{}")
    earlier = entries[str(tmp_path / "data/users/alice/p.json")]["mtime_ns"] - 10**9
    os.utime(f, ns=(earlier, earlier))
    assert manifest.verify(root, entries, live_host=False).failures


def test_a_missing_file_fails_unless_the_live_one_changed(tmp_path: Path) -> None:
    entries = _manifest(tmp_path)
    root = _restore_copy(tmp_path)
    rel = str(tmp_path / "data/users/alice/p.json")
    (root / rel.lstrip("/")).unlink()
    assert any("not restored" in f for f in manifest.verify(root, entries, live_host=True).failures)
    Path(rel).unlink()  # removed on the live host after the manifest was taken
    verdict = manifest.verify(root, entries, live_host=True)
    assert verdict.failures == [] and verdict.removed == [rel]


def test_mode_change_is_a_failure(tmp_path: Path) -> None:
    entries = _manifest(tmp_path)
    root = _restore_copy(tmp_path)
    os.chmod(root / str(tmp_path / "data/users").lstrip("/"), 0o700)
    assert any("mode/owner differs" in f for f in manifest.verify(root, entries, live_host=False).failures)


def test_hashes_of_unchanged_files_are_reused(tmp_path: Path) -> None:
    entries = _manifest(tmp_path)
    again, counters = manifest.build([str(tmp_path / "data")], [], True, entries)
    assert counters["hashed"] == 0 and counters["reused"] == 3
    assert [e.get("sha256") for e in again] == [e.get("sha256") for e in entries.values()]
    # A changed file is read again.
    (tmp_path / "data/users/alice/p.json").write_text('{"a": 10}')
    _, counters = manifest.build([str(tmp_path / "data")], [], True, {e["path"]: e for e in again})
    assert counters["hashed"] == 1


def test_manifest_round_trip(tmp_path: Path) -> None:
    entries = _manifest(tmp_path)
    path = tmp_path / "m.jsonl"
    manifest.write(path, {"host": "h", "databases": {"db": {"dump": "db.dump", "tables": {"public.t": 3}}}},
                   list(entries.values()))
    header, back = manifest.read(path)
    assert header["databases"]["db"]["tables"] == {"public.t": 3}
    assert back == entries
    assert oct(path.stat().st_mode & 0o777) == "0o600"


# --- retention, credentials, the watchdog -----------------------------------------------------


def _cfg(**over) -> Config:
    data = {
        "host": "web-1", "tags": ["nightly"], "repositories": [{"name": "local", "url": "/r"}],
        "password_file": "/pw", "cache_dir": "/c", "paths": [], "required_paths": [], "excludes": [],
        "exclude_caches": True, "postgresql": {"enabled": False}, "check_read_data_subset": "5%",
        "retention": {"daily": 7, "weekly": 8, "monthly": 12, "group_by": "host,tags"},
        "status_file": "/s", "check_status_file": "/cs", "drill_dir": "/d", "manifest_file": "/m",
    }
    data.update(over)
    return Config.from_dict(data)


def test_local_retention_groups_by_host_and_tags_never_paths() -> None:
    args = backup.forget_args(_cfg())
    assert args[args.index("--group-by") + 1] == "host,tags"
    assert [args[args.index(k) + 1] for k in ("--keep-daily", "--keep-weekly", "--keep-monthly")] == ["7", "8", "12"]


def test_rest_credentials_go_into_the_url_only_at_run_time(tmp_path: Path) -> None:
    secret = tmp_path / "cred"
    secret.write_text("s3cr/t+x\n")
    repo = Repository(name="offsite", kind="rest", url="rest:https://10.0.0.5:8443/web-1/",
                      credential_file=str(secret), user="web-1", prune=False)
    assert repo.location() == "rest:https://web-1:s3cr%2Ft%2Bx@10.0.0.5:8443/web-1/"
    with pytest.raises(BackupError):
        with_credentials("rest:http://10.0.0.5:8443/web-1/", "u", "p")  # TLS only
    with pytest.raises(BackupError):
        with_credentials("rest:https://u:p@10.0.0.5:8443/web-1/", "u", "p")  # never stored in the URL


def test_credential_is_created_once_and_only_its_hash_is_printed(tmp_path: Path, capsys) -> None:
    bcrypt = pytest.importorskip("bcrypt")
    args = SimpleNamespace(file=str(tmp_path / "cred"), user="web-1")
    assert backup.cmd_credential(None, args) == 0
    first = json.loads(capsys.readouterr().out)
    secret = (tmp_path / "cred").read_text().strip()
    assert first["created"] and secret not in json.dumps(first)
    user, hashed = first["htpasswd"].split(":", 1)
    assert user == "web-1" and bcrypt.checkpw(secret.encode(), hashed.encode())
    assert oct((tmp_path / "cred").stat().st_mode & 0o777) == "0o600"
    assert backup.cmd_credential(None, args) == 0
    second = json.loads(capsys.readouterr().out)
    assert not second["created"] and second["htpasswd"] == first["htpasswd"]


def test_watchdog_arithmetic() -> None:
    at = datetime(2026, 3, 15, 12, tzinfo=UTC)
    limit = timedelta(hours=26)
    installed = at - timedelta(days=30)
    assert backup.overdue(at - timedelta(hours=9), installed, limit, at) is None
    assert "27.0 h old" in backup.overdue(at - timedelta(hours=27), installed, limit, at)
    # Never succeeded: counted from the installation, so a fresh host gets one night.
    assert backup.overdue(None, at - timedelta(hours=2), limit, at) is None
    assert "no backup has succeeded" in backup.overdue(None, installed, limit, at)


def test_backup_sources_skip_nested_and_missing(tmp_path: Path) -> None:
    (tmp_path / "etc/nginx").mkdir(parents=True)
    cfg = _cfg(paths=[str(tmp_path / "etc"), str(tmp_path / "etc/nginx"), str(tmp_path / "missing")])
    assert backup.backup_sources(cfg) == [str(tmp_path / "etc")]
    with pytest.raises(BackupError):
        backup.backup_sources(_cfg(paths=[str(tmp_path / "missing")], required_paths=[str(tmp_path / "missing")]))
