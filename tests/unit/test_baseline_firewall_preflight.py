"""roles/baseline's firewall preflight (tasks/firewall_preflight.yml), without a host.

Finding 8 of issue 13: a malformed entry of the SSH allow-list was dropped from the ruleset
without a word, and nothing checked that the controller's own address was in the list.
The preflight runs here on the controller (connection local) with SSH_CONNECTION set the
way sshd sets it for a command it runs, so the same task reads it as on a real host.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from preflight_cases import expect, play, run

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "plugins" / "filter"))
from baseline_networks import (  # noqa: E402
    baseline_address_in_networks,
    baseline_invalid_networks,
    baseline_networks_of_family,
)

CONTROLLER = "10.89.77.1 51234 10.89.77.41 22"

# name: (variables, SSH_CONNECTION or None, expected: "PASS" or a phrase of the failure)
CASES = {
    "controller inside the list": ({"baseline_firewall_ssh_allowed_networks": ["10.89.77.0/24"]}, CONTROLLER, "PASS"),
    "controller outside the list": (
        {"baseline_firewall_ssh_allowed_networks": ["192.0.2.0/24"]}, CONTROLLER,
        "connects from 10.89.77.1, which is in none of"),
    "controller outside, check switched off": (
        {"baseline_firewall_ssh_allowed_networks": ["192.0.2.0/24"], "baseline_firewall_ssh_check_controller": False},
        CONTROLLER, "PASS"),
    "empty list: SSH from anywhere": ({"baseline_firewall_ssh_allowed_networks": []}, CONTROLLER, "PASS"),
    "a typo in an address": (
        {"baseline_firewall_ssh_allowed_networks": ["10.89.77.0/24", "10.89.77.300/32"]}, CONTROLLER,
        "baseline_firewall_ssh_allowed_networks: '10.89.77.300/32'"),
    "a host name": ({"baseline_firewall_ssh_allowed_networks": ["10.89.77.0/24", "admin.example.org"]}, CONTROLLER,
                    "'admin.example.org'"),
    "host bits below the prefix": ({"baseline_firewall_ssh_allowed_networks": ["10.89.77.1/24"]}, CONTROLLER,
                                   "'10.89.77.1/24' (10.89.77.1/24 has host bits set)"),
    "a trailing space": (
        {"baseline_firewall_ssh_allowed_networks": ["10.89.77.0/24 "]}, CONTROLLER, "'10.89.77.0/24 '"),
    "a malformed restricted source": (
        {"baseline_firewall_ssh_allowed_networks": ["10.89.77.0/24"],
         "baseline_firewall_restricted_tcp_ports": [{"port": 8443, "sources": ["10.0.0.0/8", "10.0.0.0/33"]}]},
        CONTROLLER, "restricted_tcp_ports sources: '10.0.0.0/33'"),
    "IPv6 controller, IPv4-only list": (
        {"baseline_firewall_ssh_allowed_networks": ["10.89.77.0/24"]}, "2001:db8::5 40000 2001:db8::1 22",
        "connects from 2001:db8::5"),
    "IPv6 controller inside an IPv6 network": (
        {"baseline_firewall_ssh_allowed_networks": ["10.89.77.0/24", "2001:db8::/64"]},
        "2001:db8::5 40000 2001:db8::1 22", "PASS"),
    "not over SSH: not checked, said so": ({"baseline_firewall_ssh_allowed_networks": ["192.0.2.0/24"]}, None, "PASS"),
    "a rollback sooner than the probe gives up": (
        {"baseline_firewall_probe_timeout": 60, "baseline_firewall_rollback_seconds": 60}, CONTROLLER,
        "must be at least"),
}


def _run(tmp: Path, cases: dict[str, tuple], ssh_connection: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_CONNECTION", "SSH_CLIENT")}
    if ssh_connection:
        env["SSH_CONNECTION"] = ssh_connection
    plays = {name: play(i, "baseline", "firewall_preflight.yml", case[0])
             for i, (name, case) in enumerate(cases.items())}
    return run(tmp, plays, env)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, str]:
    """All cases, in one ansible-playbook run per SSH_CONNECTION value."""
    results: dict[str, str] = {}
    by_connection: dict[str | None, dict[str, tuple]] = {}
    for name, case in CASES.items():
        by_connection.setdefault(case[1], {})[name] = case
    for i, (connection, cases) in enumerate(by_connection.items()):
        results |= _run(tmp_path_factory.mktemp(f"fw{i}"), cases, connection)
    return results


@pytest.mark.parametrize("case", list(CASES))
def test_firewall_preflight(outcomes, case) -> None:
    expect(outcomes, case, CASES[case][2])


def test_filters() -> None:
    assert baseline_invalid_networks(["10.0.0.0/8", "::1", "fe80::/10", "192.0.2.7"]) == []
    assert len(baseline_invalid_networks(["10.0.0.0/8", "10.0.0/8", None, ""])) == 3
    entries = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7", "bogus"]
    assert baseline_networks_of_family(entries, 4) == ["10.0.0.0/8", "192.0.2.7"]
    assert baseline_networks_of_family(entries, 6) == ["2001:db8::/32"]
    assert baseline_address_in_networks("10.1.2.3", entries)
    assert baseline_address_in_networks("::ffff:10.1.2.3", entries)  # IPv4-mapped
    assert baseline_address_in_networks("2001:db8::9", entries)
    assert not baseline_address_in_networks("192.0.2.8", entries)
