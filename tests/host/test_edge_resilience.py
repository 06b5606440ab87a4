"""A failed step never leaves the host worse than before, and certificates renew.

- Bad input is refused before anything changes (roles/nginx/meta/argument_specs.yml and
  tasks/preflight.yml).
- A configuration nginx rejects is rolled back and never reloaded (tasks/config.yml), so
  the site keeps serving.
- certbot renews through the packaged timer; a failed renewal keeps the current
  certificate and fails visibly.

Everything here that reruns Ansible, talks to the ACME server or forces a renewal is
disruptive (`make verify` only); the timer and the deploy hook are read from the host.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from tiers import EDGE

from policy import require

# The hosts these checks are about (tests/host/tiers.py).
HOST_GROUPS = EDGE

REPO_ROOT = Path(__file__).resolve().parents[2]


def _playbook(request, host, *extra: str) -> subprocess.CompletedProcess:
    inventory = request.config.getoption("ansible_inventory")
    cmd = ["ansible-playbook", "-i", inventory, "--limit", host.backend.get_hostname(),
           str(REPO_ROOT / "playbooks" / "edge.yml"), *extra]
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_COLLECTIONS_PATH": str(REPO_ROOT / "collections")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=REPO_ROOT)


def _config_state(host) -> str:
    return host.check_output("cat /etc/nginx/nginx.conf /etc/nginx/platform/sites/*.conf | sha256sum")


@pytest.mark.claim("tls.versions")
@pytest.mark.disruptive(reason="reruns Ansible against the host")
def test_bad_input_is_refused_before_any_change(request, host):
    before = _config_state(host)
    proc = _playbook(request, host, "-e", json.dumps({"nginx_tls_profile": "old"}))
    out = " ".join((proc.stdout + proc.stderr).split())  # errors go to stderr; callbacks may wrap lines
    assert proc.returncode != 0
    assert "nginx_tls_profile" in out and "must be one of" in out, out[-2000:]
    assert _config_state(host) == before


@pytest.mark.claim("tls.hsts", "ratelimit.edge")
@pytest.mark.disruptive(reason="reruns Ansible against the host")
@pytest.mark.parametrize(("variable", "value", "claim"), [
    ("nginx_hsts_max_age", 300, "tls.hsts"),
    ("nginx_ratelimit_general_rate", "300r/m", "ratelimit.edge"),
])
def test_an_inventory_weakening_a_claim_stops_in_preflight(request, host, variable, value, claim, evidence):
    """Without a named exception (policy_exceptions), the policy preflight refuses it before
    anything changes on the host."""
    before = _config_state(host)
    proc = _playbook(request, host, "-e", json.dumps({variable: value, "policy_exceptions": []}))
    out = " ".join((proc.stdout + proc.stderr).split())
    evidence(claim, preflight_refuses={variable: value, "rc": proc.returncode})
    assert proc.returncode != 0, out[-2000:]
    assert f"policy claim {claim}" in out, out[-2000:]
    assert _config_state(host) == before


@pytest.mark.claim("proxy.edge")
@pytest.mark.disruptive(reason="reruns Ansible against the host")
def test_a_rejected_configuration_is_rolled_back_and_the_site_keeps_serving(request, host, probe, sites):
    name = sites[0]["server_names"][0]
    before = _config_state(host)
    pid = host.check_output("cat /run/nginx.pid")
    # Passes the argument spec (a string) but nginx -t rejects it.
    proc = _playbook(request, host, "-e", json.dumps({"nginx_client_max_body_size": "1x"}))
    out = " ".join((proc.stdout + proc.stderr).split())  # errors go to stderr; callbacks may wrap lines
    assert proc.returncode != 0, out[-2000:]
    assert "rolled back" in out, out[-3000:]
    assert _config_state(host) == before, "the files on disk were left changed"
    assert host.run("nginx -t").rc == 0
    assert host.check_output("cat /run/nginx.pid") == pid
    assert probe.request(name, "/.well-known/security.txt").status == 200


@pytest.mark.claim("tls.certificate")
def test_renewal_timer_is_the_only_scheduler(host, evidence):
    unit = require("tls.certificate")["renewal_timer"]
    timer = host.service(unit)
    cron = host.file("/etc/cron.d/certbot")
    cron_stands_down = not cron.exists or "/run/systemd/system" in cron.content_string
    evidence(
        "tls.certificate",
        renewal_scheduler=f"systemd timer {unit}" if timer.is_enabled and timer.is_running else "none running",
        renewal_next_run=host.run(f"TZ=UTC systemctl show {unit} -p NextElapseUSecRealtime --value").stdout.strip(),
        cron_entry="absent" if not cron.exists else "stands down under systemd" if cron_stands_down else "active",
    )
    assert timer.is_enabled and timer.is_running
    assert cron_stands_down  # Debian's cron entry stands down when systemd runs the timer


@pytest.mark.claim("tls.certificate")
def test_deploy_hook_tests_before_reloading(host):
    hook = host.file("/etc/letsencrypt/renewal-hooks/deploy/50-platform-nginx-reload")
    assert hook.mode == 0o755
    assert "nginx -t" in hook.content_string and "systemctl reload nginx" in hook.content_string


@pytest.mark.claim("tls.certificate")
@pytest.mark.disruptive(reason="asks the ACME server for test certificates (writes under /etc/letsencrypt)")
def test_renewal_dry_run_succeeds(host, sites, hostvars):
    # A dry run goes to Let's Encrypt's staging server unless told otherwise: name the
    # configured ACME server (the lab's Pebble; staging stays the default for production).
    server = hostvars["nginx_acme_server"]
    if "api.letsencrypt.org" in server:
        server = "https://acme-staging-v02.api.letsencrypt.org/directory"
    for site in sites:
        out = host.run(
            f"certbot renew --dry-run --no-random-sleep-on-renew --cert-name {site['name']} --server {server}"
        )
        assert out.rc == 0, out.stdout + out.stderr
        assert "succeeded" in out.stdout + out.stderr


@pytest.mark.claim("tls.certificate")
@pytest.mark.disruptive(reason="forces a renewal that fails")
def test_failed_renewal_keeps_the_current_certificate_and_fails_visibly(host, probe, sites):
    site = sites[0]
    name = site["server_names"][0]
    before = probe.request(name, "/.well-known/security.txt").extra["der"]
    live = host.check_output(f"readlink -f /etc/letsencrypt/live/{site['name']}/cert.pem")
    # An ACME server that does not answer: the renewal must fail, loudly. certbot files an
    # account directory under the dead server's name: it goes again, whatever happens.
    account_dir = "/etc/letsencrypt/accounts/127.0.0.1:9"
    existed = host.file(account_dir).exists
    try:
        out = host.run(f"certbot renew --force-renewal --no-random-sleep-on-renew --cert-name {site['name']} "
                       "--server https://127.0.0.1:9/dir")
    finally:
        if not existed:
            host.run(f"rm -rf -- '{account_dir}'")
    assert out.rc != 0
    assert host.check_output(f"readlink -f /etc/letsencrypt/live/{site['name']}/cert.pem") == live
    assert probe.request(name, "/.well-known/security.txt").extra["der"] == before
