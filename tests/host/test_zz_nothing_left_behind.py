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
from tiers import MANAGED

# Every host we manage: every tier and the backup servers (tests/host/tiers.py).
HOST_GROUPS = MANAGED


@pytest.mark.claim("infra.platform")
def test_nothing_left_behind(host, evidence):
    name = host.backend.get_hostname()
    # Another host's checks may still hold scratch state here (hoststate.touching): they
    # remove it when they end, and only then is this host's state final.
    held = hoststate.wait_until_untouched(name)
    assert not held, f"other hosts' checks still hold state here after 30 minutes: {held}"
    before = HOST_SNAPSHOTS[name]
    after = hoststate.snapshot(host)
    changes = hoststate.differences(before, after, pids=name not in DISRUPTIVE_RAN)
    evidence("infra.platform", units=hoststate.describe_units(after), changes_by_checks=changes,
             disruptive_checks_ran=name in DISRUPTIVE_RAN)
    assert not changes, "the checks left the host changed:\n  " + "\n  ".join(changes)
