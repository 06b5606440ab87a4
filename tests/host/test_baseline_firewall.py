"""Host baseline, firewall (roles/baseline/tasks/firewall.yml): seen from the controller.

Claim host.firewall: "Inbound traffic is dropped unless it is HTTP(S) or SSH from the admin
networks." Only SSH, 80 and 443 get through; the app (8000), Umami (3000) and PostgreSQL
(5432) are dropped even when something listens on them (a throwaway listener on 8000 proves
it is the firewall, not a missing service). IPv6 gets the same policy.

A firewall change never locks the controller out (issue 13, finding 8): the loaded SSH
networks hold the controller's own address; a malformed entry or a list without the
controller is refused before anything changes; a ruleset that lets no new SSH connection in
is rolled back by the host itself (disruptive: these rerun Ansible, the last one applies a
lockout ruleset for about a minute).
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
import xml.etree.ElementTree as ET  # noqa: S405 - parses nmap's own output, not untrusted data
from pathlib import Path

import hoststate
import pytest
import yaml
from tiers import MANAGED

from policy import require

pytestmark = pytest.mark.claim("host.firewall")

# The host baseline applies to every host we manage: every tier and the backup servers.
HOST_GROUPS = MANAGED

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = yaml.safe_load((REPO_ROOT / "roles/baseline/defaults/main.yml").read_text())
PRIVATE_PORTS = [8000, 3000, 5432]
LISTENER_PORT = 8000


def setting(hostvars: dict, name: str):
    """A baseline_* value as the role sees it: inventory first, then the role default."""
    return hostvars.get(name, DEFAULTS[name])


def nmap(address: str, ports: list[int], *extra: str) -> dict[int, str]:
    """State of each TCP port as nmap sees it from the controller (open/closed/filtered)."""
    out = subprocess.run(
        ["nmap", "-Pn", "-n", "--max-retries", "3", "--host-timeout", "60s", *extra,
         "-p", ",".join(map(str, ports)), "-oX", "-", address],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout
    return {int(p.get("portid")): p.find("state").get("state") for p in ET.fromstring(out).iter("port")}  # noqa: S314


@pytest.fixture(scope="module")
def address(hostvars) -> str:
    return hostvars.get("ansible_host") or hostvars["inventory_hostname"]


@pytest.fixture(scope="module")
def listener(host):
    """A throwaway HTTP server on 0.0.0.0:8000 inside the host, removed afterwards."""
    with host.sudo():
        busy = host.run(f"ss -Hltn 'sport = :{LISTENER_PORT}'").stdout.strip()
    if busy:
        yield None  # a real service (the app) already listens there: that is proof enough
        return
    with host.sudo():
        pid = host.check_output(
            f"setsid python3 -m http.server {LISTENER_PORT} --bind 0.0.0.0 --directory /var/empty"
            " >/dev/null 2>&1 < /dev/null & echo $!"
        ).strip()
    for _ in range(50):
        with host.sudo():
            if host.run(f"ss -Hltn 'sport = :{LISTENER_PORT}'").stdout.strip():
                break
        time.sleep(0.1)
    yield pid
    with host.sudo():
        host.run(f"kill {pid}")


def test_nftables_enabled_and_ruleset_valid(host, evidence):
    wanted = require("host.firewall")
    assert host.service("nftables").is_enabled
    with host.sudo():
        assert host.run("nft -c -f /etc/nftables.conf").rc == 0
        ruleset = host.check_output("nft list table inet baseline")
    # Replies (the running SSH session) are accepted before any other rule.
    lines = [line.strip() for line in ruleset.splitlines() if line.strip()]
    hook = next(i for i, line in enumerate(lines) if "hook input" in line)
    evidence("host.firewall", input_chain=lines[hook])
    assert f"policy {wanted['input_policy']};" in lines[hook]
    assert lines[hook + 1] == "ct state established,related accept"


def test_listener_answers_on_loopback(host, listener):
    """The probe service works: only the firewall stands between it and the controller."""
    with host.sudo():
        r = host.run(f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {LISTENER_PORT}), 3)\"")
    assert r.rc == 0, r.stderr


def test_only_ssh_and_web_reachable_from_controller(hostvars, address, listener, evidence):
    ssh_port = setting(hostvars, "baseline_ssh_port")
    public = setting(hostvars, "baseline_firewall_public_tcp_ports")
    states = nmap(address, sorted({ssh_port, *public, *PRIVATE_PORTS}))
    evidence("host.firewall", port_states={str(p): s for p, s in states.items()})
    assert states[ssh_port] == "open"
    assert set(public) <= set(require("host.firewall")["public_tcp_ports"]), public
    # 80/443 pass the firewall: open once nginx runs, closed (RST) before; never filtered.
    for port in public:
        assert states[port] in {"open", "closed"}, (port, states)
    # Dropped by the firewall (no RST), although 8000 has a listener during this test.
    for port in PRIVATE_PORTS:
        assert states[port] == "filtered", (port, states)


def test_ipv6_has_the_same_policy(host, hostvars, listener):
    """The inet table covers IPv6: scan the host's link-local address from the bridge."""
    address = hostvars.get("ansible_host") or ""
    route = subprocess.run(["ip", "-o", "route", "get", address], capture_output=True, text=True)
    if route.returncode != 0 or " dev " not in route.stdout or " via " in route.stdout:
        pytest.skip("the host is not on a network directly attached to this controller (no link-local path)")
    dev = route.stdout.split(" dev ")[1].split()[0]
    link_local = host.check_output("ip -6 -o addr show scope link | awk '{print $4}' | head -n1").split("/")[0]
    if not link_local:
        pytest.skip("the host has no IPv6 link-local address")
    ssh_port = setting(hostvars, "baseline_ssh_port")
    public = setting(hostvars, "baseline_firewall_public_tcp_ports")
    states = nmap(f"{link_local}%{dev}", sorted({ssh_port, *public, *PRIVATE_PORTS}), "-6")
    for port in PRIVATE_PORTS:
        assert states[port] == "filtered", (port, states)
    for port in public:
        assert states[port] in {"open", "closed"}, (port, states)
    admin = setting(hostvars, "baseline_firewall_ssh_allowed_networks")
    v6_admin = [ipaddress.ip_network(n) for n in admin if ":" in n]
    if admin and not any(ipaddress.ip_address(link_local) in n for n in v6_admin):
        # SSH is limited to admin networks, none of them IPv6 link-local: dropped.
        assert states[ssh_port] == "filtered", states
    else:
        assert states[ssh_port] == "open", states


