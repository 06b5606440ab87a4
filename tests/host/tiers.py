"""Which inventory groups carry which tier (docs/tiers.md), for the check modules' HOST_GROUPS.

A host in `platform` carries every tier; the groups `edge`, `app`, `analytics` and `db` split them across
hosts. tests/host/conftest.py runs a module only on the hosts of its HOST_GROUPS (the other
hosts' checks are deselected, never counted as passed).
"""

from __future__ import annotations

EDGE = ("platform", "edge")
APP = ("platform", "app")
ANALYTICS = ("platform", "analytics")
DB = ("platform", "db")
# Every host that carries a tier of the platform (backups, the action of the host baseline).
TIER_HOSTS = ("platform", "edge", "app", "analytics", "db")
# Every host the toolkit manages: the tiers and the off-site backup servers.
MANAGED = TIER_HOSTS + ("backup_servers",)


def carries(hostvars: dict, tier: tuple[str, ...]) -> bool:
    """Whether the host (its hostvars, with group_names) carries the tier."""
    return bool(set(hostvars.get("group_names", [])) & set(tier))


def db_clients_by_tier(hostvars: dict) -> dict[str, list[str]]:
    """The hosts that use this database host over the network, per tier: every host of `app`
    (the app's database) and of `analytics` (Umami's) that runs no PostgreSQL of its own
    (neither in `platform` nor in `db`). The topology, not a setting: pg_hba.conf must let
    each tier into its own database only, and the firewall exactly these hosts."""
    groups = hostvars.get("groups") or {}
    if hostvars.get("inventory_hostname") not in groups.get("db", []):
        return {"app": [], "analytics": []}
    local = set(groups.get("platform", [])) | set(groups.get("db", []))
    return {tier: [h for h in groups.get(tier, []) if h not in local] for tier in ("app", "analytics")}


def db_client_hosts(hostvars: dict) -> list[str]:
    """Every host that uses this database host over the network (any tier)."""
    by_tier = db_clients_by_tier(hostvars)
    return list(dict.fromkeys(by_tier["app"] + by_tier["analytics"]))


def public_edge(hostvars: dict) -> str:
    """The inventory host whose public sites carry this host's app: the host itself when it
    serves public sites (a `platform` host, an edge), else the first edge (an app host behind
    edges on other hosts, reached only over the private link). Checks that probe the app
    from outside go there."""
    groups = hostvars.get("groups") or {}
    me = hostvars.get("inventory_hostname")
    if hostvars.get("nginx_sites") or me not in groups.get("app", []) or not groups.get("edge"):
        return me
    return groups["edge"][0]


def app_hosts_behind(hostvars: dict) -> list[str]:
    """The app hosts that serve the requests this host's app site receives: the host itself
    on one host; every app host that is not an edge when the app runs behind edges (the
    edge balances across them, so a request's records may be on any of them)."""
    groups = hostvars.get("groups") or {}
    me = hostvars.get("inventory_hostname")
    edges = set(groups.get("edge", [])) | set(groups.get("platform", []))
    remote = [h for h in groups.get("app", []) if h not in edges]
    if me in remote or (me in groups.get("edge", []) and remote):
        return remote
    return [me]


def inventory_host(request, name: str):
    """A testinfra host for another inventory host (checks that look at both ends of a link,
    a backup client and its server). Its commands wait while another worker's check has that
    host cut off (hoststate.cut_off: the firewall lockout check)."""
    import hoststate
    import testinfra

    return hoststate.guard(testinfra.get_host(
        f"ansible://{name}",
        ansible_inventory=request.config.getoption("ansible_inventory"),
        ssh_identity_file=request.config.getoption("ssh_identity_file"),
    ), name)
