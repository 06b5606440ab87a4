"""Minimal client for the systemd journal native protocol (no python-systemd needed).

Each datagram is a sequence of fields. A field is ``KEY=value\\n`` or, when the
value contains a newline, ``KEY\\n`` + 64-bit little-endian length + value + ``\\n``.
Datagrams too large for the socket are passed as a sealed memfd (SCM_RIGHTS).
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import re
import socket
import struct
from collections.abc import Mapping

from platform_app.config import JOURNAL_SOCKET

_FIELD_NAME_RE = re.compile(r"^[A-Z0-9][A-Z0-9_]{0,63}$")


def encode_field(name: str, value: str | bytes) -> bytes:
    if not _FIELD_NAME_RE.fullmatch(name):
        raise ValueError(f"invalid journal field name {name!r}")
    data = value.encode("utf-8") if isinstance(value, str) else value
    key = name.encode("ascii")
    if b"\n" in data:
        return key + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return key + b"=" + data + b"\n"


def encode_entry(fields: Mapping[str, str | bytes]) -> bytes:
    return b"".join(encode_field(name, value) for name, value in fields.items())


class JournalClient:
    """Sends entries to journald's native socket; the path is injectable for tests."""

    def __init__(self, socket_path: str = JOURNAL_SOCKET) -> None:
        self.socket_path = socket_path

    def send(self, fields: Mapping[str, str | bytes]) -> None:
        payload = encode_entry(fields)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.sendto(payload, self.socket_path)
            except OSError as exc:
                if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                    raise
                self._send_via_memfd(sock, payload)

    def _send_via_memfd(self, sock: socket.socket, payload: bytes) -> None:
        fd = os.memfd_create("journal-entry", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
            sock.sendmsg([], rights, 0, self.socket_path)
        finally:
            os.close(fd)
