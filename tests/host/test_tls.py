"""Policy: "All traffic is encrypted via TLS 1.2 and 1.3. HTTP requests are permanently
redirected to HTTPS." and "Let's Encrypt, auto-renew" (tls.*, proxy.edge,
disclosure.security_txt in policy/claims.yml).

Set in roles/nginx/defaults/main.yml (nginx_tls_*, nginx_acme_*), enforced by
roles/nginx/templates/nginx.conf.j2 and site.conf.j2, proven here from outside the host.
Expected values come from the policy; the inventory only says which sites exist.
Every check here is read-only: TLS handshakes and GET requests.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tiers import EDGE

from policy import require

# The hosts these checks are about (tests/host/tiers.py).
HOST_GROUPS = EDGE

# The policy's protocol names, as Python's ssl module and sslyze call them.
PY_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
SSLYZE_SCANS = {"SSLv2": "ssl_2_0", "SSLv3": "ssl_3_0", "TLSv1.0": "tls_1_0", "TLSv1.1": "tls_1_1"}


def _names(sites: list[dict]) -> list[str]:
    return [site["server_names"][0] for site in sites]


@pytest.fixture(scope="module")
def first_name(sites) -> str:
    assert sites, "nginx_sites is empty: this host serves no site"
    return sites[0]["server_names"][0]


@pytest.mark.claim("tls.certificate")
def test_every_site_serves_a_certificate_that_verifies(probe, sites, evidence):
    """The chain verifies against the trust anchor (lab CA root or the system store) for
    each site's name: no verification is disabled anywhere."""
    verified = []
    for site in sites:
        for name in site["server_names"]:
            resp = probe.request(name, "/.well-known/security.txt")  # raises unless the chain verifies
            sans = [value for kind, value in resp.peer_cert["subjectAltName"] if kind == "DNS"]
            assert name in sans, f"{name} not in {sans}"
            assert resp.status == 200, f"{name}: {resp.status}"
            verified.append(name)
    evidence("tls.certificate", chain_verified_for=verified)
    assert verified and require("tls.certificate")["chain_verifies"]


@pytest.mark.claim("tls.certificate")
def test_certificates_come_from_acme_and_are_fresh(probe, sites, evidence):
    wanted = require("tls.certificate")
    seen = []
    for name in _names(sites):
        cert = x509.load_der_x509_certificate(probe.request(name, "/.well-known/security.txt").extra["der"])
        key = cert.public_key()
        kind = ("ECDSA" if isinstance(key, ec.EllipticCurvePublicKey)
                else "RSA" if isinstance(key, rsa.RSAPublicKey) else "other")
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
        seen.append({
            "name": name,
            "issuer": cert.issuer.rfc4514_string(),
            "key": kind,
            "not_after": cert.not_valid_after_utc.date().isoformat(),
            "days_left": left.days,
            "lifetime_days": lifetime.days,
        })
    evidence("tls.certificate", certificates=seen, expires=min(c["not_after"] for c in seen) if seen else None)
    for c in seen:
        assert any(i in c["issuer"] for i in wanted["issuers"]), f"{c['name']}: issuer {c['issuer']}"
        assert c["key"] in wanted["key_types"], f"{c['name']}: {c['key']} key"
        assert c["lifetime_days"] <= wanted["lifetime_days_max"], f"{c['name']}: lifetime {c['lifetime_days']} days"
        assert c["days_left"] >= wanted["days_left_min"], f"{c['name']}: {c['days_left']} days left"


@pytest.mark.claim("tls.versions")
@pytest.mark.parametrize("version", require("tls.versions")["protocols_accepted"])
def test_policy_protocols_are_accepted(probe, first_name, version, evidence):
    ctx = probe.context(minimum_version=PY_VERSIONS[version], maximum_version=PY_VERSIONS[version])
    try:
        negotiated = probe.request(first_name, "/.well-known/security.txt", context=ctx).tls_version
    except ssl.SSLError as exc:
        negotiated = f"refused ({exc.reason})"
    evidence("tls.versions", offered=version, negotiated=negotiated)
    assert negotiated == version


@pytest.mark.claim("proxy.edge")
def test_http2_is_offered(probe, first_name, evidence):
    ctx = probe.context()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    sock = ctx.wrap_socket(probe.connect(443), server_hostname=first_name)
    try:
        alpn = sock.selected_alpn_protocol()
    finally:
        sock.close()
    evidence("proxy.edge", alpn=alpn)
    assert alpn == "h2" or not require("proxy.edge")["http2"]


