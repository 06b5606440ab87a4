"""The manifest: what a snapshot must give back, recorded at backup time, stored in it.

`build` walks the backup paths just before restic reads them, applying restic's own exclude
rules (`matches`, `is_cache_dir`), and records every directory, regular file and symlink:
type, mode, owner, size, mtime and, for files, the SHA-256 of the content. Hashes of files
whose (size, mtime, ctime, inode) did not change since the previous manifest are reused, so a
night costs a stat of every file plus reading what changed (restic's own change test).
The database facts (rows per table, taken in the dump's own snapshot) are added by the caller.

`verify` proves a restored tree against the manifest restored from the same snapshot. On a
busy host files change between the manifest and the moment restic reads them; restic
records the mtime it saw, and the verdict uses only that evidence from the snapshot:

  same mtime and size as recorded   content must hash as recorded, else FAIL (damage)
  larger, same leading bytes        grew while the backup ran (an append-only log): ok
  newer mtime than recorded         changed while the backup ran: counted, not failed
  anything else                     FAIL

A path of the manifest that is missing from the restore fails the drill unless the live file
has changed since (it was removed or replaced while the backup ran).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"
VERSION = 1


# --- restic's exclude semantics ---------------------------------------------------------


def _split(path: str) -> list[str]:
    parts = [p for p in path.split("/") if p]
    return ["/", *parts] if path.startswith("/") else parts


def _match_parts(pattern: list[str], parts: list[str]) -> bool:
    if "**" in pattern:
        pos = pattern.index("**")
        # '**' stands for any number (zero included) of path components.
        for n in range(0, max(0, len(parts) - len(pattern) + 1) + 1):
            if _match_parts(pattern[:pos] + ["*"] * n + pattern[pos + 1:], parts):
                return True
        return False
    if not pattern or len(pattern) > len(parts):
        return False
    if pattern[0] == "/":
        offsets = [0]
    else:
        start = 1 if parts[0] == "/" else 0
        offsets = list(range(len(parts) - len(pattern), start - 1, -1))
    return any(all(fnmatch.fnmatchcase(parts[offset + i], p) for i, p in enumerate(pattern)) for offset in offsets)


def matches(pattern: str, path: str) -> bool:
    """restic's --exclude test (internal/filter.Match): a pattern matches a path when it
    matches a run of its components (from the root for absolute patterns, anywhere for
    relative ones), so an excluded directory takes its whole subtree with it."""
    return _match_parts(_split(pattern), _split(path))


def is_cache_dir(path: str) -> bool:
    """A directory marked by a valid CACHEDIR.TAG (restic --exclude-caches)."""
    try:
        with open(os.path.join(path, "CACHEDIR.TAG"), "rb") as fh:
            return fh.read(len(CACHEDIR_SIGNATURE)) == CACHEDIR_SIGNATURE
    except OSError:
        return False


# --- building ---------------------------------------------------------------------------


def sha256_file(path: str, limit: int | None = None) -> str:
    """SHA-256 of a file's content (of its first `limit` bytes when given)."""
    h = hashlib.sha256()
    left = limit
    with open(path, "rb") as fh:
        while left is None or left > 0:
            chunk = fh.read(1 << 20 if left is None else min(1 << 20, left))
            if not chunk:
                break
            h.update(chunk)
            if left is not None:
                left -= len(chunk)
    return h.hexdigest()


def _entry(path: str, st: os.stat_result) -> dict[str, Any]:
    kind = "dir" if stat.S_ISDIR(st.st_mode) else "symlink" if stat.S_ISLNK(st.st_mode) else "file"
    entry: dict[str, Any] = {"path": path, "type": kind, "mode": stat.S_IMODE(st.st_mode),
                             "uid": st.st_uid, "gid": st.st_gid}
    if kind == "file":
        entry.update(size=st.st_size, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns, ino=st.st_ino)
    elif kind == "symlink":
        entry["target"] = os.readlink(path)
    return entry


def walk(paths: list[str], excludes: list[str], exclude_caches: bool) -> Iterator[tuple[str, os.stat_result]]:
    """Every path restic backs up from `paths`, in sorted order, with its lstat."""

    def excluded(p: str) -> bool:
        return any(matches(pattern, p) for pattern in excludes)

    def visit(p: str, in_cache_dir: bool) -> Iterator[tuple[str, os.stat_result]]:
        if excluded(p) or (in_cache_dir and os.path.basename(p) != "CACHEDIR.TAG"):
            return
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return
        if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            return  # sockets, FIFOs, devices: restic keeps the node, there is no content to prove
        yield p, st
        if stat.S_ISDIR(st.st_mode):
            cache = exclude_caches and is_cache_dir(p)
            try:
                names = sorted(os.listdir(p))
            except OSError:
                return
            for name in names:
                yield from visit(os.path.join(p, name), cache)

    for top in sorted(paths):
        yield from visit(top, False)


