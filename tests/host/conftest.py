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
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tiers
from hostvars import HostVars

REPO_ROOT = Path(__file__).resolve().parents[2]


_VARS_CACHE: dict[str, HostVars] = {}


@pytest.fixture(scope="module")
def hostvars(host, request) -> Mapping[str, Any]:
    """The host's variables, with the precedence and templating the playbooks use."""
    inventory = request.config.getoption("ansible_inventory")
    assert inventory, "run with --ansible-inventory=<inventory> (see the Makefile's verify target)"
    hostname = host.backend.get_hostname()
    key = f"{inventory}#{hostname}"
    if key not in _VARS_CACHE:
        _VARS_CACHE[key] = HostVars(inventory, hostname)
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


class _Pacer:
    """Keeps one client address under the edge's rate limits (policy ratelimit.edge), so
    that checks never get a 429 they did not ask for and never feed fail2ban: against
    production every module probes from the auditor's one address. A token bucket per
    (client address, host, zone) with the policy's burst less a margin, refilled at 90% of
    the policy's rate; a request waits for a token instead of being refused."""

    _buckets: dict[tuple[str, str, str], list[float]] = {}

    @classmethod
    def wait(cls, source: str | None, address: str, path: str) -> None:
        from policy import require

        limits = require("ratelimit.edge")
        zone = "api" if path.startswith("/api/") else "general"
        capacity = max(1.0, limits[f"{zone}_burst_max"] - 3.0)
        rate = limits[f"{zone}_per_minute_max"] / 60 * 0.9
        now = time.monotonic()
        tokens, last = cls._buckets.get((source or "", address, zone), (capacity, now))
        tokens = min(capacity, tokens + (now - last) * rate)
        if tokens < 1:
            time.sleep((1 - tokens) / rate)
            tokens, now = 1.0, time.monotonic()
        cls._buckets[(source or "", address, zone)] = [tokens - 1, now]


class Probe:
    """HTTP(S) requests from the controller to one host, by site name, without DNS, paced
    to stay under the edge's per-address rate limits (_Pacer)."""

    def __init__(self, address: str, ca_bundle: str | None, source: str | None = None) -> None:
        self.address = address
        self.ca_bundle = ca_bundle
        self.source = source

    def connect(self, port: int, timeout: float = 10) -> socket.socket:
        """A TCP connection; one new attempt (a new source port) when the first gets no
        answer at all. Measured in the lab: the podman bridge's MAC follows the lowest MAC
        of its ports, so it changes whenever a container joins or leaves; a host then
        answers the first SYN from an address it has not heard from lately to the old MAC
        until its neighbour entry is probed again. A host that really drops the traffic
        (firewall, ban) still fails the second attempt."""
        source = (self.source, 0) if self.source else None
        try:
            return socket.create_connection((self.address, port), timeout=timeout, source_address=source)
        except TimeoutError:
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
        _Pacer.wait(self.source, self.address, path)
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
def edge_vars(request, hostvars) -> Mapping[str, Any]:
    """The variables of the host whose public sites carry this host's app: this host, or
    the edge in front of an app host that serves no public site (tiers.public_edge)."""
    name = tiers.public_edge(hostvars)
    if name == hostvars["inventory_hostname"]:
        return hostvars
    inventory = request.config.getoption("ansible_inventory")
    key = f"{inventory}#{name}"
    if key not in _VARS_CACHE:
        _VARS_CACHE[key] = HostVars(inventory, name)
    return _VARS_CACHE[key]


@pytest.fixture(scope="module")
def probe(request, edge_vars, ca_bundle) -> Probe:
    """HTTPS from outside (the controller) to this host's public sites: the host itself, or
    for an app host behind an edge, that edge (the only public way to the app)."""
    address = edge_vars.get("ansible_host") or edge_vars["inventory_hostname"]
    return Probe(address, ca_bundle, _probe_source(request.module.__name__))


@pytest.fixture(scope="module")
def sites(edge_vars) -> list[dict]:
    """The public sites in front of this host (nginx_sites of the host, or of its edge)."""
    return edge_vars.get("nginx_sites", [])


