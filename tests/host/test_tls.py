"""Policy: "All traffic is encrypted via TLS 1.2 and 1.3. HTTP requests are permanently
redirected to HTTPS." and "Let's Encrypt, auto-renew".

Set in roles/nginx/defaults/main.yml (nginx_tls_*, nginx_acme_*), enforced by
roles/nginx/templates/nginx.conf.j2 and site.conf.j2, proven here from outside the host.
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
from cryptography.hazmat.primitives.asymmetric import ec


def _names(sites: list[dict]) -> list[str]:
    return [site["server_names"][0] for site in sites]


@pytest.fixture(scope="module")
def first_name(sites) -> str:
    assert sites, "nginx_sites is empty: this host serves no site"
    return sites[0]["server_names"][0]


def test_every_site_serves_a_certificate_that_verifies(probe, sites, ca_bundle):
    """The chain verifies against the trust anchor (lab CA root or the system store) for
    each site's name: no verification is disabled anywhere."""
    for site in sites:
        for name in site["server_names"]:
            resp = probe.request(name, "/.well-known/security.txt")
            assert resp.status == 200, f"{name}: {resp.status}"
            sans = [value for kind, value in resp.peer_cert["subjectAltName"] if kind == "DNS"]
            assert name in sans


def test_certificates_are_ecdsa_and_short_lived(probe, sites):
    for name in _names(sites):
        cert = x509.load_der_x509_certificate(probe.request(name, "/.well-known/security.txt").extra["der"])
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey), f"{name}: not an ECDSA key"
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        # Let's Encrypt: 90 days (64 from 2027, 45 from 2028); the lab CA is set to 90.
        assert lifetime <= dt.timedelta(days=100), f"{name}: lifetime {lifetime}"
        assert cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=7)
        issuer = cert.issuer.rfc4514_string()
        assert "Pebble" in issuer or "Let's Encrypt" in issuer, issuer


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls12_and_tls13_are_accepted(probe, first_name, hostvars, version):
    ctx = probe.context(minimum_version=version, maximum_version=version)
    if version == ssl.TLSVersion.TLSv1_2 and hostvars.get("nginx_tls_profile") == "modern":
        with pytest.raises(ssl.SSLError):
            probe.request(first_name, "/.well-known/security.txt", context=ctx)
        return
    resp = probe.request(first_name, "/.well-known/security.txt", context=ctx)
    assert resp.tls_version == {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[version.name]


def test_http2_is_offered(probe, first_name):
    ctx = probe.context()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    sock = ctx.wrap_socket(probe.connect(443), server_hostname=first_name)
    try:
        assert sock.selected_alpn_protocol() == "h2"
    finally:
        sock.close()


def test_unknown_names_get_no_certificate(probe):
    """A client without a served name (or scanning by address) gets no handshake."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with pytest.raises((ssl.SSLError, ConnectionError)):
        ctx.wrap_socket(probe.connect(443), server_hostname="not-served.invalid").close()


@pytest.fixture(scope="module")
def sslyze_report(probe, first_name, ca_bundle, tmp_path_factory) -> dict:
    """One sslyze scan (its own OpenSSL, able to offer TLS 1.0/1.1 and legacy ciphers)."""
    out = tmp_path_factory.mktemp("sslyze") / "scan.json"
    cmd = [
        sys.executable, "-m", "sslyze", "--quiet", f"--json_out={out}",
        "--tlsv1", "--tlsv1_1", "--tlsv1_2", "--tlsv1_3", "--sslv2", "--sslv3", "--elliptic_curves",
        f"{first_name}:443{{{probe.address}}}",
    ]
    if ca_bundle:
        cmd.insert(3, f"--certinfo_ca_file={ca_bundle}")
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    return json.loads(Path(out).read_text())["server_scan_results"][0]["scan_result"]


@pytest.mark.parametrize("protocol", ["ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1"])
def test_legacy_protocols_are_refused(sslyze_report, protocol):
    result = sslyze_report[f"{protocol}_cipher_suites"]["result"]
    assert result["accepted_cipher_suites"] == [], f"{protocol} accepted"


def test_tls12_ciphers_are_mozilla_intermediate(sslyze_report, hostvars):
    accepted = {s["cipher_suite"]["openssl_name"] for s in
                sslyze_report["tls_1_2_cipher_suites"]["result"]["accepted_cipher_suites"]}
    if hostvars.get("nginx_tls_profile") == "modern":
        assert accepted == set()
        return
    allowed = {
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    }
    assert accepted, "no TLS 1.2 suite accepted"
    assert accepted <= allowed, f"suites outside Mozilla intermediate: {sorted(accepted - allowed)}"


def test_key_exchange_groups_are_the_configured_ones(sslyze_report):
    groups = {g["name"] for g in sslyze_report["elliptic_curves"]["result"]["supported_curves"]}
    # prime256v1 is OpenSSL's name for secp256r1 (P-256).
    assert groups <= {"X25519", "secp256r1", "prime256v1", "secp384r1"}, groups
    assert "X25519" in groups


def test_mozilla_intermediate_compliance(probe, first_name, ca_bundle, hostvars):
    """sslyze's own Mozilla configuration check (it bundles guidelines 5.7; 6.0 only
    removed DHE, which we do not offer)."""
    profile = hostvars.get("nginx_tls_profile", "intermediate")
    cmd = [sys.executable, "-m", "sslyze", f"--mozilla_config={profile}", f"{first_name}:443{{{probe.address}}}"]
    if ca_bundle:
        cmd.insert(3, f"--certinfo_ca_file={ca_bundle}")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "OK - Compliant" in proc.stdout


def test_http_redirects_permanently_keeping_host_path_and_query(probe, sites):
    for name in _names(sites):
        resp = probe.request(name, "/some/path?q=1&b=two", scheme="http")
        assert resp.status in (301, 308)
        assert resp.header("Location") == f"https://{name}/some/path?q=1&b=two"


def test_http_serves_acme_challenges_not_redirects(probe, first_name):
    resp = probe.request(first_name, "/.well-known/acme-challenge/does-not-exist", scheme="http")
    assert resp.status == 404


def test_security_txt(probe, first_name, hostvars):
    body = probe.request(first_name, "/.well-known/security.txt").body.decode()
    assert f"Contact: {hostvars['nginx_security_txt_contact']}" in body
    expires = next(line.split(": ", 1)[1] for line in body.splitlines() if line.startswith("Expires: "))
    assert dt.datetime.fromisoformat(expires.replace("Z", "+00:00")) > dt.datetime.now(dt.UTC)


def test_server_header_has_no_version(probe, first_name):
    resp = probe.request(first_name, "/.well-known/security.txt")
    assert resp.header("Server") == "nginx"
