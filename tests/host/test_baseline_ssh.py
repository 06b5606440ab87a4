"""Host baseline, sshd (roles/baseline/tasks/sshd.yml): the effective configuration and
what a client sees (host.ssh in policy/claims.yml). Password and keyboard-interactive
logins are refused, a key login works (a fresh connection, after the firewall is up), weak
algorithms are refused.

Expected values come from the policy; the inventory gives only what is host-specific (the
port, who may log in). The checks that make a failing login are disruptive: each counts
toward a fail2ban ban of the address they come from (the auditor's).
"""

from __future__ import annotations

import os
import subprocess

import pytest
from tiers import MANAGED

from policy import require

# The host baseline applies to every host we manage: every tier and the backup servers.
HOST_GROUPS = MANAGED

pytestmark = pytest.mark.claim("host.ssh")
POLICY = require("host.ssh")


@pytest.fixture(scope="module")
def effective(host) -> dict[str, str]:
    """`sshd -T`: what sshd really uses, whatever file set it."""
    with host.sudo():
        lines = host.check_output("/usr/sbin/sshd -T").splitlines()
    config: dict[str, str] = {}
    for line in lines:
        key, _, value = line.partition(" ")
        config.setdefault(key, value)
    return config


@pytest.fixture(scope="module")
def ssh_cmd(request, hostvars):
    """An ssh command line from the controller to the host (new connection each time)."""
    key = request.config.getoption("ssh_identity_file", None) or os.environ.get("ANSIBLE_PRIVATE_KEY_FILE")
    address = hostvars.get("ansible_host") or hostvars["inventory_hostname"]
    user = hostvars.get("ansible_user", "root")
    port = str(hostvars["baseline_ssh_port"])

    def run(*options: str, identity: bool = True, command: str = "true") -> subprocess.CompletedProcess:
        args = ["ssh", "-p", port, "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "ControlMaster=no", "-o", "ControlPath=none"]
        if identity and key:
            args += ["-i", key, "-o", "IdentitiesOnly=yes"]
        return subprocess.run([*args, *options, f"{user}@{address}", command],
                              capture_output=True, text=True, timeout=60)

    return run


def test_policy_settings_in_effect(effective, evidence):
    wanted = POLICY["settings"]
    seen = {key: effective.get(key) for key in wanted}
    evidence("host.ssh", sshd_effective=seen)
    wrong = {key: value for key, value in seen.items() if value != wanted[key]}
    assert not wrong, f"sshd -T differs from the policy: {wrong}"


def test_limits_within_policy(effective, hostvars, evidence):
    evidence("host.ssh", port=effective["port"], maxauthtries=effective["maxauthtries"],
             logingracetime=effective["logingracetime"])
    assert effective["port"] == str(hostvars["baseline_ssh_port"])  # host-specific
    assert int(effective["maxauthtries"]) <= POLICY["max_auth_tries_max"]
    assert 0 < int(effective["logingracetime"]) <= POLICY["login_grace_time_max"]


def test_root_login_policy_in_effect(effective, evidence):
    # sshd -T prints prohibit-password under its old name on some versions.
    value = {"without-password": "prohibit-password"}.get(effective["permitrootlogin"], effective["permitrootlogin"])
    evidence("host.ssh", permitrootlogin=value)
    assert value in POLICY["permit_root_login"]


def test_allow_lists_in_effect(effective, hostvars):
    """Who may log in is host-specific: the inventory's lists, exactly."""
    assert sorted(effective.get("allowusers", "").split()) == sorted(hostvars["baseline_ssh_allow_users"])
    assert sorted(effective.get("allowgroups", "").split()) == sorted(hostvars["baseline_ssh_allow_groups"])


def test_only_modern_algorithms(effective, evidence):
    kex, ciphers, macs = (effective[k].split(",") for k in ("kexalgorithms", "ciphers", "macs"))
    evidence("host.ssh", kex=kex, ciphers=ciphers, macs=macs)
    assert kex and ciphers and macs
    assert not [k for k in kex if any(bad in k for bad in POLICY["forbidden_kex"])], kex
    assert not [c for c in ciphers if any(bad in c for bad in POLICY["forbidden_ciphers"])], ciphers
    assert all(POLICY["macs_must_contain"] in m for m in macs), macs
    assert not set(macs) & set(POLICY["forbidden_macs"]), macs


def test_hardening_file_sorts_first(host):
    """First value wins in sshd_config.d: no other drop-in may come before ours."""
    with host.sudo():
        names = sorted(host.check_output("ls -1 /etc/ssh/sshd_config.d").split())
        include = host.check_output("grep -nE '^[[:space:]]*Include' /etc/ssh/sshd_config || true")
    assert names and names[0] == "00-baseline.conf", names
    assert "sshd_config.d" in include


@pytest.mark.disruptive(reason="a refused login counts toward a fail2ban ban of the checking address")
def test_password_login_refused(ssh_cmd):
    r = ssh_cmd("-o", "PreferredAuthentications=password,keyboard-interactive",
                "-o", "PubkeyAuthentication=no", "-o", "NumberOfPasswordPrompts=0", identity=False)
    assert r.returncode == 255
    assert "Permission denied (publickey)" in r.stderr, r.stderr


def test_key_login_works_on_a_new_connection(ssh_cmd):
    """A new connection after the firewall and sshd changes: the rerun path works."""
    r = ssh_cmd("-o", "PreferredAuthentications=publickey", command="echo ok")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


@pytest.mark.disruptive(reason="a failed key exchange counts toward a fail2ban ban (sshd jail, aggressive mode)")
def test_weak_cipher_refused(ssh_cmd):
    r = ssh_cmd("-o", "Ciphers=aes128-cbc")
    assert r.returncode == 255
    assert "no matching cipher" in r.stderr, r.stderr


def test_sshd_config_is_valid(host):
    with host.sudo():
        assert host.run("/usr/sbin/sshd -t").rc == 0
