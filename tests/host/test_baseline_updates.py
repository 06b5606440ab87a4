"""Host baseline, automatic security updates (roles/baseline/tasks/updates.yml).

unattended-upgrades is switched on and allows the security suite only; the upgrade and
the (optional) reboot stay clear of the 03:00 UTC backup.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

DEFAULTS = yaml.safe_load((Path(__file__).resolve().parents[2] / "roles/baseline/defaults/main.yml").read_text())


def setting(hostvars: dict, name: str):
    return hostvars.get(name, DEFAULTS[name])


def minutes(hhmm: str) -> int:
    hours, mins = hhmm.split(":")
    return int(hours) * 60 + int(mins)


@pytest.fixture(scope="module")
def apt_config(host) -> str:
    return host.check_output("apt-config dump")


def test_periodic_upgrades_enabled(host, apt_config):
    assert host.package("unattended-upgrades").is_installed
    assert 'APT::Periodic::Update-Package-Lists "1";' in apt_config
    assert 'APT::Periodic::Unattended-Upgrade "1";' in apt_config


def test_only_the_security_suite_is_allowed(host, apt_config):
    origins = [line for line in apt_config.splitlines()
               if line.startswith(("Unattended-Upgrade::Origins-Pattern::", "Unattended-Upgrade::Allowed-Origins::"))]
    assert origins, "no origins configured"
    assert all("security" in line for line in origins), origins


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


def test_reboot_policy_and_window(apt_config, hostvars):
    reboot = setting(hostvars, "baseline_updates_automatic_reboot")
    assert f'Unattended-Upgrade::Automatic-Reboot "{str(reboot).lower()}";' in apt_config
    time = setting(hostvars, "baseline_updates_reboot_time")
    assert f'Unattended-Upgrade::Automatic-Reboot-Time "{time}";' in apt_config
    backup = minutes(setting(hostvars, "baseline_updates_backup_time"))
    distance = min((minutes(time) - backup) % 1440, (backup - minutes(time)) % 1440)
    assert distance >= setting(hostvars, "baseline_updates_backup_guard_minutes")


def test_upgrade_timer_clear_of_backup(host, hostvars):
    timer = host.check_output("systemctl show -p TimersCalendar apt-daily-upgrade.timer")
    assert f"{setting(hostvars, 'baseline_updates_upgrade_time')}:00 UTC" in timer, timer
    assert host.service("apt-daily-upgrade.timer").is_enabled
