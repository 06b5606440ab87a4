"""Host baseline, firewall (roles/baseline/tasks/firewall.yml): seen from the controller.

Only SSH, 80 and 443 get through; the app (8000), Umami (3000) and PostgreSQL (5432)
are dropped even when something listens on them (a throwaway listener on 8000 proves it
is the firewall, not a missing service). IPv6 gets the same policy.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time
import xml.etree.ElementTree as ET  # noqa: S405 - parses nmap's own output, not untrusted data
from pathlib import Path

import pytest
import yaml

# The host baseline applies to every host we manage: platform hosts and backup servers.
HOST_GROUPS = ("platform", "backup_servers")

DEFAULTS = yaml.safe_load((Path(__file__).resolve().parents[2] / "roles/baseline/defaults/main.yml").read_text())
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


def test_nftables_enabled_and_ruleset_valid(host):
    assert host.service("nftables").is_enabled
    with host.sudo():
        assert host.run("nft -c -f /etc/nftables.conf").rc == 0
        ruleset = host.check_output("nft list table inet baseline")
    assert "policy drop" in ruleset
    # Replies (the running SSH session) are accepted before any other rule.
    lines = [line.strip() for line in ruleset.splitlines() if line.strip()]
    hook = next(i for i, line in enumerate(lines) if "hook input" in line)
    assert "policy drop" in lines[hook]
    assert lines[hook + 1] == "ct state established,related accept"


def test_listener_answers_on_loopback(host, listener):
    """The probe service works: only the firewall stands between it and the controller."""
    with host.sudo():
        r = host.run(f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {LISTENER_PORT}), 3)\"")
    assert r.rc == 0, r.stderr


def test_only_ssh_and_web_reachable_from_controller(hostvars, address, listener):
    ssh_port = setting(hostvars, "baseline_ssh_port")
    public = setting(hostvars, "baseline_firewall_public_tcp_ports")
    states = nmap(address, sorted({ssh_port, *public, *PRIVATE_PORTS}))
    assert states[ssh_port] == "open"
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
