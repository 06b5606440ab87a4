"""Host baseline, automatic security updates (roles/baseline/tasks/updates.yml; host.updates).

unattended-upgrades is switched on and allows the security suite only; the upgrade and
the (optional) reboot stay clear of the nightly backup: the backup timer's time as
measured on the host, and the policy's (backup.schedule), whichever the host has.
"""

from __future__ import annotations

import re

import pytest
from tiers import MANAGED

from policy import require

# The host baseline applies to every host we manage: every tier and the backup servers.
HOST_GROUPS = MANAGED

pytestmark = pytest.mark.claim("host.updates")
GUARD = require("host.updates")["clear_of_backup_minutes"]


def _minutes(calendar: str) -> int:
    """Minutes after midnight of a daily systemd calendar (HH:MM[:SS] in it) or HH:MM."""
    hours, mins = re.search(r"(\d{1,2}):(\d{2})(?::\d{2})?(?!.*\d:\d)", calendar).groups()
    return int(hours) * 60 + int(mins)


def _distance(a: int, b: int) -> int:
    return min((a - b) % 1440, (b - a) % 1440)


@pytest.fixture(scope="module")
def apt_config(host) -> str:
    return host.check_output("apt-config dump")


@pytest.fixture(scope="module")
def backup_times(host) -> dict[str, int]:
    """The backup start the upgrades must stay clear of: the policy's, and the host's timer."""
    times = {"policy": _minutes(require("backup.schedule")["calendar"])}
    timer = host.run("TZ=UTC systemctl show backup.timer -p TimersCalendar --value")
    if timer.rc == 0 and "OnCalendar=" in timer.stdout:
        times["backup.timer"] = _minutes(timer.stdout.split("OnCalendar=", 1)[1].split(";")[0])
    return times


def test_periodic_upgrades_enabled(host, apt_config, evidence):
    installed = host.package("unattended-upgrades").is_installed
    lists = 'APT::Periodic::Update-Package-Lists "1";' in apt_config
    upgrade = 'APT::Periodic::Unattended-Upgrade "1";' in apt_config
    evidence("host.updates", unattended_upgrades=installed and lists and upgrade)
    assert installed and lists and upgrade


def test_only_the_security_suite_is_allowed(apt_config, evidence):
    origins = [line.split(" ", 1)[1].strip('";') for line in apt_config.splitlines()
               if line.startswith(("Unattended-Upgrade::Origins-Pattern::", "Unattended-Upgrade::Allowed-Origins::"))]
    evidence("host.updates", origins=origins)
    assert origins, "no origins configured"
    assert all("security" in line for line in origins) or not require("host.updates")["security_suite_only"], origins


@pytest.mark.disruptive(reason="unattended-upgrade --dry-run downloads packages into the apt cache and writes its log")
def test_dry_run_uses_the_security_suite(host):
    """What unattended-upgrade itself resolves the patterns to, on this release."""
    with host.sudo():
        out = host.run("unattended-upgrade --dry-run --debug 2>&1")
    assert out.rc == 0, out.stdout
    allowed = [line for line in out.stdout.splitlines() if line.startswith("Allowed origins are:")]
    assert allowed, out.stdout[-2000:]
    codename = host.system_info.codename
    assert f"{codename}-security" in allowed[0]
    assert "label=Debian," not in allowed[0] and f"codename={codename}," not in allowed[0]


def test_reboot_window_clear_of_backup(apt_config, backup_times, evidence):
    reboot = re.search(r'Unattended-Upgrade::Automatic-Reboot "(\w+)";', apt_config)
    at = re.search(r'Unattended-Upgrade::Automatic-Reboot-Time "([0-9:]+)";', apt_config)
    enabled = bool(reboot) and reboot.group(1) == "true"
    evidence("host.updates", automatic_reboot=enabled, reboot_time=at.group(1) if at else None)
    if enabled:
        assert at, "automatic reboot without a time"
        for source, minute in backup_times.items():
            distance = _distance(_minutes(at.group(1)), minute)
            assert distance >= GUARD, f"reboot at {at.group(1)} near the backup ({source})"


def test_upgrade_timer_clear_of_backup(host, backup_times, evidence):
    calendar = host.check_output("TZ=UTC systemctl show -p TimersCalendar --value apt-daily-upgrade.timer")
    delay = host.check_output("systemctl show -p RandomizedDelayUSec --value apt-daily-upgrade.timer")
    spread = _spread_minutes(delay)
    start = _minutes(calendar.split("OnCalendar=", 1)[1].split(";")[0])
    evidence("host.updates", upgrade_calendar=calendar.split("OnCalendar=", 1)[1].split(";")[0].strip(),
             upgrade_spread_minutes=spread,
             backup_start_utc={k: f"{v // 60:02d}:{v % 60:02d}" for k, v in backup_times.items()})
    assert host.service("apt-daily-upgrade.timer").is_enabled
    for source, minute in backup_times.items():
        # The window runs from the start to start + spread; both ends stay clear.
        clearance = min(_distance(start, minute), _distance((start + spread) % 1440, minute))
        inside = (minute - start) % 1440 <= spread
        assert not inside and clearance >= GUARD, f"upgrade window {calendar} +{spread} min near the backup ({source})"


def _spread_minutes(value: str) -> int:
    """systemd's RandomizedDelayUSec ("30min", "1h 30min", "0") in minutes."""
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)\s*(h|min|s|ms|us)?", value):
        total += float(number) * {"h": 60, "min": 1, "s": 1 / 60, "ms": 1 / 60000, "us": 1 / 6e7}.get(unit or "us", 0)
    return round(total)
