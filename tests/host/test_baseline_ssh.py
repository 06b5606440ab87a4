"""Host baseline, sshd (roles/baseline/tasks/sshd.yml): the effective configuration and
what a client sees. Password and keyboard-interactive logins are refused, a key login
works (a fresh connection, after the firewall is up), weak algorithms are refused.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

DEFAULTS = yaml.safe_load((Path(__file__).resolve().parents[2] / "roles/baseline/defaults/main.yml").read_text())


def setting(hostvars: dict, name: str):
    return hostvars.get(name, DEFAULTS[name])


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
    port = str(setting(hostvars, "baseline_ssh_port"))

    def run(*options: str, identity: bool = True, command: str = "true") -> subprocess.CompletedProcess:
        args = ["ssh", "-p", port, "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "ControlMaster=no", "-o", "ControlPath=none"]
        if identity and key:
            args += ["-i", key, "-o", "IdentitiesOnly=yes"]
        return subprocess.run([*args, *options, f"{user}@{address}", command],
                              capture_output=True, text=True, timeout=60)

    return run


@pytest.mark.parametrize(
    ("keyword", "expected"),
    [
        ("passwordauthentication", "no"),
        ("kbdinteractiveauthentication", "no"),
        ("permitemptypasswords", "no"),
        ("pubkeyauthentication", "yes"),
        ("authenticationmethods", "publickey"),
        ("hostbasedauthentication", "no"),
        ("loglevel", "VERBOSE"),
        ("x11forwarding", "no"),
        ("allowagentforwarding", "no"),
        ("permittunnel", "no"),
        ("permituserenvironment", "no"),
        ("compression", "no"),
    ],
)
def test_fixed_hardening_in_effect(effective, keyword, expected):
    assert effective[keyword] == expected


def test_configured_limits_in_effect(effective, hostvars):
    assert effective["port"] == str(setting(hostvars, "baseline_ssh_port"))
    assert effective["maxauthtries"] == str(setting(hostvars, "baseline_ssh_max_auth_tries"))
    assert effective["maxsessions"] == str(setting(hostvars, "baseline_ssh_max_sessions"))
    assert effective["logingracetime"] == str(setting(hostvars, "baseline_ssh_login_grace_time"))
    assert effective["clientaliveinterval"] == str(setting(hostvars, "baseline_ssh_client_alive_interval"))
    assert effective["clientalivecountmax"] == str(setting(hostvars, "baseline_ssh_client_alive_count_max"))
    assert effective["allowtcpforwarding"] == setting(hostvars, "baseline_ssh_allow_tcp_forwarding")


def test_root_login_policy_in_effect(effective, hostvars):
    wanted = setting(hostvars, "baseline_ssh_permit_root_login")
    # sshd -T prints prohibit-password under its old name on some versions.
    accepted = {"prohibit-password", "without-password"} if wanted == "prohibit-password" else {wanted}
    assert effective["permitrootlogin"] in accepted


def test_allow_lists_in_effect(effective, hostvars):
    users = setting(hostvars, "baseline_ssh_allow_users")
    groups = setting(hostvars, "baseline_ssh_allow_groups")
    assert sorted(effective.get("allowusers", "").split()) == sorted(users)
    assert sorted(effective.get("allowgroups", "").split()) == sorted(groups)


def test_only_modern_algorithms(effective, hostvars):
    for keyword, name in [("kexalgorithms", "baseline_ssh_kex_algorithms"),
                          ("ciphers", "baseline_ssh_ciphers"), ("macs", "baseline_ssh_macs")]:
        offered = effective[keyword].split(",")
        assert offered, keyword
        # Only configured names (those the installed OpenSSH knows), nothing else.
        assert set(offered) <= set(setting(hostvars, name)), (keyword, offered)
    assert not any("sha1" in k or "group14" in k or "nistp" in k for k in effective["kexalgorithms"].split(","))
    assert not any("cbc" in c for c in effective["ciphers"].split(","))
    assert all("etm" in m for m in effective["macs"].split(","))


def test_hardening_file_sorts_first(host):
    """First value wins in sshd_config.d: no other drop-in may come before ours."""
    with host.sudo():
        names = sorted(host.check_output("ls -1 /etc/ssh/sshd_config.d").split())
        include = host.check_output("grep -nE '^[[:space:]]*Include' /etc/ssh/sshd_config || true")
    assert names and names[0] == "00-baseline.conf", names
    assert "sshd_config.d" in include


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


def test_weak_cipher_refused(ssh_cmd):
    r = ssh_cmd("-o", "Ciphers=aes128-cbc")
    assert r.returncode == 255
    assert "no matching cipher" in r.stderr, r.stderr


def test_sshd_config_is_valid(host):
    with host.sudo():
        assert host.run("/usr/sbin/sshd -t").rc == 0
