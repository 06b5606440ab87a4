"""The private CA on the controller (roles/pki, tasks/ca.yml), run by Ansible on this machine.

Check mode on a fresh controller (no CA directory yet: a new lab, CI's fresh clone) must
report the CA as a change and leave the disk alone; it once failed there ("The directory
... does not exist"), which broke CI's `molecule check`. A real run makes the CA once, and
later runs, in check mode or not, leave it as it is.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from preflight_cases import ansible_playbook

PASSPHRASE = secrets.token_urlsafe(24)  # made per run: no passphrase in the repository


def converge(tmp: Path, ca_dir: Path, *args: str) -> dict[str, int]:
    """The pki role on localhost with no host certificates (only the CA part runs):
    the play recap's counts."""
    play = {"hosts": "localhost", "gather_facts": False, "connection": "local",
            "vars": {"ansible_python_interpreter": sys.executable, "pki_ca_dir": str(ca_dir),
                     "pki_ca_passphrase": PASSPHRASE, "pki_certificates": []},
            "roles": ["pki"]}
    stdout = ansible_playbook(tmp, [play], timeout=300, args=args)
    recap = re.search(r"^localhost\s*:\s*(.*)$", stdout, re.MULTILINE)
    assert recap, stdout[-2000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", recap.group(1))}


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    return tmp_path / "controller" / "pki"


def test_check_mode_on_a_fresh_controller_reports_the_ca_and_writes_nothing(tmp_path, ca_dir):
    counts = converge(tmp_path, ca_dir, "--check")
    assert counts["failed"] == 0
    assert counts["changed"] >= 1, "check mode must say that the CA would be made"
    assert not ca_dir.parent.exists(), "check mode wrote to the controller"


def test_the_ca_is_made_once_and_then_left_alone(tmp_path, ca_dir):
    first = converge(tmp_path, ca_dir)
    assert first["changed"] >= 2
    assert oct(ca_dir.stat().st_mode & 0o777) == "0o700"
    assert oct((ca_dir / "ca.key").stat().st_mode & 0o777) == "0o600"
    assert b"ENCRYPTED" in (ca_dir / "ca.key").read_bytes(), "the CA key must be encrypted"
    text = subprocess.run(["openssl", "x509", "-in", str(ca_dir / "ca.pem"), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert re.search(r"CA:TRUE, pathlen:0", text), text
    before = {p.name: p.read_bytes() for p in ca_dir.iterdir()}
    assert converge(tmp_path, ca_dir, "--check")["changed"] == 0
    assert converge(tmp_path, ca_dir)["changed"] == 0
    assert {p.name: p.read_bytes() for p in ca_dir.iterdir()} == before
