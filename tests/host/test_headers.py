"""Policy: "All responses include: Strict-Transport-Security, X-Frame-Options (DENY),
X-Content-Type-Options (nosniff), X-XSS-Protection, Referrer-Policy, and
Permissions-Policy" - on errors too, and HSTS for one year (headers.security, tls.hsts).

Set in roles/nginx/defaults/main.yml (nginx_security_headers, nginx_hsts_*), enforced by
roles/nginx/templates/headers.conf.j2 (`add_header ... always`, included in every location).
The allowed values come from policy/claims.yml (policy.header_problems); the inventory only
says which sites exist. Only the 502 check is disruptive (it stops the upstream).
"""

from __future__ import annotations

import re
import time
from urllib.parse import urlsplit

import pytest
from edge import burst
from tiers import EDGE

from policy import header_problems, hsts_max_age, require

# The hosts these checks are about (tests/host/tiers.py).
HOST_GROUPS = EDGE

POLICY_HEADERS = list(require("headers.security")["headers"])
# The statuses each header must be on (policy on_status); 429 and 502 have checks of their own.
ON_STATUS = sorted(set(require("headers.security")["on_status"]) | set(require("tls.hsts")["on_status"]))
PATHS = {200: "/.well-known/security.txt", 404: "/_edge/not-here"}


def _seen(get) -> dict[str, str | None]:
    """The policy's headers as a response carried them (for the evidence)."""
    return {name: get(name) for name in POLICY_HEADERS}


def _record(evidence, name: str, status: int, get) -> None:
    evidence("headers.security", site=name, status=status, headers=_seen(get),
             x_xss_protection=get("X-XSS-Protection"))
    hsts = get("Strict-Transport-Security")
    evidence("tls.hsts", site=name, status=status, hsts_max_age=hsts_max_age(hsts), header=hsts)
    assert (hsts_max_age(hsts) or 0) >= require("tls.hsts")["max_age_min"], f"{name} {status}: HSTS {hsts!r}"


def _assert_policy_headers(get, what: str) -> None:
    problems = header_problems(get)
    assert not problems, f"{what}: {problems}"


@pytest.mark.claim("headers.security", "tls.hsts")
@pytest.mark.parametrize("status", [s for s in ON_STATUS if s in PATHS])
def test_headers_on_success_and_not_found(probe, sites, status, evidence):
    path = PATHS[status]
    for site in sites:
        name = site["server_names"][0]
        resp = probe.request(name, path)
        _record(evidence, name, resp.status, resp.header)
        assert resp.status == status
        _assert_policy_headers(resp.header, f"{name}{path} ({status})")
        for header in POLICY_HEADERS:
            assert len(resp.headers.get_all(header) or []) == 1, f"{name}{path}: {header} sent twice"


@pytest.mark.claim("headers.security", "tls.hsts")
def test_headers_on_rate_limited_responses(host, sites, evidence):
    """A 429 from the edge's rate limit carries every header too (a burst from a fresh
    loopback address on the host: nothing is banned, the budget of real clients is untouched)."""
    for site in sites:
        name = site["server_names"][0]
        result = burst(host, name, "/.well-known/security.txt", require("ratelimit.edge")["general_burst_max"] + 5)
        refused = result["first_429"]
        assert refused, f"{name}: no 429 in {result['statuses']}"
        headers = refused["headers"]  # lower-case names (tests/host/probes/burst.py)

        def get(header: str, headers: dict = headers) -> str | None:
            return headers.get(header.lower())

        _record(evidence, name, 429, get)
        _assert_policy_headers(get, f"{name} 429")


def _upstream_units(host, upstream: str) -> list[str]:
    """The systemd units that answer on an upstream address (socket and service)."""
    address = upstream.removeprefix("http://").rstrip("/")
    units = []
    for line in host.check_output("systemctl list-sockets --all --no-legend --plain").splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] in (address, address.removeprefix("unix:")):
            units.extend(fields[1:])
    port = address.rsplit(":", 1)[-1]
    if not units and port.isdigit():
        # The listening socket's owner (sandboxed services hide their file descriptors even
        # from root, so ss cannot name the process): the running service of that user.
        owner = re.search(r"uid:(\d+)", host.run(f"ss -ltneH 'sport = :{port}'").stdout)
        if owner:
            user = host.check_output(f"getent passwd {owner.group(1)} | cut -d: -f1")
            listing = host.check_output(
                "for u in $(systemctl list-units --type=service --state=running --no-legend --plain"
                " | awk '{print $1}'); do echo \"$u $(systemctl show -p User --value $u)\"; done"
            )
            units.extend(u for u, _, who in (line.partition(" ") for line in listing.splitlines()) if who == user)
    return sorted(set(units))


