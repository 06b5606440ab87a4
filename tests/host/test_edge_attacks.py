"""The TLS edge under an attacker's requests (issue 13, findings 1 and 2).

Policy "Reverse Proxy": nginx sits in front of the app (proxy.edge): a name the host does
not serve gets no content of ours and no stock page (421 or a closed connection), and
"All responses include" the security headers (headers.security), these included. Ours
(edge.slow_clients): one address cannot hold the edge's connections: connections per
client address are capped and idle or slow clients are closed quickly.

Set in roles/nginx/defaults/main.yml (nginx_client_*_timeout, nginx_keepalive_timeout,
nginx_send_timeout) and roles/baseline/defaults/main.yml
(baseline_firewall_http_connections_per_address), enforced by roles/nginx/templates/nginx.conf.j2
(default servers, timeouts) and roles/baseline/templates/nftables.conf.j2 (ct count).

Every probe comes from the controller, as an attacker's would: raw TLS sockets with a
valid SNI and a foreign Host header, HTTP/2 with a foreign :authority (the h2 library),
hundreds of idle connections from one address, a slowloris header.
"""

from __future__ import annotations

import time

import pytest
from attack import H2, h2_get, http1, idle_flood, keepalive_idle, missing_policy_headers, slow_headers, wait_closed
from tiers import EDGE

from policy import require

# The hosts these checks are about (tests/host/tiers.py).
HOST_GROUPS = EDGE

FOREIGN = "attacker.invalid"
STOCK_PAGES = (b"Welcome to nginx", b"nginx-debian", b"<center>nginx</center>")


@pytest.fixture(scope="module")
def names(sites) -> list[str]:
    assert sites, "nginx_sites is empty"
    return [site["server_names"][0] for site in sites]


def _judge(answer, what: str, statuses: list[int]) -> list[str]:
    """Problems with one answer to a request for a name we do not serve."""
    if answer.closed_without_answer:
        return [] if 444 in statuses else [f"{what}: closed without an answer"]
    problems = []
    if answer.status not in statuses:
        problems.append(f"{what}: HTTP {answer.status}, expected one of {statuses}")
    if any(mark in answer.body for mark in STOCK_PAGES):
        problems.append(f"{what}: a stock nginx page ({answer.body[:60]!r})")
    problems += [f"{what}: {p}" for p in missing_policy_headers(answer.headers, require("headers.security")["headers"])]
    return problems


# --- Finding 1: a valid SNI with a foreign Host header -------------------------------


@pytest.mark.claim("proxy.edge", "headers.security")
def test_foreign_host_with_valid_sni_gets_421_with_headers(probe, names, evidence):
    """HTTP/1.1 and HTTP/2 on 443: the TLS handshake names one of our sites, the request
    names another host (or the bare address). The answer is a 421 (or a close), with every
    security header, never a stock page."""
    statuses = require("proxy.edge")["unknown_host_status"]
    seen, problems = {}, []
    for name in names:
        for host in (FOREIGN, probe.address):
            answer = http1(probe, name, host)
            seen[f"h1 sni={name} host={host}"] = answer.status
            problems += _judge(answer, f"HTTP/1.1 SNI {name}, Host {host}", statuses)
        for host, answer in zip((FOREIGN, probe.address), h2_get(probe, name, [(FOREIGN, "/"), (probe.address, "/")]),
                                strict=True):
            seen[f"h2 sni={name} authority={host}"] = answer.status
            problems += _judge(answer, f"HTTP/2 SNI {name}, :authority {host}", statuses)
    evidence("proxy.edge", statuses=seen)
    evidence("headers.security", foreign_host_problems=problems)
    assert not problems, "\n".join(problems)


@pytest.mark.claim("proxy.edge")
def test_foreign_host_on_port_80_gets_no_content(probe, evidence):
    statuses = require("proxy.edge")["unknown_host_status"]
    answer = http1(probe, None, FOREIGN, port=80)
    evidence("proxy.edge", port_80_status=answer.status, closed=answer.closed_without_answer)
    if answer.closed_without_answer:
        assert 444 in statuses
    else:
        assert answer.status in statuses, f"port 80, Host {FOREIGN}: HTTP {answer.status}"
        assert not any(mark in answer.body for mark in STOCK_PAGES)