@pytest.fixture
def evidence(request):
    """Record what a check measured, for the audit report (reports/<run>/evidence.json):

        def test_hsts(probe, evidence):
            ...
            evidence("tls.hsts", max_age=age, statuses_seen=[200, 404])

    Values must be JSON-serialisable. Record before asserting, so a failing check still
    shows what it saw. Each call is kept on the test item (user_properties), which the audit
    collects per host and claim."""

    def record(claim_id: str, **measured: Any) -> None:
        from policy import claims

        assert claim_id in claims(), f"unknown claim id {claim_id!r} (policy/claims.yml)"
        # Plain JSON types only (values from hostvars are Ansible's tagged strings, which
        # pytest-xdist cannot send from a worker).
        plain = json.loads(json.dumps(measured, default=str))
        request.node.user_properties.append(("evidence", {"claim": claim_id, **plain}))

    return record


# --- Nothing left behind (tests/host/hoststate.py, test_zz_nothing_left_behind.py) ---------
# Each host's state is read before its first check; the last module compares.

HOST_SNAPSHOTS: dict[str, dict] = {}
DISRUPTIVE_RAN: set[str] = set()


@pytest.fixture(scope="module", autouse=True)
def _host_state_before(host):
    import hoststate

    name = host.backend.get_hostname()
    if name not in HOST_SNAPSHOTS:
        HOST_SNAPSHOTS[name] = hoststate.snapshot(host)


def pytest_runtest_setup(item) -> None:
    if item.get_closest_marker("disruptive"):
        host = _item_host(item)
        if host:
            DISRUPTIVE_RAN.add(host)


# --- Progress a person can follow (make verify / make demo: --progress) -------------------
# One line on stderr as each check module finishes on each host: counts and elapsed time.
# The full pytest output stays where it goes (the terminal, or demo's log file).
# Each check is also put in an xdist group named after its host, so `-n N --dist loadgroup`
# runs hosts in parallel and each host's checks in order on one worker.


def pytest_addoption(parser, pluginmanager) -> None:
    parser.addoption("--progress", action="store_true", default=False,
                     help="print a line on stderr as each check module finishes on each host")
    # The audit report (tests/host/audit_report.py: --audit-report=DIR, --audit-readonly),
    # registered here so that every way of running these checks (make verify, make audit,
    # molecule verify) can write it; registering now still adds its options to this parser.
    import audit_report

    if not pluginmanager.is_registered(audit_report):
        pluginmanager.register(audit_report, "audit_report")


def _item_host(item) -> str:
    callspec = getattr(item, "callspec", None)
    param = callspec.params.get("_testinfra_host") if callspec else None
    return param.backend.get_pytest_id().split("://", 1)[-1] if param is not None else ""


# Which hosts a module's checks are about: the inventory groups in its HOST_GROUPS (default:
# the platform hosts). The checks run with --hosts=ansible://all; a module is deselected (not
# run, never counted as passed) for hosts outside its groups, e.g. the TLS edge checks on a
# backup server, while the host baseline's checks run on both.
DEFAULT_HOST_GROUPS = ("platform",)
_GROUPS: dict[str, set[str]] = {}


def _host_groups(inventory: str, host: str) -> set[str]:
    key = f"{inventory}#{host}"
    if key not in _GROUPS:
        from ansible.inventory.manager import InventoryManager
        from ansible.parsing.dataloader import DataLoader

        inv = InventoryManager(loader=DataLoader(), sources=[inventory])
        for h in inv.get_hosts():
            _GROUPS[f"{inventory}#{h.name}"] = {g.name for g in h.get_groups()}
    return _GROUPS.get(key, set())


@pytest.hookimpl(tryfirst=True)  # before xdist's loadgroup reads the marker
def pytest_collection_modifyitems(config, items) -> None:
    inventory = config.getoption("ansible_inventory", None)
    kept, dropped = [], []
    for item in items:
        host = _item_host(item)
        wanted = set(getattr(item.module, "HOST_GROUPS", DEFAULT_HOST_GROUPS))
        # Without an inventory (a collection, a local run) every module is kept.
        if host and inventory and not (_host_groups(inventory, host) & wanted):
            dropped.append(item)
            continue
        if host:
            item.add_marker(pytest.mark.xdist_group(host))
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


