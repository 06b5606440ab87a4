"""The checks leave each host as they found it (runs last: modules run in name order).

tests/host/conftest.py read the host's state before its first check (tests/host/hoststate.py):
units and their state, fail2ban's bans and jail settings, the nftables rules, and the names
of files where a check could leave one. Anything a check banned, changed, stopped or left
behind, even a check that failed half-way, fails here and is named. When no disruptive check
ran against the host (an audit), its services must not even have restarted.
"""

from __future__ import annotations

import hoststate
import pytest
from conftest import DISRUPTIVE_RAN, HOST_SNAPSHOTS

# Every host we manage: platform hosts and backup servers (tests/host/conftest.py).
HOST_GROUPS = ("platform", "backup_servers")


@pytest.mark.claim("infra.platform")
def test_nothing_left_behind(host, evidence):
    name = host.backend.get_hostname()
    before = HOST_SNAPSHOTS[name]
    after = hoststate.snapshot(host)
    changes = hoststate.differences(before, after, pids=name not in DISRUPTIVE_RAN)
    evidence("infra.platform", units=hoststate.describe_units(after), changes_by_checks=changes,
             disruptive_checks_ran=name in DISRUPTIVE_RAN)
    assert not changes, "the checks left the host changed:\n  " + "\n  ".join(changes)
