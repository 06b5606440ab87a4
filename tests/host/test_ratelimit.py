"""Policy: "nginx blocks excessive requests at the network edge (30 req/min general,
60/min API per IP)".

Set in roles/nginx/defaults/main.yml (nginx_ratelimit_*), enforced in
roles/nginx/templates/nginx.conf.j2 (zones) and site.conf.j2 (limit_req per location).
Each burst comes from a fresh loopback address on the host itself, so the count starts
from an empty bucket and the arithmetic is exact.
"""

from __future__ import annotations

import pytest
from edge import admitted_bounds, burst, fresh_source


@pytest.fixture(scope="module")
def site(sites) -> dict:
    assert sites, "nginx_sites is empty"
    return sites[0]


def _check(result: dict, burst_size: int, rate: str) -> None:
    statuses = result["statuses"]
    admitted = sum(1 for s in statuses if s != 429)
    low, high = admitted_bounds(burst_size, rate, result["elapsed"])
    assert low <= admitted <= high, (
        f"{admitted} admitted of {len(statuses)} in {result['elapsed']:.2f}s, "
        f"the token bucket predicts {low}..{high}: {statuses}"
    )
    # Once refused, a client stays refused until the bucket drains: no 200 after a 429
    # except those the elapsed time pays for.
    assert statuses[: burst_size + 1].count(429) == 0


def test_general_zone_admits_burst_plus_rate(host, site, hostvars):
    size = hostvars["nginx_ratelimit_general_burst"]
    result = burst(host, site["server_names"][0], "/.well-known/security.txt", size + 15)
    _check(result, size, hostvars["nginx_ratelimit_general_rate"])


def test_api_zone_admits_burst_plus_rate(host, site, hostvars):
    size = hostvars["nginx_ratelimit_api_burst"]
    prefix = site.get("api_prefix", "/api/")
    result = burst(host, site["server_names"][0], f"{prefix}ratelimit-probe", size + 15)
    _check(result, size, hostvars["nginx_ratelimit_api_rate"])


def test_api_and_general_budgets_are_separate(host, site, hostvars):
    """An API client that used up the API budget can still load pages, and vice versa."""
    source = fresh_source()
    name, prefix = site["server_names"][0], site.get("api_prefix", "/api/")
    api = burst(host, name, f"{prefix}ratelimit-probe", hostvars["nginx_ratelimit_api_burst"] + 5, source)
    assert 429 in api["statuses"]
    page = burst(host, name, "/.well-known/security.txt", 3, source)
    assert page["statuses"] == [200, 200, 200]


def test_limit_is_per_client_address(host, site, hostvars):
    size = hostvars["nginx_ratelimit_general_burst"]
    name = site["server_names"][0]
    first = burst(host, name, "/.well-known/security.txt", size + 5)
    assert 429 in first["statuses"]
    second = burst(host, name, "/.well-known/security.txt", size + 1)
    assert 429 not in second["statuses"], "another address inherited the first one's budget"


def test_forged_x_forwarded_for_does_not_reset_the_count(host, site, hostvars):
    size = hostvars["nginx_ratelimit_general_burst"]
    result = burst(host, site["server_names"][0], "/.well-known/security.txt", size + 15, forge=True)
    _check(result, size, hostvars["nginx_ratelimit_general_rate"])


def test_refusal_is_429_with_retry_after_and_a_short_body(host, site, hostvars):
    size = hostvars["nginx_ratelimit_general_burst"]
    result = burst(host, site["server_names"][0], "/.well-known/security.txt", size + 3)
    refused = result["first_429"]
    assert refused, f"no 429 in {result['statuses']}"
    assert refused["headers"]["retry-after"] == str(hostvars["nginx_ratelimit_retry_after"])
    assert refused["headers"]["content-type"].startswith("application/json")
    assert "too many requests" in refused["body"]
    assert len(refused["body"]) < 200


def test_refusals_are_logged_for_fail2ban(host, site, hostvars):
    result = burst(host, site["server_names"][0], "/.well-known/security.txt",
                   hostvars["nginx_ratelimit_general_burst"] + 3)
    log = host.check_output("tail -n 200 /var/log/nginx/error.log")
    assert "limiting requests, excess:" in log
    assert f"client: {result['source']}" in log
