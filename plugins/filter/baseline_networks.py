"""Filters of roles/baseline for the firewall's address lists (controller side).

ansible.utils' ipaddr needs netaddr, which the controller does not have; Python's own
ipaddress module is enough for what the role asks: is an entry a well-formed address or
network, which family is it, and is an address inside a list of networks.
"""

from __future__ import annotations

import ipaddress
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _network(entry: Any) -> Network:
    """An entry as a network: an address alone is a /32 (IPv4) or /128 (IPv6).
    Host bits set below the prefix (10.0.0.5/24) are an error: nft would silently widen it."""
    if not isinstance(entry, str) or entry != entry.strip() or not entry:
        raise ValueError("not a string without surrounding spaces")
    return ipaddress.ip_network(entry, strict=True)


def baseline_invalid_networks(entries: list[Any]) -> list[str]:
    """The entries that are not an IPv4/IPv6 address or CIDR, each with the reason."""
    bad = []
    for entry in entries or []:
        try:
            _network(entry)
        except (TypeError, ValueError) as exc:
            bad.append(f"{entry!r} ({exc})")
    return bad


def baseline_networks_of_family(entries: list[str], version: int) -> list[str]:
    """The well-formed entries of one IP version (4 or 6), as written."""
    out = []
    for entry in entries or []:
        try:
            if _network(entry).version == int(version):
                out.append(entry)
        except (TypeError, ValueError):
            continue
    return out


def baseline_address_in_networks(address: str, entries: list[str]) -> bool:
    """Whether an address (an IPv4-mapped IPv6 address counts as IPv4) is inside one of the
    well-formed entries."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    for entry in entries or []:
        try:
            if ip in _network(entry):
                return True
        except (TypeError, ValueError):
            continue
    return False


class FilterModule:
    """Ansible's entry point."""

    def filters(self) -> dict[str, Any]:
        return {
            "baseline_invalid_networks": baseline_invalid_networks,
            "baseline_networks_of_family": baseline_networks_of_family,
            "baseline_address_in_networks": baseline_address_in_networks,
        }