def test_reloading_the_firewall_keeps_the_running_session(host):
    """The session running commands survives a reload of the ruleset (atomic swap)."""
    with host.sudo():
        assert host.run("systemctl reload nftables").rc == 0
        assert host.run("true").rc == 0
        assert host.run("nft list table inet baseline").rc == 0


# --- No lockout (issue 13, finding 8) -----------------------------------------------------


def _ssh_connection(host) -> list[str]:
    """SSH_CONNECTION of this check's own session (no sudo: it resets the environment)."""
    return host.check_output("printenv SSH_CONNECTION || true").split()


def _ruleset_state(host) -> str:
    """The file and the loaded rules and SSH sets (not the dynamic per-address counters)."""
    with host.sudo():
        return host.check_output(
            "sha256sum /etc/nftables.conf; nft list chain inet baseline input;"
            " nft list set inet baseline ssh_admin_v4 2>/dev/null; nft list set inet baseline ssh_admin_v6 2>/dev/null;"
            " ls /etc/nftables.conf*"
        )


def _playbook(request, host, variables: dict) -> subprocess.CompletedProcess:
    inventory = request.config.getoption("ansible_inventory")
    cmd = ["ansible-playbook", "-i", inventory, "--limit", host.backend.get_hostname(), "--tags", "baseline_firewall",
           str(REPO_ROOT / "playbooks" / "baseline.yml"), "-e", json.dumps(variables)]
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(REPO_ROOT / "collections"), "ANSIBLE_FORCE_COLOR": "0",
           "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=REPO_ROOT)


