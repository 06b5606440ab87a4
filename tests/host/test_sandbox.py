"""The distribution's units we configure run sandboxed (issue 13, finding 10).

Claim host.sandbox: "Every service we ship or configure runs with the least privilege it
works with; the systemd exposure score of each is measured and bounded." Our own units are
checked beside their roles (test_app_service.py, test_umami.py, test_backups.py,
test_backup_server.py); this module covers the distribution's units that the roles confine
with drop-ins: nginx.service and certbot.service (roles/nginx), the cluster's
postgresql@<version>-main.service (roles/postgresql), fail2ban.service (roles/baseline).
docs/sandboxing.md lists the scores before and after and the reason for what remains.

The score is `systemd-analyze security --offline=no <unit>` ("Overall exposure level"),
bounded per unit by the policy (host.sandbox exposure_max). A unit that is not installed
on a host (a backup server has no nginx or PostgreSQL) is skipped, with the reason. The
disruptive check proves that a sandbox still lets the unit do its job: certbot renews
(dry run against the configured ACME server) as certbot.service itself, deploy hook
included (`nginx -t`, then `systemctl reload nginx`).
"""

from __future__ import annotations

import re

import pytest
from tiers import MANAGED

from policy import require

# fail2ban (the host baseline) runs on every host we manage; the rest on platform hosts.
HOST_GROUPS = MANAGED

# Policy key -> how to find the unit on the host (the PostgreSQL cluster's unit carries
# the major version in its name).
UNITS = ["nginx.service", "certbot.service", "postgresql", "fail2ban.service"]


def _unit_name(host, key: str) -> str | None:
    """The unit the policy key names on this host, or None when it is not installed."""
    with host.sudo():
        if key == "postgresql":
            found = host.run("systemctl list-units --all --plain --no-legend 'postgresql@*.service'").stdout.split()
            return next((w for w in found if re.fullmatch(r"postgresql@[0-9]+-main\.service", w)), None)
        state = host.run(f"systemctl show {key} -p LoadState --value").stdout.strip()
    return key if state == "loaded" else None


def _exposure(host, unit: str) -> float:
    with host.sudo():
        out = host.check_output(f"systemd-analyze security --offline=no --no-pager {unit}")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
    assert match, out[-500:]
    return float(match.group(1))


@pytest.mark.claim("host.sandbox")
@pytest.mark.parametrize("key", UNITS)
def test_exposure_within_policy(host, key, evidence):
    unit = _unit_name(host, key)
    if unit is None:
        pytest.skip(f"{key}: not installed on this host (no such unit), nothing to confine")
    bound = require("host.sandbox")["exposure_max"][key]
    exposure = _exposure(host, unit)
    with host.sudo():
        props = dict(
            line.split("=", 1) for line in host.check_output(
                f"systemctl show {unit} -p User -p ProtectSystem -p NoNewPrivileges -p CapabilityBoundingSet"
            ).splitlines() if "=" in line
        )
    evidence("host.sandbox", unit=unit, exposure=exposure, exposure_max=bound, **props)
    assert exposure <= bound, f"{unit}: exposure {exposure} > {bound} (policy host.sandbox)"


RENEW_DROPIN = "/run/systemd/system/certbot.service.d/zz-test-dry-run.conf"


@pytest.mark.claim("host.sandbox", "tls.certificate")
@pytest.mark.disruptive(reason="runs certbot.service once as a dry run (test certificates, deploy hook reloads nginx)")
def test_certbot_renews_inside_its_sandbox(host, hostvars, evidence):
    """certbot.service, with its sandbox, renews every lineage (a dry run against the
    configured ACME server) and runs the deploy hook, which tests and reloads nginx."""
    if _unit_name(host, "certbot.service") is None or _unit_name(host, "nginx.service") is None:
        pytest.skip("no certbot.service or nginx.service on this host")
    if "--run-deploy-hooks" not in host.run("certbot --help renew").stdout:
        # certbot < 2.6 (Debian 12 ships 2.1) cannot run deploy hooks in a dry run.
        pytest.skip("this certbot has no --run-deploy-hooks: the sandboxed hook cannot be run as a dry run here")
    server = hostvars["nginx_acme_server"]
    if "api.letsencrypt.org" in server:  # a dry run against production goes to staging
        server = "https://acme-staging-v02.api.letsencrypt.org/directory"
    # The unit's own command (`certbot -q renew`) renews nothing before a certificate is due:
    # a runtime drop-in replaces it for one run by a dry run that runs the deploy hooks.
    dropin = (
        "[Service]\nExecStart=\nExecStart=/usr/bin/certbot renew --dry-run --run-deploy-hooks"
        f" --no-random-sleep-on-renew --server {server}\n"
    )
    with host.sudo():
        lineages = int(host.check_output("ls /etc/letsencrypt/renewal/*.conf 2>/dev/null | wc -l"))
        before = host.check_output("systemctl show nginx -p MainPID -p ExecMainStartTimestamp")
        since = host.check_output("date '+%Y-%m-%d %H:%M:%S'")
        try:
            host.check_output(f"mkdir -p {RENEW_DROPIN.rsplit('/', 1)[0]} && printf '%s' '{dropin}' > {RENEW_DROPIN}"
                              " && systemctl daemon-reload")
            run = host.run("systemctl start certbot.service")
            result = host.check_output("systemctl show certbot.service -p Result --value")
            log = host.run(f"journalctl -u certbot.service --since '{since}' --no-pager -o cat").stdout
            reloads = host.run(f"journalctl -u nginx.service --since '{since}' --no-pager -o cat").stdout
            # certbot's debug log of this run (rotated at each start) names the hooks it ran.
            debug = host.run("cat /var/log/letsencrypt/letsencrypt.log").stdout
        finally:
            host.run(f"rm -f {RENEW_DROPIN}; rmdir --ignore-fail-on-non-empty {RENEW_DROPIN.rsplit('/', 1)[0]};"
                     " systemctl daemon-reload; systemctl reset-failed certbot.service")
        after = host.check_output("systemctl show nginx -p MainPID -p ExecMainStartTimestamp")
        active = host.service("nginx").is_running
    evidence("host.sandbox", unit="certbot.service", renewal_dry_run=result, nginx_reloaded="Reload" in reloads)
    assert run.rc == 0 and result == "success", log[-3000:]
    if lineages == 0:
        # An app host behind an edge serves no public site: certbot.timer still runs certbot
        # here, and it must not fail in its sandbox (it did: a missing /var/log/letsencrypt).
        assert "No simulated renewals were attempted" in log, log[-3000:]
        pytest.skip("no certificate on this host (no public site): certbot.service ran in its sandbox and "
                    "succeeded with nothing to renew; the renewal and its deploy hook are checked on the edge")
    # certbot 2.9 ends in success even when a hook fails: read what the hook said.
    assert "all simulated renewals succeeded" in log, log[-3000:]
    assert "reported error" not in log, log[-3000:]
    assert "Running deploy-hook command" in debug, debug[-3000:]
    assert "Unable to" not in log, log[-3000:]
    assert "Reloaded" in reloads or "Reloading" in reloads, reloads[-2000:]
    # Reloaded, not restarted: the same master process serves on.
    assert active and after == before, (before, after)
