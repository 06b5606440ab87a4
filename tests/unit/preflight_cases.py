"""Run a role's preflight tasks on the controller for a table of cases, without a host.

Each case is one play (connection local) that includes the role's tasks file with the
case's variables, then prints "CASE <n> PASS", or, in the rescue, "CASE <n> FAIL: <message>"
with the messages of every failed loop item (as Ansible prints them to the user). All cases
run in one ansible-playbook call.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def play(index: int, role: str, tasks_from: str, variables: dict) -> dict:
    return {
        "name": f"{role} {tasks_from}, case {index}",
        "hosts": "localhost",
        "gather_facts": False,
        "connection": "local",
        "vars": {"ansible_python_interpreter": sys.executable, **variables},
        "tasks": [{
            "name": "Run the preflight",
            "block": [
                {"name": "Include", "ansible.builtin.include_role": {"name": role, "tasks_from": tasks_from}},
                {"name": "Pass", "ansible.builtin.debug": {"msg": f"CASE {index} PASS"}},
            ],
            "rescue": [{"name": "Fail", "ansible.builtin.debug": {
                "msg": f"CASE {index} FAIL: {{{{ ansible_failed_result.msg | default('') }}}} "
                       "{{ ansible_failed_result.results | default([]) | selectattr('failed', 'defined')"
                       " | selectattr('failed') | map(attribute='msg') | join(' ') }}"}}],
        }],
    }


def ansible_playbook(tmp: Path, plays: list[dict], env: dict[str, str] | None = None,
                     timeout: int = 600, args: tuple[str, ...] = ()) -> str:
    """Runs the plays in one ansible-playbook call on the controller (inventory: localhost)
    and returns what it printed, each task result as JSON; fails the test if the run failed.
    env replaces the process environment (default: this one); args go to ansible-playbook
    (e.g. --check)."""
    path = tmp / "play.yml"
    path.write_text(json.dumps(plays))
    env = dict(os.environ if env is None else env) | {
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"), "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(REPO / "collections"),
        "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default",
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"}
    command = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", "localhost,", *args, str(path)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def run(tmp: Path, plays: dict[str, dict], env: dict[str, str] | None = None) -> dict[str, str]:
    """{case name: play} -> {case name: "PASS" or "FAIL: ..."}; env replaces the process
    environment (default: this one)."""
    names = list(plays)
    out = {}
    for line in ansible_playbook(tmp, [plays[n] for n in names], env).splitlines():
        found = re.search(r'"msg": "CASE (\d+) (PASS|FAIL: .*)"$', line.strip())
        if found:
            out[names[int(found.group(1))]] = json.loads(f'"{found.group(2)}"')
    return out


def expect(outcomes: dict[str, str], case: str, expected: str) -> None:
    """The case passed ("PASS"), or failed with a message that contains `expected`."""
    outcome = " ".join(outcomes.get(case, "no result").split())
    if expected == "PASS":
        assert outcome == "PASS", outcome
    else:
        assert outcome.startswith("FAIL"), f"{case}: the preflight let it through"
        assert expected in outcome, outcome