def _wait_until_served(probe, name: str, seconds: float = 120) -> None:
    """Until the restarted upstream answers again. Its first request may outlast a probe's
    usual 10 s (Umami's first page after a start, on a busy CI host: one timed out there), so
    a slow or refused request counts as "not yet", and only the deadline fails."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if probe.request(name, "/", timeout=30).status not in (502, 503, 504):
                return
        except OSError:  # a timeout, a reset while the upstream starts
            pass
        assert time.monotonic() < deadline, f"{name}: the upstream did not come back within {seconds} s"
        time.sleep(1)


@pytest.mark.claim("headers.security", "tls.hsts")
@pytest.mark.disruptive(reason="stops each site's upstream service to get a 502")
def test_headers_on_bad_gateway(probe, host, sites, evidence):
    """With the upstream down, nginx answers 502 with its own page, still with every header.

    A site whose app runs on other hosts (upstream_servers) is not taken down here: the checks
    of those hosts run at the same time and go through this edge. The error pages are the
    same configuration for every site; the check reports itself skipped, naming that site,
    after the sites it could test have passed."""
    remote = []
    for site in sites:
        name = site["server_names"][0]
        if site.get("upstream_servers"):
            remote.append(name)
            continue
        units = _upstream_units(host, site["upstream"])
        try:
            if units:
                host.check_output(f"systemctl stop {' '.join(units)}")
            resp = probe.request(name, "/bad-gateway-probe")
        finally:
            if units:
                host.run(f"systemctl start {' '.join(units)}")
                _wait_until_served(probe, name)
        _record(evidence, name, resp.status, resp.header)
        assert resp.status == 502, f"{name}: {resp.status} (upstream units stopped: {units})"
        assert b"temporarily unavailable" in resp.body
        _assert_policy_headers(resp.header, f"{name} 502")
    if remote:
        pytest.skip(f"not taken down: {', '.join(remote)} (its app hosts' checks use it meanwhile); "
                    f"{len(sites) - len(remote)} other site(s) passed")


@pytest.mark.claim("headers.security")
def test_api_responses_are_not_cached(probe, sites, evidence):
    wanted = require("headers.security")["api_cache_control"]
    for site in sites:
        name = site["server_names"][0]
        resp = probe.request(name, f"{site.get('api_prefix', '/api/')}cache-probe")
        evidence("headers.security", site=name, api_cache_control=resp.header("Cache-Control"))
        assert resp.header("Cache-Control") == wanted


@pytest.mark.claim("headers.security")
def test_cross_origin_paths_are_embeddable_elsewhere_only_there(probe, sites, evidence):
    for site in sites:
        name = site["server_names"][0]
        for path in site.get("cross_origin_paths", []):
            resp = probe.request(name, path, method="GET" if not path.startswith("/api/") else "OPTIONS")
            evidence("headers.security", site=name, path=path, corp=resp.header("Cross-Origin-Resource-Policy"))
            assert resp.header("Cross-Origin-Resource-Policy") == "cross-origin", f"{name}{path}"
            assert resp.header("Strict-Transport-Security")
        if site.get("cross_origin_paths"):
            other = probe.request(name, "/.well-known/security.txt")
            assert other.header("Cross-Origin-Resource-Policy") == "same-origin"


def _csp_origins(policy: str) -> set[str]:
    """Host names a Content-Security-Policy lets pages load from or send to."""
    hosts = set()
    for directive in policy.split(";"):
        for source in directive.split()[1:]:
            source = source.strip()
            if source.startswith("'") or source.endswith(":") or source in ("*", "self"):
                if source == "*":
                    hosts.add("*")
                continue
            hosts.add(urlsplit(source if "//" in source else f"https://{source}").hostname or source)
    return hosts


@pytest.mark.claim("analytics.self_hosted")
def test_csp_names_no_third_party_origin(probe, sites, evidence):
    """Pages may load scripts from and send data to this host's own sites only: no analytics
    or advertising origin of anyone else is allowed by any site's CSP."""
    assert not require("analytics.self_hosted")["third_party_origins_in_csp"]
    ours = {n for site in sites for n in site["server_names"]}
    for site in sites:
        name = site["server_names"][0]
        csp = probe.request(name, "/.well-known/security.txt").header("Content-Security-Policy") or ""
        third = sorted(_csp_origins(csp) - ours)
        evidence("analytics.self_hosted", site=name, csp_origins=sorted(_csp_origins(csp)), third_party=third)
        assert not third, f"{name}: CSP allows {third}"
