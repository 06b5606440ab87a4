"""Host baseline, time, journald, sysctl and file modes (roles/baseline/tasks/{time,journald,
sysctl,permissions}.yml), and what the host runs (host.time_and_logs, host.kernel,
host.file_modes, infra.platform).

In containers the clock and most kernel parameters belong to the container host: those
checks are skipped with the reason, never passed silently. Every check here only reads.
"""

from __future__ import annotations

import pytest
from tiers import MANAGED

from policy import require

# The host baseline applies to every host we manage: every tier and the backup servers.
HOST_GROUPS = MANAGED


@pytest.fixture(scope="module")
def in_container(host) -> bool:
    return host.run("systemd-detect-virt --container").rc == 0


@pytest.mark.claim("host.time_and_logs")
def test_timezone_is_utc(host, evidence):
    zone = host.check_output("timedatectl show -p Timezone --value")
    evidence("host.time_and_logs", timezone=zone)
    assert zone == require("host.time_and_logs")["timezone"]


@pytest.mark.claim("host.time_and_logs")
def test_time_is_synchronised(host, in_container, evidence):
    enabled = host.service("systemd-timesyncd").is_enabled
    if in_container:
        evidence("host.time_and_logs", timesyncd_enabled=enabled, ntp="container: the container host owns the clock")
        assert enabled
        pytest.skip("container: systemd-timesyncd has ConditionVirtualization=!container; the host owns the clock")
    ntp = host.check_output("timedatectl show -p NTPSynchronized --value")
    evidence("host.time_and_logs", timesyncd_enabled=enabled, ntp_synchronised=ntp)
    assert enabled and host.service("systemd-timesyncd").is_running
    assert ntp == "yes"


@pytest.mark.claim("host.time_and_logs")
def test_journal_is_persistent_and_capped(host, evidence):
    config = host.check_output("systemd-analyze cat-config systemd/journald.conf")
    settings = dict(line.split("=", 1) for line in config.splitlines() if "=" in line and not line.startswith("#"))
    with host.sudo():
        usage = host.check_output("journalctl --disk-usage")
    evidence("host.time_and_logs", journal_storage=settings.get("Storage"),
             journal_max_use=settings.get("SystemMaxUse"), journal_usage=usage)
    assert settings.get("Storage") == require("host.time_and_logs")["journal_storage"]
    capped = bool(settings.get("SystemMaxUse"))
    assert capped or not require("host.time_and_logs")["journal_size_capped"], "the journal has no size cap"
    assert host.file("/var/log/journal").is_directory


@pytest.mark.claim("host.kernel")
def test_sysctl_settings(host, in_container, evidence):
    wanted = require("host.kernel")["sysctl"]
    # One call for all (`sysctl KEY...` prints "key = value"; unknown keys are left out).
    out = host.run("sysctl " + " ".join(wanted)).stdout
    applied = {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in out.splitlines()) if v}
    applied = {key: applied.get(key) for key in wanted}
    wrong = {key: value for key, value in applied.items() if value != str(wanted[key])}
    written = host.file("/etc/sysctl.d/60-baseline.conf").exists
    evidence("host.kernel", settings=len(wanted), not_as_required=wrong, file_written=written)
    assert written
    if in_container:
        pytest.skip(f"container: /proc/sys belongs to the container host; {len(wrong)} of {len(wanted)} "
                    "settings differ there (written to /etc/sysctl.d, applied on a real host)")
    assert not wrong, wrong


@pytest.mark.claim("host.file_modes")
def test_sensitive_files_are_root_only(host, evidence):
    """Each path of the policy that the host has: owned by root, no permission bit beyond the
    policy's widest mode (a path the host lacks is reported, not failed)."""
    wanted = require("host.file_modes")
    out = host.run("stat -c '%n %a %U' " + " ".join(wanted["max_modes"]) + " 2>/dev/null").stdout
    found = {path: (mode, owner) for path, mode, owner in (line.split() for line in out.splitlines())}
    measured = {path: f"{int(found[path][0], 8):04o} {found[path][1]}" if path in found else "absent"
                for path in wanted["max_modes"]}  # fmt: skip
    def too_wide(path: str, most: str) -> bool:
        mode, owner = found[path]
        return bool(int(mode, 8) & ~int(most, 8)) or owner != wanted["owner"]

    wider = {path: f"{measured[path]} (at most {most} {wanted['owner']})"
             for path, most in wanted["max_modes"].items() if path in found and too_wide(path, most)}  # fmt: skip
    evidence("host.file_modes", modes=measured, wider_than_policy=wider)
    assert any(path in found for path in wanted["max_modes"]), f"none of {list(wanted['max_modes'])} exists"
    assert not wider, wider


@pytest.mark.claim("infra.platform")
def test_os_is_supported(host, evidence):
    release = dict(
        line.split("=", 1) for line in host.check_output("cat /etc/os-release").splitlines() if "=" in line
    )
    release = {k: v.strip('"') for k, v in release.items()}
    name = f"{release.get('NAME', '?').split()[0]} {release.get('VERSION_ID', '?')}"
    os_label = name + (" LTS" if "LTS" in release.get("VERSION", "") else "")
    evidence("infra.platform", os=os_label, kernel=host.check_output("uname -r"),
             systemd=host.check_output("systemctl --version").splitlines()[0])
    assert name in require("infra.platform")["os_supported"], name
