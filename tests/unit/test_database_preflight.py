"""The database preflights of roles/app (tasks/assert.yml) and roles/umami (tasks/preflight.yml),
without a host.

A database on another host must be given by IP address: the services' sandboxes allow that
one address (IPAddressAllow=, which takes no names). A name used to pass the preflight and
then meet the sandbox at the first connection (the release health check failed, late and
unclear). A remote database also needs the CA that verifies its server (sslmode=verify-full).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

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


def _play(index: int, role: str, tasks: str, variables: dict) -> dict:
    base = APP_BASE if role == "app" else {}
    return {
        "name": f"Database preflight, case {index}",
        "hosts": "localhost",
        "gather_facts": False,
        "connection": "local",
        "vars": {"ansible_python_interpreter": sys.executable, **base, **variables},
        "tasks": [{
            "name": "Run the preflight",
            "block": [
                {"name": "Include", "ansible.builtin.include_role": {"name": role, "tasks_from": tasks}},
                {"name": "Pass", "ansible.builtin.debug": {"msg": f"CASE {index} PASS"}},
            ],
            "rescue": [{"name": "Fail", "ansible.builtin.debug": {
                "msg": f"CASE {index} FAIL: {{{{ ansible_failed_result.msg | default('') }}}}"}}],
        }],
    }


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, str]:
    """Every case in one ansible-playbook run."""
    tmp = tmp_path_factory.mktemp("dbpreflight")
    names = list(CASES)
    play = tmp / "play.yml"
    play.write_text(json.dumps([_play(i, *CASES[n][:3]) for i, n in enumerate(names)]))
    env = os.environ | {
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"), "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default",
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"}
    proc = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-i", "localhost,", str(play)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=tmp)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = {}
    for line in proc.stdout.splitlines():
        found = re.search(r'"msg": "CASE (\d+) (PASS|FAIL: .*)"$', line.strip())
        if found:
            out[names[int(found.group(1))]] = json.loads(f'"{found.group(2)}"')
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_database_preflight(outcomes, case) -> None:
    outcome = " ".join(outcomes.get(case, "no result").split())
    expected = CASES[case][3]
    if expected == "PASS":
        assert outcome == "PASS", outcome
    else:
        assert outcome.startswith("FAIL"), f"{case}: the preflight let it through"
        assert expected in outcome, outcome
