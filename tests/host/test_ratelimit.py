"""Policy: "nginx blocks excessive requests at the network edge (30 req/min general,
60/min API per IP)" (ratelimit.edge).

Set in roles/nginx/defaults/main.yml (nginx_ratelimit_*), enforced in
roles/nginx/templates/nginx.conf.j2 (zones) and site.conf.j2 (limit_req per location).
Each burst comes from a fresh loopback address on the host itself, so the count starts from
an empty bucket, no real client's budget is touched and nothing is banned (fail2ban never
bans loopback). The bounds come from the policy (the most a rate and a burst may admit),
never from the inventory: a host configured for 300 req/min fails here. Two phases per zone:
a burst (what is admitted at once: burst + 1), then the same address keeps asking for
SUSTAIN seconds (what the bucket refills: the rate); the policy bounds both.
"""

from __future__ import annotations

import math
import re
import time

import pytest
from edge import burst, fresh_source
from tiers import EDGE

from policy import require

# The hosts these checks are about (tests/host/tiers.py).
HOST_GROUPS = EDGE

pytestmark = pytest.mark.claim("ratelimit.edge")
POLICY = require("ratelimit.edge")
PAGE = "/.well-known/security.txt"
# Seconds the sustained phase lasts: long enough to tell the policy's rate from twice it
# (30/min refills 3 requests in 6 s, 60/min 6), short enough for the audit.
SUSTAIN = 6.0


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


def _sustain(host, name: str, path: str, source: str, per_minute: int, forge: bool = False) -> dict:
    """Right after a burst, the same address keeps asking (two requests per call, as fast as
    the controller can call) for SUSTAIN seconds: the admitted ones are what the bucket refilled."""
    statuses, start = [], time.monotonic()
    while time.monotonic() - start < SUSTAIN:
        statuses += burst(host, name, path, 2, source, forge=forge)["statuses"]
    window = time.monotonic() - start
    return {
        "sustained_sent": len(statuses),
        "sustained_admitted": sum(1 for s in statuses if s != 429),
        "sustained_window_s": round(window, 2),
        "policy_allows_sustained": math.ceil(window * per_minute / 60) + 1,
    }


def _zone(host, name: str, path: str, burst_max: int, per_minute: int, forge: bool = False) -> dict:
    source = fresh_source()
    m = _measure(burst(host, name, path, burst_max + 15, source, forge=forge), burst_max, per_minute)
    return {**m, **_sustain(host, name, path, source, per_minute, forge)}


def _assert_within_policy(m: dict) -> None:
    assert m["first_429_status"] == POLICY["status"], f"never refused: {m}"
    assert m["admitted"] <= m["policy_allows_at_most"], f"more admitted than the policy's rate and burst allow: {m}"
    refill = m["admitted_after_first_429"] <= m["policy_allows_after_first_429"]
    assert refill, f"refills faster than the policy's rate: {m}"
    sustained = m["sustained_admitted"] <= m["policy_allows_sustained"]
    assert sustained, f"admits more over {m['sustained_window_s']} s than the policy's rate: {m}"


def test_general_zone_within_policy(host, site, evidence):
    m = _zone(host, site["server_names"][0], PAGE, POLICY["general_burst_max"], POLICY["general_per_minute_max"])
    evidence("ratelimit.edge", zone="general", per_minute_max=POLICY["general_per_minute_max"], **m)
    _assert_within_policy(m)


def test_api_zone_within_policy(host, site, evidence):
    prefix = site.get("api_prefix", "/api/")
    m = _zone(host, site["server_names"][0], f"{prefix}ratelimit-probe", POLICY["api_burst_max"],
              POLICY["api_per_minute_max"])
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
    m = _zone(host, site["server_names"][0], PAGE, POLICY["general_burst_max"], POLICY["general_per_minute_max"],
              forge=True)
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


def _per_minute(rate: str) -> float:
    number, unit = re.fullmatch(r"(\d+)r/([ms])", rate).groups()
    return int(number) * (60 if unit == "s" else 1)


def test_every_zone_and_burst_of_every_site_within_policy(host, evidence):
    """The bursts above are measured on the first site; this reads nginx's effective
    configuration (nginx -T) for every site and kind of path: no zone faster than the
    policy's rates, no burst on a public path above the policy's, and the larger bursts a
    dashboard needs only where the location is restricted to the admin networks (which
    tests/host/test_analytics_private.py proves from outside)."""
    with host.sudo():
        conf = host.check_output("nginx -T 2>/dev/null")
    zones = dict(re.findall(r"limit_req_zone\s+\S+\s+zone=([\w-]+):\S+\s+rate=(\d+r/[ms])", conf))
    too_fast = {z: r for z, r in zones.items()
                if _per_minute(r) > POLICY["api_per_minute_max" if z.endswith("_api") else "general_per_minute_max"]}
    # Each server or location block's own directives (our templates never nest locations).
    too_big, checked = [], 0
    for block in re.findall(r"(?:location|server)\s[^{]*\{([^{}]*)\}", conf):
        admin_only = "admin-networks.conf" in block
        for zone, size in re.findall(r"limit_req\s+zone=([\w-]+)(?:\s+burst=(\d+))?", block):
            checked += 1
            limit = (POLICY["admin_only_burst_max"] if admin_only
                     else POLICY["api_burst_max" if zone.endswith("_api") else "general_burst_max"])
            if int(size or 0) > limit:
                too_big.append(f"{zone} burst={size} (at most {limit}{' admin-only' if admin_only else ''})")
    evidence("ratelimit.edge", zones=zones, limit_req_directives_checked=checked,
             zones_faster_than_policy=too_fast, bursts_above_policy=too_big)
    assert zones and checked, "no limit_req zones or directives in nginx -T"
    assert not too_fast, f"zones faster than the policy: {too_fast}"
    assert not too_big, f"bursts above the policy: {too_big}"
