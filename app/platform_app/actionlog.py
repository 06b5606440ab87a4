"""Action log: one JSON object per line, to a file, a collector's socket or the journal."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import socket
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from platform_app.config import ActionLogSpec
from platform_app.journald import JournalClient

logger = logging.getLogger(__name__)

FILE_MODE = 0o600
_TAIL_BLOCK = 64 * 1024
# The monthly files of the action-log copier (roles/app, platform-actionlog).
MONTHLY_FILE_RE = re.compile(r"^actions-\d{4}-\d{2}\.jsonl$")


class ActionLogUnreadable(OSError):
    """The records exist but the app may not read them (permissions, missing directory)."""


def tail_file(path: Path, limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` parseable records of a JSONL file, oldest first."""
    if limit <= 0:
        return []
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            position = handle.tell()
            chunk = b""
            while position > 0 and chunk.count(b"\n") <= limit:
                step = min(_TAIL_BLOCK, position)
                position -= step
                handle.seek(position)
                chunk = handle.read(step) + chunk
    except FileNotFoundError:
        return []
    lines = chunk.split(b"\n")
    if position > 0:
        lines = lines[1:]  # first piece may be a partial line
    records: deque[dict[str, Any]] = deque(maxlen=limit)
    for raw in lines:
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return list(records)


class MonthlyFilesReader:
    """Reads the newest records from ``actions-YYYY-MM.jsonl`` files in a directory, which
    another user (the copier) writes; the app only needs read access (docs/app.md)."""

    readable = True

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def tail(self, limit: int) -> list[dict[str, Any]]:
        try:
            names = sorted(
                (n for n in os.listdir(self.directory) if MONTHLY_FILE_RE.match(n)), reverse=True
            )
        except OSError as exc:
            raise ActionLogUnreadable(f"{self.directory}: {exc.strerror}") from None
        records: list[dict[str, Any]] = []
        for name in names:
            if len(records) >= limit:
                break
            try:
                older = tail_file(self.directory / name, limit - len(records))
            except OSError as exc:
                raise ActionLogUnreadable(f"{name}: {exc.strerror}") from None
            records = older + records
        return records


def utc_timestamp(now: datetime | None = None) -> str:
    """RFC 3339 timestamp in UTC with millisecond precision and a ``Z`` suffix."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_record(
    user: str | None, op: str, details: dict[str, Any] | None, ip: str | None
) -> dict[str, Any]:
    return {"ts": utc_timestamp(), "user": user, "op": op, "details": details or {}, "ip": ip}


def encode_record(record: dict[str, Any]) -> str:
    """A single JSON line (json.dumps escapes control characters, so no raw newline)."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, sort_keys=False)


class ActionSink(Protocol):
    readable: bool

    def write(self, line: str) -> None: ...

    def tail(self, limit: int) -> list[dict[str, Any]]: ...


class FileSink:
    """Appends each line with one write() on an O_APPEND descriptor."""

    readable = True

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, line: str) -> None:
        data = (line + "\n").encode("utf-8")
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        fd = os.open(self.path, flags, FILE_MODE)
        try:
            written = os.write(fd, data)
        finally:
            os.close(fd)
        if written != len(data):
            raise OSError(f"short write to action log ({written}/{len(data)} bytes)")

    def tail(self, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` parseable records, oldest first."""
        return tail_file(self.path, limit)


class JournaldSink:
    """Sends each line as MESSAGE with SYSLOG_IDENTIFIER and PRIORITY=6 (info)."""

    readable = False

    def __init__(self, identifier: str, client: JournalClient) -> None:
        self.identifier = identifier
        self.client = client

    def write(self, line: str) -> None:
        self.client.send({"MESSAGE": line, "SYSLOG_IDENTIFIER": self.identifier, "PRIORITY": "6"})

    def tail(self, limit: int) -> list[dict[str, Any]]:
        return []


class SocketSink:
    """Sends each line as one datagram to a collector's unix socket (the copier of roles/app,
    platform-actionlog.socket). The send blocks while the collector's queue is full: a
    flood slows the requests down, it never drops a record. The collector learns the
    sender's uid from the kernel (SO_PASSCRED), so it can trust who sent the record."""

    readable = False

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def write(self, line: str) -> None:
        data = line.encode("utf-8")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.sendto(data, self.path)
            except OSError as exc:
                if exc.errno != errno.EMSGSIZE:
                    raise
                # Larger than one datagram (details far beyond any real action): send what
                # identifies the action, never nothing.
                record = json.loads(line)
                record["details"] = {"truncated": True, "bytes": len(data)}
                sock.sendto(encode_record(record).encode("utf-8"), self.path)

    def tail(self, limit: int) -> list[dict[str, Any]]:
        return []


def make_sink(spec: ActionLogSpec) -> ActionSink:
    if spec.kind == "file" and spec.path is not None:
        return FileSink(spec.path)
    if spec.kind == "socket" and spec.path is not None:
        return SocketSink(spec.path)
    if spec.kind == "journald":
        return JournaldSink(spec.identifier, JournalClient(spec.socket_path))
    raise ValueError(f"unknown action log kind {spec.kind!r}")


class ActionReader(Protocol):
    readable: bool

    def tail(self, limit: int) -> list[dict[str, Any]]: ...


class ActionLogger:
    """Builds records and hands them to the sink; a failing sink never breaks a request.
    Records are read back from ``reader`` (the sink itself when it can be read)."""

    def __init__(self, sink: ActionSink, reader: ActionReader | None = None) -> None:
        self.sink = sink
        self.reader: ActionReader = reader if reader is not None else sink

    @property
    def readable(self) -> bool:
        return self.reader.readable

    def tail(self, limit: int) -> list[dict[str, Any]]:
        return self.reader.tail(limit) if self.reader.readable else []

    def log(
        self,
        op: str,
        *,
        user: str | None,
        ip: str | None,
        details: dict[str, Any] | None = None,
    ) -> None:
        line = encode_record(make_record(user, op, details, ip))
        try:
            self.sink.write(line)
        except OSError as exc:
            logger.error("action log write failed for op=%s: %s", op, exc)
