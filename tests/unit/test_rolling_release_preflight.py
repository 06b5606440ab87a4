"""The rolling-release settings of roles/app (tasks/assert.yml), without a host.

An app host behind edges on other hosts names them (app_drain_edges, inventory names) and
its private listener as they list it (app_drain_member, ADDRESS:PORT). A wrong value must
stop the play before anything changes: found only at the drain, it would fail a release
half-way, with the host already switched on one edge and not on another.
"""

from __future__ import annotations

import pytest
from preflight_cases import expect, play, run

# Test values, not secrets: the preflight only measures their shape.
APP_BASE = {
    "app_platform_features": True,
    "app_module": "platform_app.main:app",
    "app_jwt_secret": "unit-test-only-jwt-key-0123456789abcdef",
    "app_users": [{"name": "alice", "password_hash": "$2b$12$" + "a" * 53}],
}

# The unit inventory is "localhost,": the only edge it knows is localhost.
CASES = {
    "no edge elsewhere (the default)": ({}, "PASS"),
    "an edge and an IPv4 listener": ({"app_drain_edges": ["localhost"], "app_drain_member": "10.0.0.61:8443"}, "PASS"),
    "an edge and an IPv6 listener": (
        {"app_drain_edges": ["localhost"], "app_drain_member": "[2001:db8::61]:8443"}, "PASS"),
    "an edge that is not in the inventory": (
        {"app_drain_edges": ["localhost", "edge9"], "app_drain_member": "10.0.0.61:8443"}, "(edge9)"),
    "an edge without the listener": ({"app_drain_edges": ["localhost"]}, "got ''"),
    "the listener by name": (
        {"app_drain_edges": ["localhost"], "app_drain_member": "app1.example.org:8443"}, "an IP address"),
    "the listener without a port": (
        {"app_drain_edges": ["localhost"], "app_drain_member": "10.0.0.61"}, "ADDRESS:PORT"),
    "a drain timeout of 0": (
        {"app_drain_edges": ["localhost"], "app_drain_member": "10.0.0.61:8443", "app_drain_timeout": 0},
        "1-600 seconds"),
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, str]:
    plays = {name: play(i, "app", "assert.yml", {**APP_BASE, **variables})
             for i, (name, (variables, _)) in enumerate(CASES.items())}
    return run(tmp_path_factory.mktemp("rollpreflight"), plays)


@pytest.mark.parametrize("case", list(CASES))
def test_rolling_release_preflight(outcomes, case) -> None:
    expect(outcomes, case, CASES[case][1])
