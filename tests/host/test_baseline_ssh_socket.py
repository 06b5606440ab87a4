"""Host baseline, SSH under socket activation (Ubuntu 24.04: ssh.socket, as Ubuntu ships it).

On Ubuntu 24.04 sshd is started by ssh.socket, and a systemd generator derives the socket's
port from sshd's Port only at daemon-reload: a role that only edits sshd_config changes
nothing there. roles/baseline/tasks/sshd.yml reloads and restarts the socket and asserts
where it listens. Proven here with the role itself: SSH moves to another port and back, each
time checked over a NEW connection (no reuse of Ansible's master connection), with the
firewall following. Hosts whose sshd is not socket-activated (Debian's ssh.service) skip
with that reason: the branch does not exist there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiers import MANAGED

# The host baseline applies to every host we manage: every tier and the backup servers.
HOST_GROUPS = MANAGED

REPO_ROOT = Path(__file__).resolve().parents[2]
OTHER_PORT = 2222

pytestmark = pytest.mark.claim("host.ssh")


def _play(request, host, *extra: str) -> subprocess.CompletedProcess:
    inventory = request.config.getoption("ansible_inventory")
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
           "ANSIBLE_COLLECTIONS_PATH": str(REPO_ROOT / "collections")}
    identity = request.config.getoption("ssh_identity_file")
    if identity:
        env["ANSIBLE_PRIVATE_KEY_FILE"] = identity
    ansible = Path(sys.executable).with_name("ansible-playbook")
    return subprocess.run(  # noqa: S603
        [str(ansible), "-i", inventory, str(REPO_ROOT / "playbooks" / "baseline.yml"),
         "--limit", host.backend.get_hostname(), "--tags", "baseline_firewall,baseline_ssh", *extra],
        capture_output=True, text=True, env=env, timeout=900, check=False, cwd=REPO_ROOT,
    )


def _ssh(request, user: str, address: str, port: int, command: str = "true") -> subprocess.CompletedProcess:
    """COMMAND over a NEW SSH connection to PORT (never Ansible's or testinfra's master)."""
    identity = request.config.getoption("ssh_identity_file") or os.environ.get("ANSIBLE_PRIVATE_KEY_FILE")
    args = ["ssh", "-p", str(port), "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
            "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
    if identity:
        args += ["-i", identity, "-o", "IdentitiesOnly=yes"]
    return subprocess.run([*args, f"{user}@{address}", command], capture_output=True, text=True,  # noqa: S603
                          timeout=30, check=False)


def _listen(request, user: str, address: str, port: int) -> list[str]:
    out = _ssh(request, user, address, port, "systemctl show -p Listen --value ssh.socket").stdout
    return sorted({line.split()[0] for line in out.splitlines() if line.strip()})


@pytest.mark.disruptive
def test_ssh_port_follows_the_role_under_socket_activation(host, hostvars, request, evidence):
    if host.run("systemctl is-active ssh.socket").stdout.strip() != "active":
        pytest.skip("sshd is not socket-activated on this host (ssh.service): the ssh.socket branch does not apply")
    address = hostvars.get("ansible_host") or hostvars["inventory_hostname"]
    port = int(hostvars["baseline_ssh_port"])
    user = hostvars.get("ansible_user") or "root"
    listen_moved: list[str] = []
    new_on_other = new_on_old = False
    before = _listen(request, user, address, port)
    moved = restored = None
    try:
        moved = _play(request, host, "-e", f"baseline_ssh_port={OTHER_PORT}")
        listen_moved = _listen(request, user, address, OTHER_PORT)
        new_on_other = _ssh(request, user, address, OTHER_PORT).returncode == 0
        new_on_old = _ssh(request, user, address, port).returncode == 0
    finally:
        # Back to the configured port, connecting on whichever port answers now.
        for connect in (OTHER_PORT, port):
            restored = _play(request, host, "-e", f"ansible_port={connect}", "-e", f"baseline_ssh_port={port}")
            if restored.returncode == 0:
                break
        # The firewall keeps the port a play is connected on open while SSH moves (no lockout
        # mid-move): one more run over the configured port closes the other one again.
        if restored is not None and restored.returncode == 0:
            restored = _play(request, host, "-e", f"baseline_ssh_port={port}")
    after = _listen(request, user, address, port)
    evidence("host.ssh", socket_listen_before=before, socket_listen_moved=listen_moved,
             new_connection_on_moved_port=new_on_other, new_connection_on_old_port=new_on_old,
             socket_listen_after=after)
    assert moved.returncode == 0, moved.stdout[-3000:]
    assert all(f":{OTHER_PORT}" in item for item in listen_moved), listen_moved
    assert new_on_other, f"no new SSH connection on {OTHER_PORT} after the move"
    assert not new_on_old, f"port {port} still answers after the move"
    assert restored is not None and restored.returncode == 0, restored.stdout[-3000:]
    assert after == before, f"ssh.socket listens on {after}, before the check it was {before}"
    assert _ssh(request, user, address, port).returncode == 0, f"no new SSH connection on {port} after moving back"
