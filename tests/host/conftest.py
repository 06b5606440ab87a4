"""Fixtures shared by the host checks.

The same files run two ways:
  * molecule verify (molecule/default/molecule.yml, testinfra verifier), and
  * `pytest --hosts=ansible://platform --ansible-inventory=inventory/<env> tests/host`
    (`make verify`), e.g. by an auditor against production.

Checks that look from outside (TLS, redirects, headers) connect from the controller to the
host's address (ansible_host) on 80/443, present the site's name for SNI and verify the
certificate chain against IAC_CA_BUNDLE: the lab CA root (.lab/ca-root.pem) in the lab, the
system trust store when the variable is empty (production).

Rate limits are per client address. In the lab, IAC_PROBE_SOURCES names a range of the
controller's own addresses (10.89.77.200-219): each test module sends from its own address,
so one module's requests never use up another's budget. Without it, probes use the
controller's default address; against production, run the modules with pauses or
deselect the disruptive ones (-m "not disruptive").
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


# Variables the checks read, templated by Ansible itself (one ansible call per host).
_VAR_PATTERN = "^(nginx|app|umami|postgresql|backup|baseline|lab)_.*|^ansible_host$|^inventory_hostname$"
_VARS_CACHE: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module")
def hostvars(host) -> dict[str, Any]:
    """The host's role variables, templated (group_vars and host_vars included, the same
    values the playbooks use)."""
    key = host.backend.get_hostname()
    if key not in _VARS_CACHE:
        expr = (
            "{{ dict(query('ansible.builtin.varnames', '%s') | zip("
            "query('ansible.builtin.vars', *query('ansible.builtin.varnames', '%s')))) | to_json }}"
        ) % (_VAR_PATTERN, _VAR_PATTERN)
        result = host.ansible("ansible.builtin.debug", f"msg={expr}", check=False)
        msg = result["msg"]
        _VARS_CACHE[key] = json.loads(msg) if isinstance(msg, str) else msg
    return _VARS_CACHE[key]


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

    def __init__(self, address: str, ca_bundle: str | None, source: str | None = None) -> None:
        self.address = address
        self.ca_bundle = ca_bundle
        self.source = source

    def connect(self, port: int, timeout: float = 10) -> socket.socket:
        source = (self.source, 0) if self.source else None
        return socket.create_connection((self.address, port), timeout=timeout, source_address=source)

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
        sock = self.connect(port, timeout)
        peer_cert = tls_version = cipher = None
        extra: dict = {}
        if scheme == "https":
            sock = (context or self.context()).wrap_socket(sock, server_hostname=name)
            peer_cert = sock.getpeercert()
            tls_version = sock.version()
            cipher = sock.cipher()[0]
            extra = {"der": sock.getpeercert(binary_form=True), "alpn": sock.selected_alpn_protocol()}
        conn = http.client.HTTPConnection(name, port, timeout=timeout)
        conn.sock = sock
        try:
            conn.request(method, path, body=body, headers={"Host": name, **(headers or {})})
            resp = conn.getresponse()
            return Response(resp.status, resp.headers, resp.read(), peer_cert, tls_version, cipher, extra)
        finally:
            conn.close()


def _probe_source(module: str) -> str | None:
    """The controller address this test module sends from (see the module docstring)."""
    spec = os.environ.get("IAC_PROBE_SOURCES", "")
    if not spec:
        return None
    first, _, last = spec.rpartition(".")[2].partition("-")
    prefix = spec.rpartition(".")[0]
    choices = list(range(int(first), int(last or first) + 1))
    address = f"{prefix}.{choices[zlib.crc32(module.encode()) % len(choices)]}"
    try:  # only where this address really is the controller's (the lab)
        socket.create_server((address, 0)).close()
    except OSError:
        return None
    return address


@pytest.fixture(scope="module")
def probe(request, hostvars, ca_bundle) -> Probe:
    address = hostvars.get("ansible_host") or hostvars["inventory_hostname"]
    return Probe(address, ca_bundle, _probe_source(request.module.__name__))


@pytest.fixture(scope="module")
def sites(hostvars) -> list[dict]:
    """The sites of the TLS edge on this host (nginx_sites, templated)."""
    return hostvars.get("nginx_sites", [])
