"""Policy: "nginx blocks excessive requests at the network edge (30 req/min general,
60/min API per IP)" (ratelimit.edge).

Set in roles/nginx/defaults/main.yml (nginx_ratelimit_*), enforced in
roles/nginx/templates/nginx.conf.j2 (zones) and site.conf.j2 (limit_req per location).
Each burst comes from a fresh loopback address on the host itself, so the count starts from
an empty bucket, no real client's budget is touched and nothing is banned (fail2ban never
bans loopback). The bounds come from the policy (the most a rate and a burst may admit),
never from the inventory: a host configured for 300 req/min fails here.
"""

from __future__ import annotations

import math

import pytest
from edge import burst, fresh_source

from policy import require

pytestmark = pytest.mark.claim("ratelimit.edge")
POLICY = require("ratelimit.edge")
PAGE = "/.well-known/security.txt"


@pytest.fixture(scope="module")
def site(sites) -> dict:
    assert sites, "nginx_sites is empty"
    return sites[0]


def _measure(result: dict, burst_max: int, per_minute: int) -> dict:
    """What a burst shows against the policy's token bucket (nginx limit_req, nodelay): at
    most burst + 1 at once, then one request per 60/rate seconds."""
    statuses, times = result["statuses"], result["times"]
    admitted = sum(1 for s in statuses if s != 429)
    first = statuses.index(429) if 429 in statuses else len(statuses)
    after = sum(1 for s in statuses[first:] if s != 429)
    refill_window = times[-1] - times[first] if first < len(statuses) else 0.0
    return {
        "sent": len(statuses),
        "admitted": admitted,
        "admitted_before_first_429": first,
        "admitted_after_first_429": after,
        "elapsed_s": round(result["elapsed"], 2),
        "policy_allows_at_most": burst_max + 1 + math.ceil(result["elapsed"] * per_minute / 60),
        "policy_allows_after_first_429": math.ceil(refill_window * per_minute / 60) + 1,
        "first_429_status": 429 if 429 in statuses else None,
    }


def _assert_within_policy(m: dict) -> None:
    assert m["first_429_status"] == POLICY["status"], f"never refused: {m}"
    assert m["admitted"] <= m["policy_allows_at_most"], f"more admitted than the policy's rate and burst allow: {m}"
    refill = m["admitted_after_first_429"] <= m["policy_allows_after_first_429"]
    assert refill, f"refills faster than the policy's rate: {m}"


def test_general_zone_within_policy(host, site, evidence):
    result = burst(host, site["server_names"][0], PAGE, POLICY["general_burst_max"] + 15)
    m = _measure(result, POLICY["general_burst_max"], POLICY["general_per_minute_max"])
    evidence("ratelimit.edge", zone="general", per_minute_max=POLICY["general_per_minute_max"], **m)
    _assert_within_policy(m)


def test_api_zone_within_policy(host, site, evidence):
    prefix = site.get("api_prefix", "/api/")
    result = burst(host, site["server_names"][0], f"{prefix}ratelimit-probe", POLICY["api_burst_max"] + 15)
    m = _measure(result, POLICY["api_burst_max"], POLICY["api_per_minute_max"])
    evidence("ratelimit.edge", zone="api", per_minute_max=POLICY["api_per_minute_max"], **m)
    _assert_within_policy(m)


def test_api_and_general_budgets_are_separate(host, site, evidence):
    """An API client that used up the API budget can still load pages."""
    source = fresh_source()
    name, prefix = site["server_names"][0], site.get("api_prefix", "/api/")
    api = burst(host, name, f"{prefix}ratelimit-probe", POLICY["api_burst_max"] + 5, source)
    page = burst(host, name, PAGE, 3, source)
    evidence("ratelimit.edge", separate_budgets={"api_burst": api["statuses"], "then_pages": page["statuses"]})
    assert 429 in api["statuses"]
    assert page["statuses"] == [200, 200, 200]


def test_limit_is_per_client_address(host, site, evidence):
    name = site["server_names"][0]
    first = burst(host, name, PAGE, POLICY["general_burst_max"] + 5)
    assert 429 in first["statuses"], first["statuses"]
    # As many as the first address got at once: a second address gets them all.
    took = first["statuses"].index(429)
    second = burst(host, name, PAGE, took)
    evidence("ratelimit.edge", per=POLICY["per"], first_address_admitted_at_once=took,
             second_address=second["statuses"])
    assert 429 not in second["statuses"], "another address inherited the first one's budget"


def test_forged_x_forwarded_for_does_not_reset_the_count(host, site, evidence):
    assert POLICY["ignores_forwarded_for"]
    result = burst(host, site["server_names"][0], PAGE, POLICY["general_burst_max"] + 15, forge=True)
    m = _measure(result, POLICY["general_burst_max"], POLICY["general_per_minute_max"])
    evidence("ratelimit.edge", zone="general, forged X-Forwarded-For", **m)
    _assert_within_policy(m)


def test_refusal_is_429_with_retry_after_and_a_short_body(host, site, evidence):
    result = burst(host, site["server_names"][0], PAGE, POLICY["general_burst_max"] + 5)
    refused = result["first_429"]
    assert refused, f"no {POLICY['status']} in {result['statuses']}"
    retry = refused["headers"].get("retry-after", "")
    evidence("ratelimit.edge", retry_after=retry, content_type=refused["headers"].get("content-type"),
             body_bytes=len(refused["body"]))
    assert retry.isdigit() and int(retry) > 0 or not POLICY["retry_after"], f"Retry-After {retry!r}"
    assert refused["headers"]["content-type"].startswith("application/json")
    assert "too many requests" in refused["body"]
    assert len(refused["body"]) < 200


def test_refusals_are_logged_for_fail2ban(host, site, evidence):
    result = burst(host, site["server_names"][0], PAGE, POLICY["general_burst_max"] + 5)
    log = host.check_output("tail -n 300 /var/log/nginx/error.log")
    logged = f"client: {result['source']}" in log and "limiting requests, excess:" in log
    evidence("ratelimit.edge", refusals_logged=logged)
    assert logged
