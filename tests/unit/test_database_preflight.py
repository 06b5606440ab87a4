"""The database preflights of roles/app (tasks/assert.yml) and roles/umami (tasks/preflight.yml),
without a host.

A database on another host must be given by IP address: the services' sandboxes allow that
one address (IPAddressAllow=, which takes no names). A name used to pass the preflight and
then meet the sandbox at the first connection (the release health check failed, late and
unclear). A remote database also needs the CA that verifies its server (sslmode=verify-full).
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
    "app_database_password": "unit-test-only-pw-0123",
}

# name: (role, tasks file, variables, "PASS" or a phrase of the failure)
CASES = {
    "app: no database (files and SQLite)": ("app", "assert.yml", {}, "PASS"),
    "app: loopback without a CA": ("app", "assert.yml", {"app_database_host": "127.0.0.1"}, "PASS"),
    "app: an address with the CA": (
        "app", "assert.yml", {"app_database_host": "10.0.0.5", "app_database_ca_file": "/ca.pem"}, "PASS"),
    "app: an IPv6 address with the CA": (
        "app", "assert.yml", {"app_database_host": "2001:db8::5", "app_database_ca_file": "/ca.pem"}, "PASS"),
    "app: a name": (
        "app", "assert.yml", {"app_database_host": "db.example.org", "app_database_ca_file": "/ca.pem"},
        "must be an IP address"),
    "app: an address without the CA": (
        "app", "assert.yml", {"app_database_host": "10.0.0.5"}, "needs app_database_ca_file"),
    "umami: loopback": ("umami", "preflight.yml", {}, "PASS"),
    "umami: an address with the CA": (
        "umami", "preflight.yml", {"umami_database_host": "10.0.0.5", "umami_database_ca_file": "/ca.pem"},
        "PASS"),
    "umami: a name": (
        "umami", "preflight.yml", {"umami_database_host": "db.example.org", "umami_database_ca_file": "/ca.pem"},
        "must be an IP address"),
    "umami: an address without the CA": (
        "umami", "preflight.yml", {"umami_database_host": "10.0.0.5"}, "umami_database_ca_file must be"),
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, str]:
    plays = {name: play(i, role, tasks, {**(APP_BASE if role == "app" else {}), **variables})
             for i, (name, (role, tasks, variables, _)) in enumerate(CASES.items())}
    return run(tmp_path_factory.mktemp("dbpreflight"), plays)


@pytest.mark.parametrize("case", list(CASES))
def test_database_preflight(outcomes, case) -> None:
    expect(outcomes, case, CASES[case][3])
