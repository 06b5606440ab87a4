"""The tiers' wiring in the lab inventories (inventory/lab/group_vars/all/tiers.yml and the files
that read it; docs/tiers.md), as Ansible templates it: a database host of its own listens on its
private address for exactly its app hosts, over TLS, behind a firewall opened to them only;
its app hosts connect to it with verify-full; a host that carries every tier keeps loopback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "host"))

from hostvars import HostVars  # noqa: E402  (tests/host/hostvars.py: the variables as a play sees them)


@pytest.fixture(scope="module")
def tiers():
    return {h: HostVars(str(ROOT / "inventory/tiers"), h) for h in ("tier-edge", "tier-db", "lab-backup")}


def test_database_host_serves_its_app_hosts_only(tiers) -> None:
    db, app = tiers["tier-db"], tiers["tier-edge"]
    assert db["postgresql_private_address"] == db["ansible_host"]
    assert db["postgresql_client_networks"] == [f"{app['ansible_host']}/32"]
    assert db["ansible_host"] in db["postgresql_tls_names"]
    assert db["baseline_firewall_public_tcp_ports"] == []
    assert db["baseline_firewall_restricted_tcp_ports"] == [{"port": 5432, "sources": [app["ansible_host"]]}]
    assert db["backup_postgresql_enabled"] is True


def test_app_host_connects_to_the_database_host_with_verify_full(tiers) -> None:
    db, app = tiers["tier-db"], tiers["tier-edge"]
    assert app["umami_database_host"] == db["ansible_host"]
    assert app["umami_database_ca_file"].endswith("/pki/ca.pem")
    # The app's portfolios and limits: in its own database there, over verified TLS.
    assert app["app_database_host"] == db["ansible_host"]
    assert app["app_database_ca_file"].endswith("/pki/ca.pem")
    assert [d["name"] for d in db["postgresql_databases"]] == ["umami", "platform_app"]
    assert db["postgresql_databases"][1]["password"] == app["app_database_password"]
    # Each consumer from its own tier's hosts (tier-edge is in both the app and analytics tiers).
    assert [d["client_networks"] for d in db["postgresql_databases"]] == [[f"{app['ansible_host']}/32"]] * 2
    assert app["postgresql_private_address"] == ""
    assert app["baseline_firewall_public_tcp_ports"] == [80, 443]
    assert app["baseline_firewall_restricted_tcp_ports"] == []
    assert app["backup_postgresql_enabled"] is False


def test_backup_server_lets_every_tier_host_in(tiers) -> None:
    sources = tiers["lab-backup"]["baseline_firewall_restricted_tcp_ports"][0]["sources"]
    assert sorted(sources) == sorted([tiers["tier-edge"]["ansible_host"], tiers["tier-db"]["ansible_host"]])


def test_single_host_lab_keeps_everything_on_loopback() -> None:
    web = HostVars(str(ROOT / "inventory/lab"), "lab-web")
    assert web["umami_database_host"] == "127.0.0.1"
    assert web["umami_database_ca_file"] == ""
    assert web["app_database_host"] == ""  # portfolios as files, limits in SQLite on tmpfs
    assert [d["name"] for d in web["postgresql_databases"]] == ["umami"]
    assert web["postgresql_private_address"] == ""
    assert web["postgresql_client_networks"] == []
    assert web["baseline_firewall_restricted_tcp_ports"] == []
    assert web["backup_postgresql_enabled"] is True