def test_controller_address_is_in_the_loaded_ssh_networks(host, hostvars, evidence):
    """The rules the host runs (not the inventory) admit the address the controller comes
    from, as the host sees it."""
    connection = _ssh_connection(host)
    if not connection:
        pytest.skip("this check does not reach the host over SSH (no SSH_CONNECTION)")
    address = ipaddress.ip_address(connection[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    family = "v4" if address.version == 4 else "v6"
    with host.sudo():
        has_set = host.run(f"nft list set inet baseline ssh_admin_{family}").rc == 0
        listed = host.run(f"nft get element inet baseline ssh_admin_{family} '{{ {address} }}'").rc == 0
        chain = host.check_output("nft list chain inet baseline input")
    open_to_all = f"saddr @ssh_admin_{family}" not in chain and "@ssh_admin_" not in chain
    evidence("host.firewall", controller=str(address), ssh_port=connection[3], in_ssh_networks=listed,
             ssh_open_to_all=open_to_all)
    assert listed or (open_to_all and not has_set), f"{address} is not in set ssh_admin_{family}"


@pytest.mark.disruptive(reason="reruns Ansible (firewall tasks) against the host")
@pytest.mark.parametrize(("networks", "message"), [
    (["10.89.77.0/24", "10.89.77.300/32"], "'10.89.77.300/32'"),
    (["192.0.2.0/24"], "which is in none of"),
], ids=["malformed", "without-controller"])
def test_a_lockout_list_is_refused_before_any_change(request, host, networks, message, evidence):
    if not _ssh_connection(host):
        pytest.skip("this check does not reach the host over SSH (no SSH_CONNECTION)")
    before = _ruleset_state(host)
    proc = _playbook(request, host, {"baseline_firewall_ssh_allowed_networks": networks})
    out = " ".join((proc.stdout + proc.stderr).split())
    evidence("host.firewall", refused=networks, rc=proc.returncode)
    assert proc.returncode != 0, out[-2000:]
    assert message in out, out[-2000:]
    assert "Firewall preflight" in out, out[-2000:]
    assert _ruleset_state(host) == before


@pytest.mark.disruptive(reason="applies a ruleset that refuses new SSH connections; the host rolls it back (~1-2 min)")
def test_a_ruleset_that_locks_out_new_connections_is_rolled_back(request, host, evidence):
    """With the preflight's address check switched off, a list without the controller gets
    applied: the new connection Ansible opens through it fails, the host's timer restores the
    previous ruleset, and the play fails, saying so."""
    if not _ssh_connection(host):
        pytest.skip("this check does not reach the host over SSH (no SSH_CONNECTION)")
    before = _ruleset_state(host)
    # Other workers' checks reach this host too (a backup client its server, an edge its app
    # hosts): they wait while it refuses new SSH connections (hoststate.cut_off).
    with hoststate.cut_off(host.backend.get_hostname()):
        started = time.monotonic()
        proc = _playbook(request, host, {
            "baseline_firewall_ssh_allowed_networks": ["192.0.2.0/24"],
            "baseline_firewall_ssh_check_controller": False,
            "baseline_firewall_probe_timeout": 20,
            "baseline_firewall_rollback_seconds": 60,
        })
        seconds = round(time.monotonic() - started)
    out = " ".join((proc.stdout + proc.stderr).split())
    after = _ruleset_state(host)
    with host.sudo():
        timer = host.run("systemctl list-units --all --no-legend 'baseline-firewall-rollback*'").stdout.strip()
        logged = host.run("journalctl -q -t baseline-firewall --since '-10min' --no-pager").stdout
    evidence("host.firewall", lockout_rolled_back=after == before, rc=proc.returncode, seconds=seconds)
    assert proc.returncode != 0, out[-2000:]
    assert "previous ruleset was restored" in out, out[-3000:]
    assert after == before
    assert not timer, timer
    assert "previous ruleset restored" in logged
