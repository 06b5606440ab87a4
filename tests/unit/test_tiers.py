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
    return {h: HostVars(str(ROOT / "inventory/tiers"), h)
            for h in ("tier-edge", "tier-app1", "tier-app2", "tier-db", "lab-backup")}


def _address(tiers, *names) -> list[str]:
    return [tiers[n]["ansible_host"] for n in names]


def test_database_host_serves_its_app_hosts_only(tiers) -> None:
    db = tiers["tier-db"]
    clients = _address(tiers, "tier-app1", "tier-app2", "tier-edge")
    assert db["postgresql_private_address"] == db["ansible_host"]
    assert sorted(db["postgresql_client_networks"]) == sorted(f"{a}/32" for a in clients)
    assert db["ansible_host"] in db["postgresql_tls_names"]
    assert db["baseline_firewall_public_tcp_ports"] == []
    assert [(r["port"], sorted(r["sources"])) for r in db["baseline_firewall_restricted_tcp_ports"]] == [
        (5432, sorted(clients))]
    assert db["backup_postgresql_enabled"] is True


def test_app_hosts_connect_to_the_database_host_with_verify_full(tiers) -> None:
    db, edge = tiers["tier-db"], tiers["tier-edge"]
    # Umami on the edge (the analytics tier), in its database on tier-db over verified TLS.
    assert edge["umami_database_host"] == db["ansible_host"]
    assert edge["umami_database_ca_file"].endswith("/pki/ca.pem")
    assert [d["name"] for d in db["postgresql_databases"]] == ["umami", "platform_app"]
    # Each consumer from its own tier's hosts: Umami's from the edge, the app's from the app hosts.
    assert [sorted(d["client_networks"]) for d in db["postgresql_databases"]] == [
        [f"{edge['ansible_host']}/32"], sorted(f"{a}/32" for a in _address(tiers, "tier-app1", "tier-app2"))]
    for name in ("tier-app1", "tier-app2"):
        app = tiers[name]
        assert app["app_database_host"] == db["ansible_host"]
        assert app["app_database_ca_file"].endswith("/pki/ca.pem")
        assert db["postgresql_databases"][1]["password"] == app["app_database_password"]
        assert app["postgresql_private_address"] == ""
        assert app["backup_postgresql_enabled"] is False


def test_edge_balances_across_the_app_hosts_over_mutual_tls(tiers) -> None:
    edge = tiers["tier-edge"]
    site = {s["name"]: s for s in edge["nginx_sites"]}["app"]
    assert site["upstream"] == ""
    assert site["upstream_servers"] == [f"{a}:8443" for a in _address(tiers, "tier-app1", "tier-app2")]
    assert edge["nginx_private_sites"] == []
    assert edge["baseline_firewall_public_tcp_ports"] == [80, 443]
    assert edge["baseline_firewall_restricted_tcp_ports"] == []


def test_app_hosts_listen_for_the_edge_only(tiers) -> None:
    edge_address = tiers["tier-edge"]["ansible_host"]
    for name in ("tier-app1", "tier-app2"):
        app = tiers[name]
        assert app["nginx_sites"] == []  # no public site
        assert app["nginx_private_sites"] == [{
            "name": "app", "listen": app["ansible_host"], "port": 8443,
            "upstream": "http://unix:/run/platform/app.sock", "allow": [edge_address]}]
        assert app["baseline_firewall_public_tcp_ports"] == []
        assert app["baseline_firewall_restricted_tcp_ports"] == [{"port": 8443, "sources": [edge_address]}]


def test_app_hosts_roll_through_the_edge_that_lists_them(tiers) -> None:
    """Each app host drains from the edge whose upstream lists it, by the very entry the edge
    lists (a mismatch would fail the roll at the drain, the host half taken out)."""
    edge = tiers["tier-edge"]
    listed = {s["name"]: s for s in edge["nginx_sites"]}["app"]["upstream_servers"]
    for name in ("tier-app1", "tier-app2"):
        app = tiers[name]
        assert app["app_drain_edges"] == ["tier-edge"]
        assert app["app_drain_member"] in listed
        assert app["app_drain_member"] == f"{app['ansible_host']}:8443"
    assert edge["app_drain_edges"] == []  # not an app host
    assert tiers["tier-db"]["app_drain_edges"] == []


def test_backup_server_lets_every_tier_host_in(tiers) -> None:
    sources = tiers["lab-backup"]["baseline_firewall_restricted_tcp_ports"][0]["sources"]
    assert sorted(sources) == sorted(_address(tiers, "tier-edge", "tier-app1", "tier-app2", "tier-db"))


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
    assert web["nginx_private_sites"] == []
    assert web["app_drain_edges"] == []  # one host: a release switches in place
    assert {s["name"]: s for s in web["nginx_sites"]}["app"]["upstream"] == "http://unix:/run/platform/app.sock"