def build(paths: list[str], excludes: list[str], exclude_caches: bool,
          previous: dict[str, dict[str, Any]] | None = None) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Manifest entries for the files restic will back up, and counters (hashed, reused)."""
    previous = previous or {}
    entries, counters = [], {"hashed": 0, "reused": 0, "bytes_hashed": 0}
    for path, st in walk(paths, excludes, exclude_caches):
        entry = _entry(path, st)
        if entry["type"] == "file":
            old = previous.get(path)
            keys = ("size", "mtime_ns", "ctime_ns", "ino")
            if old and old.get("type") == "file" and all(old.get(k) == entry[k] for k in keys) and old.get("sha256"):
                entry["sha256"] = old["sha256"]
                counters["reused"] += 1
            else:
                try:
                    entry["sha256"] = sha256_file(path)
                except OSError:
                    continue  # vanished between the walk and the read: restic will not see it either
                counters["hashed"] += 1
                counters["bytes_hashed"] += st.st_size
        entries.append(entry)
    return entries, counters


def write(path: Path, header: dict[str, Any], entries: list[dict[str, Any]]) -> None:
    """JSON Lines: a header, then one entry per line in path order (chunks deduplicate
    from night to night: only the lines of changed files differ)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        fh.write(json.dumps({"manifest": VERSION, **header}, sort_keys=True) + "\n")
        for entry in entries:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def read(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    header: dict[str, Any] = {}
    entries: dict[str, dict[str, Any]] = {}
    with open(path) as fh:
        for n, line in enumerate(fh):
            item = json.loads(line)
            if n == 0:
                if item.get("manifest") != VERSION:
                    raise ValueError(f"{path}: not a version {VERSION} manifest")
                header = item
            else:
                entries[item["path"]] = item
    return header, entries


# --- verifying ---------------------------------------------------------------------------


@dataclass
class Verdict:
    checked: int = 0
    grew: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def _live_changed(entry: dict[str, Any]) -> bool:
    """The live file is gone or no longer the one the manifest recorded."""
    try:
        st = os.lstat(entry["path"])
    except FileNotFoundError:
        return True
    if entry["type"] != "file":
        return False
    return (st.st_ino, st.st_mtime_ns, st.st_size) != (entry["ino"], entry["mtime_ns"], entry["size"])


def verify(root: Path, entries: dict[str, dict[str, Any]], live_host: bool = True) -> Verdict:
    """Prove the tree restored under `root` against the manifest entries (see the module doc)."""
    v = Verdict()
    for path, entry in sorted(entries.items()):
        restored = root / path.lstrip("/")
        v.checked += 1
        try:
            st = os.lstat(restored)
        except FileNotFoundError:
            if live_host and _live_changed(entry):
                v.removed.append(path)
            else:
                v.failures.append(f"in the manifest but not restored: {path}")
            continue
        got = _entry(str(restored), st)
        if got["type"] != entry["type"]:
            if entry["type"] == "file" and got["type"] != "dir" and st.st_mtime_ns > entry["mtime_ns"]:
                v.changed.append(path)
            else:
                v.failures.append(f"type differs ({entry['type']} recorded, {got['type']} restored): {path}")
            continue
        if entry["type"] == "symlink":
            if got["target"] != entry["target"]:
                v.failures.append(f"symlink target differs: {path}")
        elif entry["type"] == "file":
            if st.st_mtime_ns == entry["mtime_ns"] and st.st_size == entry["size"]:
                if sha256_file(str(restored)) != entry["sha256"]:
                    v.failures.append(f"content differs from the manifest (sha256): {path}")
                    continue
            elif st.st_size > entry["size"] and sha256_file(str(restored), entry["size"]) == entry["sha256"]:
                v.grew.append(path)
            elif st.st_mtime_ns > entry["mtime_ns"]:
                v.changed.append(path)
                continue
            else:
                v.failures.append(f"content differs from the manifest (older or shorter): {path}")
                continue
        if (got["mode"], got["uid"], got["gid"]) != (entry["mode"], entry["uid"], entry["gid"]):
            v.failures.append(f"mode/owner differs: {path}")
    return v
