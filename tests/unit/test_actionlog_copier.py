"""The action-log copier (roles/app/templates/platform-actionlog.py.j2) without a host:
started the way systemd starts it (the datagram socket as fd 3, LISTEN_PID/LISTEN_FDS),
fed records, checked line by line; a sender with another uid is ignored."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

TEMPLATE = Path(__file__).resolve().parents[2] / "roles/app/templates/platform-actionlog.py.j2"


@pytest.fixture
def copier(tmp_path: Path):
    # The socket lives where another user can reach it (the test of the sender's uid).
    public = Path(tempfile.mkdtemp(prefix="copier-test-"))
    public.chmod(0o755)
    script = tmp_path / "platform-actionlog.py"
    # The only Jinja in the template is the managed-file comment on the first line.
    lines = TEMPLATE.read_text().splitlines(keepends=True)
    assert "{{" in lines[0] and not any("{{" in line for line in lines[1:])
    script.write_text("".join(lines[1:]))
    logdir = tmp_path / "log"
    logdir.mkdir()
    path = str(public / "records.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    # As systemd does (PassCredentials=yes) before anything can be sent: every datagram
    # then carries its sender's credentials.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    os.chmod(path, 0o666)  # noqa: S103 - anyone may send: the copier's uid check is what is tested
    env = {**os.environ, "ACTIONLOG_DIR": str(logdir), "ACTIONLOG_RETENTION_MONTHS": "13",
           "ACTIONLOG_USER": __import__("pwd").getpwuid(os.getuid()).pw_name, "LISTEN_FDS": "1"}  # fmt: skip
    # As systemd does it: the socket is fd 3 and LISTEN_PID the copier's own pid (set by a
    # launcher that then execs the copier in the same process).
    launch = ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.environ['LISTEN_PID'] = str(os.getpid());"
              " os.execv(sys.executable, [sys.executable, '-I', '-S', sys.argv[2]])")
    output = (tmp_path / "copier.out").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", launch, str(sock.fileno()), str(script)],
        env=env, pass_fds=[sock.fileno()], stdout=output, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield path, logdir, tmp_path / "copier.out"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        output.close()
        sock.close()
        shutil.rmtree(public, ignore_errors=True)


def _lines(logdir: Path, expected: int) -> list[dict]:
    month = logdir / f"actions-{datetime.now(UTC):%Y-%m}.jsonl"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if month.exists() and len(month.read_text().splitlines()) >= expected:
            break
        time.sleep(0.05)
    return [json.loads(line) for line in month.read_text().splitlines()] if month.exists() else []


def test_every_record_becomes_one_line(copier) -> None:
    path, logdir, output = copier
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.settimeout(20)  # the copier must keep reading (a full queue blocks the sender)
        for i in range(2000):
            sender.sendto(json.dumps({"op": "probe", "i": i}).encode(), path)
        sender.sendto(b"not json", path)
    lines = _lines(logdir, 2001)
    assert [r["i"] for r in lines[:2000]] == list(range(2000)), output.read_text()[-2000:]
    assert lines[2000] == {"unparsed_message": "not json"}
    month = logdir / f"actions-{datetime.now(UTC):%Y-%m}.jsonl"
    assert month.stat().st_mode & 0o007 == 0, oct(month.stat().st_mode)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to send as another uid")
def test_records_from_another_uid_are_ignored(copier) -> None:
    path, logdir, output = copier
    send = f"import socket; socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'forged', {path!r})"
    subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3", "-c", send],
                   check=True)  # fmt: skip
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.sendto(b'{"op": "real"}', path)
    lines = _lines(logdir, 1)
    assert [r.get("op") for r in lines] == ["real"]
    assert "ignored a datagram from uid" in output.read_text()
