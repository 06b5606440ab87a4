"""The example production inventory is complete: every group a playbook targets has a host
there, and it names its domain with a production variable, not a lab one."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "inventory" / "production.example"


def _targeted_patterns() -> set[tuple[str, ...]]:
    """Each play's host patterns, as the groups of each union (`platform:edge` is one union)."""
    patterns = set()
    for playbook in (ROOT / "playbooks").glob("*.yml"):
        for play in yaml.safe_load(playbook.read_text()) or []:
            hosts = play.get("hosts")
            if isinstance(hosts, str) and "{{" not in hosts:
                for pattern in hosts.split(","):
                    groups = tuple(g.strip() for g in pattern.split(":") if g.strip())
                    if groups and groups[0] not in ("all", "localhost"):
                        patterns.add(groups)
    return patterns


def _example_groups() -> dict[str, dict]:
    data = yaml.safe_load((EXAMPLE / "hosts.yml").read_text())
    return {name: group.get("hosts") or {} for name, group in data["all"]["children"].items()}


def test_every_targeted_group_has_a_host_in_the_production_example() -> None:
    """Every play finds a host, and every group a play names exists (an unknown group in a
    pattern makes Ansible warn on every run): the tier groups are there, empty, while
    `platform` carries every tier (docs/tiers.md)."""
    groups = _example_groups()
    patterns = _targeted_patterns()
    assert patterns
    unknown = sorted({g for p in patterns for g in p if g not in groups})
    assert not unknown, f"inventory/production.example/hosts.yml lacks the groups {unknown}"
    empty = sorted(":".join(p) for p in patterns if not any(groups.get(g) for g in p))
    assert not empty, f"inventory/production.example/hosts.yml has no host in: {empty}"


def test_production_example_uses_no_lab_variables() -> None:
    for path in sorted(EXAMPLE.rglob("*.yml")):
        text = path.read_text()
        assert "lab_domain" not in text and "lab_dir" not in text, f"{path.relative_to(ROOT)} uses a lab variable"
