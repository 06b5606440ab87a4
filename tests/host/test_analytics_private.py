"""Policy (ours): "Only the tracker (script and collect endpoint) is public; the analytics
dashboard and its login are reachable from the admin networks only" (issue 13, finding 6),
and failed logins there get the client banned.

Set in roles/nginx/defaults/main.yml (nginx_admin_networks) and the analytics site's
`admin_only` / `public_paths` / `login_paths` in inventory/*/group_vars/all/edge.yml;
enforced by roles/nginx/templates/site.conf.j2 (allow/deny per location) and
roles/baseline/templates/jail.local.j2 (jail nginx-login, filter platform-nginx-login).

"Outside" is a client address that is not in the admin networks: the host's own public
address, used as the source of requests sent on the host itself (it reaches nginx like
any other client on that address, and no admin list names it). Loopback is the SSH
tunnel's path and is always allowed.
"""

from __future__ import annotations

import base64
import json
import shlex
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from attack import missing_policy_headers
from tiers import EDGE

from policy import require

# The hosts these checks are about (tests/host/tiers.py).
HOST_GROUPS = EDGE

_REQUESTS = base64.b64encode((Path(__file__).parent / "probes" / "requests.py").read_bytes()).decode()
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
# Not the tracker: the dashboard, its login, its API and its assets.
PRIVATE = [
    ("GET", "/", ""),
    ("GET", "/login", ""),
    ("GET", "/websites", ""),
    ("GET", "/api/me", ""),
    ("GET", "/api/websites", ""),
    ("GET", "/api/heartbeat", ""),
    ("POST", "/api/auth/login", '{"username":"admin","password":"umami"}'),
    ("GET", "/_next/static/chunks/webpack.js", ""),
    ("GET", "/favicon.ico", ""),
]


def run_on_host(host, address: str, source: str, name: str, requests: list[dict], parallel: bool = False) -> list:
    spec = {"address": address, "source": source, "name": name, "parallel": parallel, "requests": requests}
    encoded = base64.b64encode(json.dumps(spec).encode()).decode()
    return json.loads(host.check_output(f"echo {_REQUESTS} | base64 -d | python3 - {encoded}"))


@pytest.fixture(scope="module")
def analytics(hostvars) -> str:
    """The public name of the Umami site: the nginx_sites entry proxying to Umami's port."""
    port = int(hostvars.get("umami_port", 3000))
    for site in hostvars.get("nginx_sites", []):
        if str(site.get("upstream", "")).rstrip("/").endswith(f":{port}"):
            return site["server_names"][0]
    pytest.fail("no nginx_sites entry proxies to Umami")


@pytest.fixture(scope="module")
def address(hostvars) -> str:
    return hostvars.get("ansible_host") or hostvars["inventory_hostname"]


@pytest.mark.claim("analytics.dashboard_private", "headers.security")
def test_dashboard_is_refused_from_outside(host, analytics, address, evidence):
    statuses = require("analytics.dashboard_private")["other_paths_status_from_outside"]
    requests = [{"method": m, "path": p, "body": b, "headers": {"User-Agent": UA, "Content-Type": "application/json"}}
                for m, p, b in PRIVATE]
    answers = run_on_host(host, address, address, analytics, requests)
    seen = {f"{r['method']} {r['path']}": a["status"] for r, a in zip(requests, answers, strict=True)}
    evidence("analytics.dashboard_private", source=address, statuses=seen)
    problems = []
    for (what, status), answer in zip(seen.items(), answers, strict=True):
        if (status or 444) not in statuses:
            problems.append(f"{what}: HTTP {status} from {address}, expected one of {statuses}")
        elif status is not None:
            problems += [f"{what} ({status}): {p}" for p in
                         missing_policy_headers(answer["headers"], require("headers.security")["headers"])]
    assert not problems, "\n".join(problems)


