"""The example production inventory is complete: every group a playbook targets has a host
there, and it names its domain with a production variable, not a lab one."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "inventory" / "production.example"


def _targeted_groups() -> set[str]:
    groups = set()
    for playbook in (ROOT / "playbooks").glob("*.yml"):
        for play in yaml.safe_load(playbook.read_text()) or []:
            hosts = play.get("hosts")
            if isinstance(hosts, str) and "{{" not in hosts:
                groups.update(h.strip() for h in hosts.split(",") if h.strip() not in ("all", "localhost"))
    return groups


def _example_groups() -> dict[str, dict]:
    data = yaml.safe_load((EXAMPLE / "hosts.yml").read_text())
    return {name: group.get("hosts") or {} for name, group in data["all"]["children"].items()}


def test_every_targeted_group_has_a_host_in_the_production_example() -> None:
    groups = _example_groups()
    missing = sorted(g for g in _targeted_groups() if not groups.get(g))
    assert not missing, f"inventory/production.example/hosts.yml has no host in: {missing}"


def test_production_example_uses_no_lab_variables() -> None:
    for path in sorted(EXAMPLE.rglob("*.yml")):
        text = path.read_text()
        assert "lab_domain" not in text and "lab_dir" not in text, f"{path.relative_to(ROOT)} uses a lab variable"
