"""Policy: "All responses include: Strict-Transport-Security, X-Frame-Options (DENY),
X-Content-Type-Options (nosniff), X-XSS-Protection, Referrer-Policy, and
Permissions-Policy" - on errors too, and HSTS for one year.

Set in roles/nginx/defaults/main.yml (nginx_security_headers, nginx_hsts_*), enforced by
roles/nginx/templates/headers.conf.j2 (`add_header ... always`, included in every location).
"""

from __future__ import annotations

import re
import time

import pytest
from edge import burst

REQUIRED = {
    "Strict-Transport-Security",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "Referrer-Policy",
    "Permissions-Policy",
    "Content-Security-Policy",
    "Cross-Origin-Opener-Policy",
}


def expected_headers(hostvars: dict, site: dict) -> dict[str, str]:
    hsts = f"max-age={hostvars['nginx_hsts_max_age']}"
    if hostvars.get("nginx_hsts_include_subdomains"):
        hsts += "; includeSubDomains"
    if hostvars.get("nginx_hsts_preload"):
        hsts += "; preload"
    headers = {**hostvars["nginx_security_headers"], "Strict-Transport-Security": hsts, **site.get("headers", {})}
    return {k: v for k, v in headers.items() if v is not None}


def assert_headers(headers, expected: dict[str, str], what: str) -> None:
    missing = REQUIRED - {k for k in expected}
    assert not missing, f"the policy's headers are not all configured: {missing}"
    for name, value in expected.items():
        assert headers.get(name) == value, f"{what}: {name} is {headers.get(name)!r}, expected {value!r}"
    xss = headers.get("X-XSS-Protection")
    assert xss in (None, "0"), f"{what}: X-XSS-Protection {xss!r} (deprecated: send 0 or nothing)"


def test_hsts_is_one_year_by_default(hostvars):
    assert hostvars["nginx_hsts_max_age"] >= 31536000


@pytest.mark.parametrize("path,status", [("/.well-known/security.txt", 200), ("/_edge/not-here", 404)])
def test_headers_on_success_and_not_found(probe, sites, hostvars, path, status):
    for site in sites:
        name = site["server_names"][0]
        resp = probe.request(name, path)
        assert resp.status == status
        assert_headers(resp.headers, expected_headers(hostvars, site), f"{name}{path} ({status})")


def test_headers_on_rate_limited_responses(host, sites, hostvars):
    for site in sites:
        name = site["server_names"][0]
        result = burst(host, name, "/.well-known/security.txt", hostvars["nginx_ratelimit_general_burst"] + 3)
        refused = result["first_429"]
        assert refused, result["statuses"]
        lower = {k.lower(): v for k, v in expected_headers(hostvars, site).items()}
        for key, value in lower.items():
            assert refused["headers"].get(key) == value, f"{name} 429: {key}"


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


def _wait_until_served(probe, name: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while probe.request(name, "/").status in (502, 503, 504):
        assert time.monotonic() < deadline, f"{name}: the upstream did not come back"
        time.sleep(1)


@pytest.mark.disruptive
def test_headers_on_bad_gateway(probe, host, sites, hostvars):
    """With the upstream down, nginx answers 502 with its own page, still with every header."""
    for site in sites:
        name = site["server_names"][0]
        units = _upstream_units(host, site["upstream"])
        try:
            if units:
                host.check_output(f"systemctl stop {' '.join(units)}")
            resp = probe.request(name, "/bad-gateway-probe")
        finally:
            if units:
                host.run(f"systemctl start {' '.join(units)}")
                _wait_until_served(probe, name)
        assert resp.status == 502, f"{name}: {resp.status} (upstream units stopped: {units})"
        assert b"temporarily unavailable" in resp.body
        assert_headers(resp.headers, expected_headers(hostvars, site), f"{name} 502")


def test_api_responses_are_not_cached(probe, sites, hostvars):
    for site in sites:
        name = site["server_names"][0]
        resp = probe.request(name, f"{site.get('api_prefix', '/api/')}cache-probe")
        assert resp.header("Cache-Control") == hostvars["nginx_api_cache_control"]


def test_cross_origin_paths_are_embeddable_elsewhere_only_there(probe, sites):
    for site in sites:
        for path in site.get("cross_origin_paths", []):
            name = site["server_names"][0]
            resp = probe.request(name, path, method="GET" if not path.startswith("/api/") else "OPTIONS")
            assert resp.header("Cross-Origin-Resource-Policy") == "cross-origin", f"{name}{path}"
            assert resp.header("Strict-Transport-Security")
        if site.get("cross_origin_paths"):
            other = probe.request(site["server_names"][0], "/.well-known/security.txt")
            assert other.header("Cross-Origin-Resource-Policy") == "same-origin"