@pytest.mark.claim("analytics.dashboard_private", "analytics.self_hosted")
def test_tracker_stays_public(host, analytics, address, hostvars, evidence):
    """The tracker script and the collect endpoint answer every visitor."""
    app_origin = f"https://www.{hostvars['lab_domain']}" if "lab_domain" in hostvars else "https://example.org"
    requests = [
        {"method": "GET", "path": "/script.js", "headers": {"User-Agent": UA}},
        {"method": "OPTIONS", "path": "/api/send",
         "headers": {"Origin": app_origin, "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "content-type"}},
    ]
    # Exactly the policy's public paths (analytics.dashboard_private public_paths).
    assert [r["path"] for r in requests] == require("analytics.dashboard_private")["public_paths"]
    answers = run_on_host(host, address, address, analytics, requests)
    seen = {r["path"] + " " + r["method"]: a["status"] for r, a in zip(requests, answers, strict=True)}
    evidence("analytics.dashboard_private", public_paths_from_outside=seen)
    assert answers[0]["status"] == 200 and "javascript" in answers[0]["headers"].get("content-type", ""), seen
    assert answers[1]["status"] is not None and 200 <= answers[1]["status"] < 300, seen


@pytest.mark.claim("analytics.dashboard_private")
def test_dashboard_is_served_through_a_tunnel(host, analytics, evidence):
    """From loopback (an SSH tunnel to the host's port 443) the dashboard answers."""
    answers = run_on_host(host, "127.0.0.1", "127.0.0.1", analytics,
                          [{"method": "GET", "path": "/login", "headers": {"User-Agent": UA}}])
    evidence("analytics.dashboard_private", tunnel_login_status=answers[0]["status"])
    assert answers[0]["status"] == 200, answers[0]


# --- fail2ban sees failed logins ----------------------------------------------------

JAIL = require("analytics.dashboard_private")["fail2ban_jails"][0]


def _f2b(host, *args: str) -> str:
    with host.sudo():
        return host.check_output("fail2ban-client " + " ".join(args))


def _banned(host, jail: str) -> list[str]:
    for line in _f2b(host, "status", jail).splitlines():
        if "Banned IP list:" in line:
            return line.split("Banned IP list:")[1].split()
    return []


def _login_log(host) -> str:
    """The log the login jail reads, as fail2ban itself reports it."""
    out = _f2b(host, "get", JAIL, "logpath")
    paths = [line.split()[-1] for line in out.splitlines() if "/" in line]
    assert paths, out
    return paths[0]


@pytest.mark.claim("analytics.dashboard_private")
@pytest.mark.disruptive(reason="writes a failed login into the log the jail reads")
def test_failed_login_reaches_the_jail(host, analytics, evidence):
    """A real failed login through nginx (from loopback: never banned, always allowed)
    is written to the jail's log in a line its filter counts."""
    jails = require("analytics.dashboard_private")["fail2ban_jails"]
    for jail in jails:
        # A jail without actions detects but never bans (see test_baseline_fail2ban.py).
        assert "nftables" in _f2b(host, "get", jail, "actions"), f"jail {jail} has no ban action"
    log = _login_log(host)
    answers = run_on_host(host, "127.0.0.1", "127.0.0.1", analytics, [{
        "method": "POST", "path": "/api/auth/login", "body": '{"username":"admin","password":"not-the-password"}',
        "headers": {"Content-Type": "application/json", "User-Agent": UA}}])
    time.sleep(1)
    with host.sudo():
        line = host.check_output(f"tail -n 20 {log} | grep '^127.0.0.1 ' | tail -n 1")
        matched = host.run(f"fail2ban-regex {shlex.quote(line)} /etc/fail2ban/filter.d/platform-nginx-login.conf")
    evidence("analytics.dashboard_private", failed_login_status=answers[0]["status"], log_line=line)
    assert answers[0]["status"] == 401, answers[0]
    assert "Lines: 1 lines, 0 ignored, 1 matched" in matched.stdout, matched.stdout


@pytest.mark.claim("analytics.dashboard_private")
@pytest.mark.disruptive
def test_failed_logins_get_the_client_banned(host, evidence):
    """Failed logins, in the log format nginx writes them, from a documentation address
    (RFC 5737, never a real client) ban that address; it is unbanned afterwards."""
    log = _login_log(host)
    client = "192.0.2.78"
    maxretry = int(_f2b(host, "get", JAIL, "maxretry").strip())
    try:
        with host.sudo():
            for _ in range(maxretry + 1):
                stamp = datetime.now(UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
                line = (f'{client} - - [{stamp}] "POST /api/auth/login HTTP/2.0" 401 42 "-" "{UA}" '
                        '"analytics.invalid"')
                host.run_test(f"printf '%s\\n' '{line}' >> {log}")
        deadline = time.monotonic() + 30
        while client not in _banned(host, JAIL) and time.monotonic() < deadline:
            time.sleep(1)
        banned = client in _banned(host, JAIL)
        evidence("analytics.dashboard_private", login_failures_written=maxretry + 1, banned=banned)
        assert banned, "the nginx-login jail did not ban after maxretry failed logins"
    finally:
        with host.sudo():
            host.run(f"fail2ban-client set {JAIL} unbanip {client}")