@pytest.mark.claim("headers.security")
def test_request_without_host_still_gets_the_headers(probe, names, evidence):
    """HTTP/1.1 without a Host header is a 400 from nginx itself: still a response of
    ours, so it carries the headers too."""
    spec = require("headers.security")["headers"]
    problems, seen = [], {}
    for name in names:
        answer = http1(probe, name, None)
        seen[name] = answer.status
        if not answer.closed_without_answer:
            problems += [f"SNI {name}, no Host: {p}" for p in missing_policy_headers(answer.headers, spec)]
            if any(mark in answer.body for mark in STOCK_PAGES):
                problems.append(f"SNI {name}, no Host: a stock nginx page")
    evidence("headers.security", no_host_statuses=seen, problems=problems)
    assert not problems, "\n".join(problems)


@pytest.mark.claim("proxy.edge")
def test_distribution_default_content_is_gone(host, evidence):
    """Nothing of the package's welcome site is left to serve: no default site, an empty
    index.nginx-debian.html (nginx-common's postinst copies it back on every upgrade when
    it is missing, so it is emptied), and no server in the effective configuration serves
    from the package's document roots, not even nginx's implicit one."""
    leftovers = [path for path in ("/etc/nginx/sites-enabled/default", "/etc/nginx/sites-available/default")
                 if host.file(path).exists]
    welcome = host.file("/var/www/html/index.nginx-debian.html")
    if welcome.exists and welcome.size > 0:
        leftovers.append(f"{welcome.path} ({welcome.size} bytes)")
    with host.sudo():
        effective = host.check_output("nginx -T 2>/dev/null")
    roots = sorted({line.split()[1].rstrip(";") for line in effective.splitlines()
                    if line.strip().startswith(("root ", "alias "))})
    stock_roots = [r for r in roots if r.startswith(("/var/www/html", "/usr/share/nginx/html", "html"))]
    # Without a root in the http block, a location without one serves nginx's implicit
    # root, /usr/share/nginx/html: the welcome page.
    http_root = [line.strip() for line in effective.split("http {", 1)[-1].split("server {", 1)[0].splitlines()
                 if line.strip().startswith("root ")]
    evidence("proxy.edge", default_content_left=leftovers, document_roots=roots, http_root=http_root)
    assert not leftovers, f"distribution default content left: {leftovers}"
    assert not stock_roots, f"the effective configuration serves stock roots: {stock_roots}"
    assert http_root, "no root in the http block: nginx's implicit root is the welcome page's directory"


# --- Finding 2: connections per address, idle and slow clients ------------------------


@pytest.mark.claim("edge.slow_clients")
@pytest.mark.disruptive
def test_idle_connections_from_one_address_are_capped_and_closed(probe, names, evidence):
    """300 connections from one address at once, TLS handshakes completed, then silence:
    at most the policy's cap are accepted, and each accepted one is closed within the
    policy's idle limit. (Disruptive: for those seconds this address holds its full share
    of the edge's connections.)"""
    req = require("edge.slow_clients")
    cap, idle_max = req["connections_per_address_max"], req["idle_close_seconds_max"]
    flood = idle_flood(probe, 300, sni=names[0], watch=idle_max + 5)
    late = [round(c, 1) for c in flood.closed_after if c is not None and c > idle_max]
    closed = sorted(round(c, 1) for c in flood.closed_after if c is not None)
    evidence("edge.slow_clients", attempted=flood.attempted, accepted=flood.accepted,
             still_open_after_s={idle_max + 5: flood.still_open}, closed_after_s_min_max=closed[:1] + closed[-1:])
    assert flood.accepted <= cap, f"{flood.accepted} of {flood.attempted} connections from one address accepted"
    assert flood.still_open == 0 and not late, (
        f"{flood.still_open} of {flood.accepted} idle connections still open after {idle_max + 5} s, "
        f"{len(late)} closed later than {idle_max} s")