@pytest.mark.claim("proxy.edge")
def test_unknown_names_get_no_certificate(probe, evidence):
    """A client without a served name (or scanning by address) gets no handshake."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.wrap_socket(probe.connect(443), server_hostname="not-served.invalid").close()
        outcome = "handshake completed"
    except (ssl.SSLError, ConnectionError) as exc:
        outcome = f"no_handshake ({type(exc).__name__})"
    evidence("proxy.edge", unknown_name_https=outcome)
    assert outcome.startswith(require("proxy.edge")["unknown_name_https"])


@pytest.mark.claim("proxy.edge")
def test_unknown_names_get_no_http_response(probe, evidence):
    """Port 80 closes the connection (nginx 444) for a name it does not serve."""
    try:
        resp = probe.request("not-served.invalid", "/", scheme="http")
        outcome = f"HTTP {resp.status}"
    except (ConnectionError, OSError) as exc:  # RemoteDisconnected is a ConnectionError
        outcome = f"no_response ({type(exc).__name__})"
    evidence("proxy.edge", unknown_name_http=outcome)
    assert outcome.startswith(require("proxy.edge")["unknown_name_http"])


@pytest.fixture(scope="module")
def sslyze_scan(probe, first_name, ca_bundle, tmp_path_factory) -> dict:
    """One sslyze run (its own OpenSSL, able to offer SSL 2/3, TLS 1.0/1.1 and legacy
    ciphers): the protocol and group scans, plus its Mozilla-configuration verdict."""
    out = tmp_path_factory.mktemp("sslyze") / "scan.json"
    profile = require("tls.mozilla_intermediate")["mozilla_profile"]
    cmd = [
        sys.executable, "-m", "sslyze", f"--json_out={out}", f"--mozilla_config={profile}",
        "--tlsv1", "--tlsv1_1", "--tlsv1_2", "--tlsv1_3", "--sslv2", "--sslv3", "--elliptic_curves",
        f"{first_name}:443{{{probe.address}}}",
    ]
    if ca_bundle:
        cmd.insert(3, f"--certinfo_ca_file={ca_bundle}")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    result = json.loads(Path(out).read_text())["server_scan_results"][0]["scan_result"]
    return {"result": result, "returncode": proc.returncode, "stdout": proc.stdout, "profile": profile}


@pytest.mark.claim("tls.versions")
@pytest.mark.parametrize("protocol", require("tls.versions")["protocols_refused"])
def test_legacy_protocols_are_refused(sslyze_scan, protocol, evidence):
    accepted = sslyze_scan["result"][f"{SSLYZE_SCANS[protocol]}_cipher_suites"]["result"]["accepted_cipher_suites"]
    evidence("tls.versions", offered=protocol,
             negotiated="refused" if not accepted else f"{len(accepted)} suites accepted")
    assert accepted == [], f"{protocol} accepted"


@pytest.mark.claim("tls.mozilla_intermediate")
def test_tls12_ciphers_are_mozilla_intermediate(sslyze_scan, evidence):
    accepted = sorted(s["cipher_suite"]["openssl_name"] for s in
                      sslyze_scan["result"]["tls_1_2_cipher_suites"]["result"]["accepted_cipher_suites"])
    evidence("tls.mozilla_intermediate", tls12_ciphers=accepted)
    allowed = set(require("tls.mozilla_intermediate")["tls12_ciphers_allowed"])
    assert accepted, "no TLS 1.2 suite accepted"
    assert set(accepted) <= allowed, f"suites outside Mozilla intermediate: {sorted(set(accepted) - allowed)}"


@pytest.mark.claim("tls.mozilla_intermediate")
def test_key_exchange_groups(sslyze_scan, evidence):
    groups = sorted(g["name"] for g in sslyze_scan["result"]["elliptic_curves"]["result"]["supported_curves"])
    evidence("tls.mozilla_intermediate", groups=groups)
    wanted = require("tls.mozilla_intermediate")
    assert set(groups) <= set(wanted["groups_allowed"]), groups
    assert set(wanted["groups_required"]) <= set(groups), groups


@pytest.mark.claim("tls.mozilla_intermediate")
def test_mozilla_intermediate_compliance(sslyze_scan, evidence):
    """sslyze's own Mozilla configuration check (it bundles guidelines 5.7; 6.0 only
    removed DHE, which we do not offer)."""
    compliant = sslyze_scan["returncode"] == 0 and "OK - Compliant" in sslyze_scan["stdout"]
    evidence("tls.mozilla_intermediate", sslyze_profile=sslyze_scan["profile"],
             sslyze_verdict="compliant" if compliant else "not compliant")
    assert compliant, sslyze_scan["stdout"][-3000:]


@pytest.mark.claim("tls.redirect")
def test_http_redirects_permanently_keeping_host_path_and_query(probe, sites, evidence):
    wanted = require("tls.redirect")
    seen = []
    for name in _names(sites):
        resp = probe.request(name, "/some/path?q=1&b=two", scheme="http")
        seen.append({"name": name, "status": resp.status, "location": resp.header("Location")})
    evidence("tls.redirect", redirects=seen)
    for r in seen:
        assert r["status"] in wanted["status"], r
        assert r["location"] == f"https://{r['name']}/some/path?q=1&b=two", f"must keep {wanted['keeps']}: {r}"


@pytest.mark.claim("tls.certificate")
def test_http_serves_acme_challenges_not_redirects(probe, first_name, evidence):
    path = require("tls.certificate")["acme_challenge_path"] + "does-not-exist"
    resp = probe.request(first_name, path, scheme="http")
    evidence("tls.certificate", acme_challenge_over_http=resp.status)
    assert resp.status == 404


@pytest.mark.claim("disclosure.security_txt")
def test_security_txt(probe, sites, evidence):
    wanted = require("disclosure.security_txt")
    now = dt.datetime.now(dt.UTC)
    for name in _names(sites):
        resp = probe.request(name, wanted["path"])
        fields = dict(line.split(": ", 1) for line in resp.body.decode().splitlines() if ": " in line)
        expires = fields.get("Expires")
        days = (dt.datetime.fromisoformat(expires.replace("Z", "+00:00")) - now).days if expires else None
        evidence("disclosure.security_txt", site=name, status=resp.status, contact=fields.get("Contact"),
                 expires=expires, days_ahead=days)
        assert resp.status == 200
        assert set(wanted["fields"]) <= set(fields), f"{name}: fields {sorted(fields)}"
        assert fields["Contact"].startswith(tuple(wanted["contact_schemes"])), fields["Contact"]
        assert 0 <= days <= wanted["expires_within_days_max"], f"{name}: expires in {days} days"


@pytest.mark.claim("proxy.edge")
def test_server_header_has_no_version(probe, first_name, evidence):
    resp = probe.request(first_name, "/.well-known/security.txt")
    evidence("proxy.edge", server_header=resp.header("Server"))
    assert resp.header("Server") == require("proxy.edge")["server_header"]
