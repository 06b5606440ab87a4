"""Which inventory groups carry which tier (docs/tiers.md), for the check modules' HOST_GROUPS.

A host in `platform` carries every tier; the groups `edge`, `app` and `db` split them across
hosts. tests/host/conftest.py runs a module only on the hosts of its HOST_GROUPS (the other
hosts' checks are deselected, never counted as passed).
"""

from __future__ import annotations

EDGE = ("platform", "edge")
APP = ("platform", "app")
DB = ("platform", "db")
# Every host that carries a tier of the platform (backups, the action of the host baseline).
TIER_HOSTS = ("platform", "edge", "app", "db")
# Every host the toolkit manages: the tiers and the off-site backup servers.
MANAGED = TIER_HOSTS + ("backup_servers",)


def carries(hostvars: dict, tier: tuple[str, ...]) -> bool:
    """Whether the host (its hostvars, with group_names) carries the tier."""
    return bool(set(hostvars.get("group_names", [])) & set(tier))


def db_client_hosts(hostvars: dict) -> list[str]:
    """The app hosts that use this database host over the network: every host of `app` that
    runs no PostgreSQL of its own (neither in `platform` nor in `db`). The topology, not a
    setting: pg_hba.conf and the firewall must let in exactly these and nobody else."""
    groups = hostvars.get("groups") or {}
    if hostvars.get("inventory_hostname") not in groups.get("db", []):
        return []
    local = set(groups.get("platform", [])) | set(groups.get("db", []))
    return [h for h in groups.get("app", []) if h not in local]


def inventory_host(request, name: str):
    """A testinfra host for another inventory host (checks that look at both ends of a link)."""
    import testinfra

    return testinfra.get_host(
        f"ansible://{name}",
        ansible_inventory=request.config.getoption("ansible_inventory"),
        ssh_identity_file=request.config.getoption("ssh_identity_file"),
    )
