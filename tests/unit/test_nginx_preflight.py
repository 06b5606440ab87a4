"""roles/nginx's preflight (tasks/preflight.yml) of the tiered sites, without a host.

An app site has exactly one way to its app: the app on this host (loopback or a unix socket)
or the private listeners of app hosts (upstream_servers, ADDRESS:PORT). A private listener
(nginx_private_sites, on an app host behind an edge) must sit on a private address, never a
wildcard or loopback, and admit named edge addresses only: anything else would publish the
app. Each bad input must stop the play before the host is touched.
"""

from __future__ import annotations

import pytest
from preflight_cases import expect, play, run

# Test values for the preflight's other checks (ACME, security.txt).
BASE = {
    "nginx_acme_email": "ops@platform.invalid-tld.org",
    "nginx_security_txt_contact": "mailto:security@platform.invalid-tld.org",
    "nginx_security_txt_expires": "2099-01-01T00:00:00Z",
}
LOCAL = {"name": "app", "server_names": ["www.example.org"], "upstream": "http://unix:/run/platform/app.sock"}
REMOTE = {"name": "app", "server_names": ["www.example.org"], "upstream_servers": ["10.0.0.61:8443", "10.0.0.62:8443"]}
PRIVATE = {"name": "app", "listen": "10.0.0.61", "port": 8443, "upstream": "http://unix:/run/platform/app.sock",
           "allow": ["10.0.0.60"]}

# name: (variables, "PASS" or a phrase of the failure)
CASES = {
    "an app on this host": ({"nginx_sites": [LOCAL]}, "PASS"),
    "app hosts behind the edge": ({"nginx_sites": [REMOTE]}, "PASS"),
    "both an upstream and app hosts": (
        {"nginx_sites": [{**REMOTE, "upstream": LOCAL["upstream"]}]}, "exactly one of upstream"),
    "an app host by name": (
        {"nginx_sites": [{**REMOTE, "upstream_servers": ["app1.example.org:8443"]}]}, "exactly one of upstream"),
    "an app host without a port": (
        {"nginx_sites": [{**REMOTE, "upstream_servers": ["10.0.0.61"]}]}, "exactly one of upstream"),
    "a public upstream": (
        {"nginx_sites": [{**LOCAL, "upstream": "http://10.0.0.61:8000"}]}, "exactly one of upstream"),
    "a private listener": ({"nginx_private_sites": [PRIVATE]}, "PASS"),
    "a private listener on every address": (
        {"nginx_private_sites": [{**PRIVATE, "listen": "0.0.0.0"}]}, "not a wildcard or loopback"),  # noqa: S104
    "a private listener on loopback": (
        {"nginx_private_sites": [{**PRIVATE, "listen": "127.0.0.1"}]}, "not a wildcard or loopback"),
    "a private listener open to everyone": (
        {"nginx_private_sites": [{**PRIVATE, "allow": ["0.0.0.0/0"]}]}, "never everyone"),
    "a private listener without its edges": (
        {"nginx_private_sites": [{**PRIVATE, "allow": []}]}, "never everyone"),
    "a private listener on 443": (
        {"nginx_private_sites": [{**PRIVATE, "port": 443}]}, "other than 80/443"),
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, str]:
    plays = {name: play(i, "nginx", "preflight.yml", {**BASE, **variables})
             for i, (name, (variables, _)) in enumerate(CASES.items())}
    return run(tmp_path_factory.mktemp("nginxpreflight"), plays)


@pytest.mark.parametrize("case", list(CASES))
def test_nginx_preflight(outcomes, case) -> None:
    expect(outcomes, case, CASES[case][1])