class _Progress:
    def __init__(self, host_ids: list[str]) -> None:
        import time

        self.start = time.monotonic()
        self.host_ids = host_ids
        self.total: dict[tuple[str, str], int] = {}
        self.seen: dict[tuple[str, str], dict[str, int]] = {}
        self.first: dict[tuple[str, str], float] = {}

    def key(self, nodeid: str) -> tuple[str, str]:
        """(module, host) of a test id (the host: audit_report.host_scope)."""
        from audit_report import host_scope

        module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
        host = host_scope(nodeid, self.host_ids)
        return module, (host.split("://", 1)[-1] if host != nodeid else "")

    def collected(self, nodeids) -> None:
        self.total.clear()
        for nodeid in nodeids:
            k = self.key(nodeid)
            self.total[k] = self.total.get(k, 0) + 1

    def report(self, report) -> None:
        import sys
        import time

        if not (report.when == "call" or (report.when == "setup" and report.outcome != "passed")):
            return
        k = self.key(report.nodeid)
        self.first.setdefault(k, time.monotonic())
        counts = self.seen.setdefault(k, {})
        outcome = "error" if report.when == "setup" and report.outcome == "failed" else report.outcome
        counts[outcome] = counts.get(outcome, 0) + 1
        if sum(counts.values()) == self.total.get(k, -1):
            now = time.monotonic()
            elapsed = int(now - self.start)
            what = ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
            host = f" on {k[1]}" if k[1] else ""
            print(f"[{elapsed // 60:3d}:{elapsed % 60:02d}] {k[0]}{host}: {what} ({now - self.first[k]:.0f} s)",
                  file=sys.stderr, flush=True)


_PROGRESS: _Progress | None = None


def pytest_configure(config) -> None:
    global _PROGRESS
    if config.getoption("progress", False) and not hasattr(config, "workerinput"):
        from audit_report import _hosts

        _PROGRESS = _Progress([h.backend.get_pytest_id() for h in _hosts(config)])


def pytest_collection_finish(session) -> None:
    if _PROGRESS is not None and session.items:
        _PROGRESS.collected(item.nodeid for item in session.items)


def pytest_xdist_node_collection_finished(node, ids) -> None:
    if _PROGRESS is not None and not _PROGRESS.total:
        _PROGRESS.collected(ids)


def pytest_runtest_logreport(report) -> None:
    if _PROGRESS is not None:
        _PROGRESS.report(report)


@pytest.fixture
def one_check_per_app_user(hostvars):
    """While a check runs, no other worker's check trips, resets or fills the app's audit
    user (`audit_accounts.app_user`): app hosts that share a database share that user's
    limits and portfolio quota (docs/tiers.md), so a reset or a portfolio from another app
    host's check would land in the middle of this one's measurement (tiered lab,
    2026-12-04). Modules and checks opt in with `pytest.mark.usefixtures(...)`."""
    import hoststate

    try:
        name = ((hostvars.get("audit_accounts") or {}).get("app_user") or {}).get("username")
    except Exception:  # noqa: BLE001 - a vaulted value: the check itself skips with the reason
        name = None
    if not name:
        yield
        return
    with hoststate.exclusive(f"app-user-{name}"):
        yield


@pytest.fixture(scope="module")
def account(hostvars):
    """A login for checks that need one: `account("app_user")` -> (username, password).

    From `audit_accounts` in the inventory (production: vault, a dedicated audit account;
    the lab: its lab users, inventory/lab/group_vars/all/audit.yml). Without one the check
    is SKIPPED with the reason, which the audit report shows: never a silent pass. Roles:
    app_user (a non-admin user of the app), app_admin (an app admin), umami (a Umami login)."""

    def get(role: str) -> tuple[str, str]:
        try:
            entry = (hostvars.get("audit_accounts") or {}).get(role) or {}
        except Exception as exc:  # an undefined or vaulted value the controller cannot read
            pytest.skip(f"audit_accounts.{role} cannot be read from the inventory: {exc}")
        if not entry.get("username") or not entry.get("password"):
            pytest.skip(f"no audit account '{role}' in the inventory (audit_accounts.{role}: username, password)")
        return str(entry["username"]), str(entry["password"])

    return get