@pytest.mark.claim("edge.slow_clients")
@pytest.mark.disruptive
@pytest.mark.parametrize("port", [80, 443])
def test_silent_tcp_connections_are_capped_and_closed(probe, port, evidence):
    """150 TCP connections that never send a byte: on 80 no request, on 443 not even a TLS
    ClientHello. Capped, and closed within the idle limit."""
    req = require("edge.slow_clients")
    cap, idle_max = req["connections_per_address_max"], req["idle_close_seconds_max"]
    flood = idle_flood(probe, 150, sni=None, port=port, watch=idle_max + 5)
    late = [round(c, 1) for c in flood.closed_after if c is not None and c > idle_max]
    closed = sorted(round(c, 1) for c in flood.closed_after if c is not None)
    evidence("edge.slow_clients", port=port, attempted=flood.attempted, accepted=flood.accepted,
             still_open=flood.still_open, closed_after_s_min_max=closed[:1] + closed[-1:])
    assert flood.accepted <= cap, f"port {port}: {flood.accepted} of {flood.attempted} accepted"
    assert flood.still_open == 0 and not late, (
        f"port {port}: {flood.still_open} still open after {idle_max + 5} s, {len(late)} closed after {idle_max} s")


@pytest.mark.claim("edge.slow_clients")
def test_idle_keepalive_connections_are_closed(probe, names, evidence):
    """After a request, an idle HTTP/2 connection and an idle HTTP/1.1 keep-alive one are
    closed within the idle limit."""
    idle_max = require("edge.slow_clients")["idle_close_seconds_max"]
    name = names[0]
    with H2(probe, name) as conn:
        assert [a.status for a in conn.get([(name, "/.well-known/security.txt")])] == [200]
        h2_closed = wait_closed(conn.sock, idle_max + 5)
    h1_closed = keepalive_idle(probe, name, "/.well-known/security.txt", idle_max + 5)
    evidence("edge.slow_clients", http2_idle_closed_after_s=h2_closed, http1_idle_closed_after_s=h1_closed)
    assert h2_closed is not None and h2_closed <= idle_max, f"HTTP/2 idle connection open for {h2_closed} s"
    assert h1_closed is not None and h1_closed <= idle_max, f"HTTP/1.1 keep-alive connection open for {h1_closed} s"


@pytest.mark.claim("edge.slow_clients")
def test_slowloris_header_is_cut_off(probe, names, evidence):
    """A request header that never ends (one byte every 2 s) is not kept open."""
    idle_max = require("edge.slow_clients")["idle_close_seconds_max"]
    took = slow_headers(probe, names[0], names[0], interval=2, watch=idle_max + 5)
    evidence("edge.slow_clients", slow_header_closed_after_s=None if took is None else round(took, 1))
    assert took is not None and took <= idle_max, f"a never-ending header kept the connection for {took} s"


@pytest.mark.claim("edge.slow_clients", "ratelimit.edge")
def test_browser_like_http2_client_is_unaffected(probe, names, evidence):
    """What a browser does: up to 6 connections open at once, several parallel streams on
    each, and a connection reused after a pause of a few seconds. None of it is refused."""
    name, path = names[0], "/.well-known/security.txt"
    conns = []
    try:
        for _ in range(6):
            conns.append(H2(probe, name))
        statuses = [a.status for conn in conns for a in conn.get([(name, path)] * 3)]
        time.sleep(5)
        again = [a.status for a in conns[0].get([(name, path)])]
    finally:
        for conn in conns:
            conn.__exit__()
    evidence("edge.slow_clients", connections=len(conns), parallel_streams=statuses, reused_after_5s=again)
    assert statuses == [200] * 18, statuses
    assert again == [200], f"a connection idle for 5 s was not reusable: {again}"
