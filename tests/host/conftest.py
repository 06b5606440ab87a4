"""Fixtures shared by the host checks.

The same files run two ways:
  * molecule verify (molecule/default/molecule.yml, testinfra verifier), and
  * `pytest --hosts=ansible://platform --ansible-inventory=inventory/<env> tests/host`
    (`make verify`), e.g. by an auditor against production.

Checks that look from outside (TLS, redirects, headers) connect from the controller to the
host's address (ansible_host) on 80/443, present the site's name for SNI and verify the
certificate chain against IAC_CA_BUNDLE: the lab CA root (.lab/ca-root.pem) in the lab, the
system trust store when the variable is empty (production).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def hostvars(host) -> dict[str, Any]:
    """The host's Ansible variables, templated (group_vars and host_vars included)."""
    return host.ansible.get_variables()


def _ca_bundle() -> str | None:
    explicit = os.environ.get("IAC_CA_BUNDLE")
    if explicit is not None:
        return explicit or None
    lab = Path(os.environ.get("IAC_LAB_DIR", REPO_ROOT / ".lab")) / "ca-root.pem"
    return str(lab) if lab.exists() else None


@pytest.fixture(scope="session")
def ca_bundle() -> str | None:
    return _ca_bundle()


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    peer_cert: dict | None = None
    tls_version: str | None = None
    cipher: str | None = None
    extra: dict = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def json(self) -> Any:
        return json.loads(self.body)


class Probe:
    """HTTP(S) requests from the controller to one host, by site name, without DNS."""

    def __init__(self, address: str, ca_bundle: str | None) -> None:
        self.address = address
        self.ca_bundle = ca_bundle

    def context(self, **kwargs: Any) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_bundle) if self.ca_bundle else ssl.create_default_context()
        for key, value in kwargs.items():
            setattr(ctx, key, value)
        return ctx

    def request(
        self,
        name: str,
        path: str = "/",
        *,
        method: str = "GET",
        scheme: str = "https",
        port: int | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | str | None = None,
        context: ssl.SSLContext | None = None,
        timeout: float = 10,
    ) -> Response:
        port = port or (443 if scheme == "https" else 80)
        sock = socket.create_connection((self.address, port), timeout=timeout)
        peer_cert = tls_version = cipher = None
        if scheme == "https":
            sock = (context or self.context()).wrap_socket(sock, server_hostname=name)
            peer_cert = sock.getpeercert()
            tls_version = sock.version()
            cipher = sock.cipher()[0]
        conn = http.client.HTTPConnection(name, port, timeout=timeout)
        conn.sock = sock
        try:
            conn.request(method, path, body=body, headers={"Host": name, **(headers or {})})
            resp = conn.getresponse()
            return Response(resp.status, resp.headers, resp.read(), peer_cert, tls_version, cipher)
        finally:
            conn.close()


@pytest.fixture(scope="module")
def probe(hostvars, ca_bundle) -> Probe:
    return Probe(hostvars.get("ansible_host") or hostvars["inventory_hostname"], ca_bundle)
