"""The private link from the edge to an app host of its own (docs/tiers.md "Edge -> app").

Each app host behind an edge on another host has nginx listen on its private address
(nginx_private_sites) for the edges only, with TLS that authenticates both sides with the
toolkit's private CA. Measured from both ends and from outside:

- from the edge, with the edge's client certificate: the app answers, over TLS 1.2/1.3,
  and the app host's certificate is valid for the name the edge requires;
- from the edge without a certificate: no answer from the app;
- from the controller and from a host of another tier: the firewall lets nothing through;
- the edge's configuration verifies the app hosts (proxy_ssl_verify) and balances across
  every one of them, and requests through the edge do land on each app host;
- after a converge (a rolling release drains one app host at a time) no app host is left
  drained on the edge (claim tiers.rolling_release).

Runs on the app hosts; on an app host that carries its own edge (one host, or the edge and
the app together) there is no private link and the module says so.
"""

from __future__ import annotations

import json
import socket
import time
import uuid

import pytest
from tiers import APP, inventory_host

from policy import require

HOST_GROUPS = APP

# Python for the edge host: one HTTPS request to the app host's private listener, with or
# without the edge's client certificate; prints what happened as JSON.
_CLIENT = """
import json, socket, ssl, sys
address, port, name, site, cert = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile="{dir}/ca.pem")
if cert == "yes":
    ctx.load_cert_chain("{dir}/edge-client.pem", "{dir}/edge-client.key")
out = {{}}
try:
    with socket.create_connection((address, port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as tls:
            out["version"] = tls.version()
            out["peer_names"] = [v for k, v in tls.getpeercert().get("subjectAltName", ())]
            tls.sendall(f"GET /healthz HTTP/1.1\\r\\nHost: {{site}}\\r\\nConnection: close\\r\\n\\r\\n".encode())
            data = b""
            while True:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                data += chunk
            out["status"] = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None
except (OSError, ssl.SSLError) as exc:
    out["error"] = type(exc).__name__ + ": " + str(exc)[:200]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def link(hostvars) -> dict:
    private = hostvars.get("nginx_private_sites") or []
    if not private:
        pytest.skip(f"{hostvars['inventory_hostname']} has no private listener: its app is served by its own edge")
    site = private[0]
    return {"address": site["listen"], "port": int(site.get("port", 8443)), "allow": list(site["allow"])}


@pytest.fixture(scope="module")
def edge(request, hostvars, link):
    """The first edge host (only where this host has a private listener: `link` skips first)."""
    edges = hostvars["groups"].get("edge", [])
    assert edges, "this host listens for edges, but the inventory's edge group is empty"
    return edges[0], inventory_host(request, edges[0])


def _from_edge(edge_host, hostvars, link, cert: bool) -> dict:
    directory = hostvars.get("nginx_private_tls_dir", "/etc/platform-pki")
    name = hostvars.get("nginx_upstream_tls_name", "platform-app")
    script = _CLIENT.format(dir=directory)
    args = f"{link['address']} {link['port']} {name} probe.invalid {'yes' if cert else 'no'}"
    out = edge_host.run(f"python3 - {args} <<'EOF'\n{script}EOF")
    assert out.rc == 0, out.stderr[-1000:]
    return json.loads(out.stdout)


@pytest.mark.claim("tiers.private_link")
def test_edge_reaches_the_app_with_its_certificate_only(link, edge, hostvars, evidence):
    req = require("tiers.private_link")
    edge_name, edge_host = edge
    with_cert = _from_edge(edge_host, hostvars, link, cert=True)
    without = _from_edge(edge_host, hostvars, link, cert=False)
    evidence("tiers.private_link", edge=edge_name, listener=f"{link['address']}:{link['port']}",
             with_certificate=with_cert, without_certificate=without)  # fmt: skip
    assert "error" not in with_cert, with_cert
    assert with_cert["version"] in req["tls_versions"]
    # The app answered (its health check), through the app host's nginx.
    assert with_cert["status"] == 200, with_cert
    # The app host's certificate carries the name the edge requires (verified above by the
    # client with the private CA) and the address it listens on.
    assert hostvars.get("nginx_upstream_tls_name", "platform-app") in with_cert["peer_names"]
    assert link["address"] in with_cert["peer_names"]
    # Without the edge's certificate: nginx's 400 or a refused handshake, never the app.
    assert req["client_certificate_required"] is True
    assert without.get("status") in (None, 400), without
    assert without.get("status") != 200


@pytest.mark.claim("tiers.private_link")
def test_listener_is_closed_to_every_other_host(request, host, hostvars, link, probe, evidence):
    """A port scan of the private listener from outside the edge tier finds nothing: from the
    controller (the lab's outside), from this host's other neighbours (the database host, the
    backup server, the other app hosts)."""
    req = require("tiers.private_link")
    assert req["reachable_only_from"] == "edge"
    groups = hostvars["groups"]
    edges = set(groups.get("edge", []))
    me = hostvars["inventory_hostname"]
    others = [h for h in dict.fromkeys(groups.get("db", []) + groups.get("backup_servers", []) + groups.get("app", []))
              if h != me and h not in edges]
    seen = {}
    # From the controller (the probes' own source address).
    try:
        with socket.create_connection((link["address"], link["port"]), timeout=3,
                                      source_address=(probe.source, 0) if probe.source else None):
            seen["controller"] = "open"
    except OSError as exc:
        seen["controller"] = type(exc).__name__
    for name in others:
        out = inventory_host(request, name).run(
            "python3 -c 'import socket,sys\n"
            "try:\n socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3); print(\"open\")\n"
            "except OSError as e: print(type(e).__name__)' " + f"{link['address']} {link['port']}"
        )
        seen[name] = out.stdout.strip() or out.stderr.strip()[-200:]
    evidence("tiers.private_link", listener=f"{link['address']}:{link['port']}", allowed=link["allow"],
             reachability_from_others=seen)  # fmt: skip
    assert others, "no other host to scan from"
    assert all(result != "open" for result in seen.values()), seen
    # The firewall drops (a timeout), rather than the listener refusing: nothing answers.
    assert all(result in ("TimeoutError", "timeout") for result in seen.values()), seen


@pytest.mark.claim("tiers.private_link")
def test_edge_verifies_and_balances_across_the_app_hosts(request, link, edge, hostvars, probe, sites, evidence):
    """The edge's configuration (nginx -T, what nginx really loaded) checks each app host's
    certificate against the private CA and its name, and names every app host; a run of
    requests through the edge lands on each of them (their access logs)."""
    req = require("tiers.private_link")
    edge_name, edge_host = edge
    config = edge_host.check_output("nginx -T 2>/dev/null")
    groups = hostvars["groups"]
    app_hosts = [h for h in groups.get("app", []) if h not in groups.get("edge", [])]
    verify = "proxy_ssl_verify on;" in config
    expected_name = f"proxy_ssl_name {hostvars.get('nginx_upstream_tls_name', 'platform-app')};"
    evidence("tiers.private_link", edge=edge_name, proxy_ssl_verify=verify,
             proxy_ssl_name=expected_name in config)  # fmt: skip
    assert req["edge_verifies_app_hosts"] is True
    assert verify and expected_name in config
    assert "proxy_ssl_certificate " in config and "proxy_ssl_trusted_certificate " in config

    site = next(s for s in sites if s.get("upstream_servers"))
    name = site["server_names"][0]
    marker = f"balance-{uuid.uuid4().hex[:8]}"
    hosts = {n: inventory_host(request, n) for n in app_hosts}
    for i in range(8):
        resp = probe.request(name, f"/{marker}-{i}")
        assert resp.status in (404, 429), resp.status
        time.sleep(0.3)
    counts = {}
    for n, h in hosts.items():
        out = h.run(f"grep -c -F '/{marker}-' /var/log/nginx/access.log")
        counts[n] = int(out.stdout.strip() or 0)
    evidence("tiers.private_link", requests_through_edge=8, landed_per_app_host=counts)
    assert sum(counts.values()) >= 1, counts
    assert all(c >= 1 for c in counts.values()), f"some app host got none of 8 requests: {counts}"


@pytest.mark.claim("tiers.rolling_release")
def test_every_app_host_is_back_in_the_edges_balancing(link, edge, hostvars, evidence):
    """After a converge (and after a rolling release: playbooks/app.yml) the edge's loaded
    configuration lists this app host's private listener, and not as `down`: a roll that
    stopped half-way leaves its host drained, and this check names it."""
    req = require("tiers.rolling_release")
    edge_name, edge_host = edge
    address, port = link["address"], link["port"]
    member = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    config = edge_host.check_output("nginx -T 2>/dev/null")
    lines = [line.strip() for line in config.splitlines() if line.strip().startswith(f"server {member} ")]
    drained = [line for line in lines if " down" in line.rstrip(";").split(member, 1)[1]]
    evidence("tiers.rolling_release", edge=edge_name, member=member, server_lines=lines, drained=len(drained))
    assert lines, f"{edge_name} does not balance to {member}: no upstream server line names it"
    assert len(drained) == req["drained_app_hosts"], f"{edge_name} still has {member} drained: {drained}"
