"""The lab's address plan (lab/hosts) is consistent with the inventories that use it."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _plan() -> dict[str, tuple[str, list[str]]]:
    plan = {}
    for line in (ROOT / "lab" / "hosts").read_text().splitlines():
        line = line.split("#", 1)[0].split()
        if line:
            plan[line[1]] = (line[0], line[2:])
    return plan


def test_addresses_are_unique_and_inside_the_lab_subnet() -> None:
    plan = _plan()
    addresses = [ip for ip, _ in plan.values()]
    assert len(addresses) == len(set(addresses))
    subnet = ipaddress.ip_network("10.89.77.0/24")
    assert all(ipaddress.ip_address(ip) in subnet for ip in addresses)


def test_inventory_hosts_use_the_planned_addresses_and_names() -> None:
    plan = _plan()
    sources = [ROOT / "inventory/lab/hosts.yml", ROOT / "inventory/tiers/hosts.yml",
               *sorted((ROOT / "molecule").glob("*/inventory/host_vars/*.yml"))]
    seen = 0
    for src in sources:
        data = yaml.safe_load(src.read_text())
        public: set[str] = set()  # hosts that serve the public sites (platform, edge)
        if "host_vars" in src.parts:
            hosts = {src.stem: data}
            # The scenario's platforms say which hosts serve the public sites (an app host
            # behind an edge names its edge's domain, not names of its own).
            scenario = yaml.safe_load((src.parents[2] / "molecule.yml").read_text())
            public = {p["name"] for p in scenario["platforms"] if {"platform", "edge"} & set(p.get("groups", []))}
        else:
            # A host listed again in a second group (a tier it also carries) has no variables there.
            hosts = {name: hv for group in data["all"]["children"].values()
                     for name, hv in (group["hosts"] or {}).items() if hv is not None}
            public = {name for group in ("platform", "edge")
                      for name in (data["all"]["children"].get(group, {}).get("hosts") or {})}
        shared = (data.get("all") or {}).get("vars", {}).get("lab_domain") if "host_vars" not in src.parts else None
        for name, hv in hosts.items():
            ip, names = plan[name]
            assert hv["ansible_host"] == ip, f"{src}: {name} at {hv['ansible_host']}, lab/hosts says {ip}"
            domain = (hv.get("lab_domain") or shared) if name in public else None
            if domain:
                assert f"www.{domain}" in names, f"{name}: www.{domain} missing from lab/hosts"
            seen += 1
    assert seen >= 3
