"""The app service (roles/app, docs/app.md): what a user or an auditor would notice.

Runs against any host of the `platform` group:

    pytest --hosts=ansible://platform --ansible-inventory=<inventory> \
        --ssh-identity-file=<key> tests/host/test_app_service.py

The "through nginx" tests connect from the controller to https://www.<lab_domain>/ (the
`probe` fixture) and so need the TLS edge (roles/nginx) on the host. The test of a failing
release runs ansible-playbook against the host from the controller (about a minute).

Expected values come from the policy (policy/claims.yml); the inventory gives paths and
names only. Checks that log in use the inventory's audit accounts (`account` fixture) and
are SKIPPED, with the reason, where it has none. Disruptive: the kill -9, the broken
release (reruns Ansible) and anything that writes a portfolio.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from appsock import app_site
from tiers import APP, app_hosts_behind, inventory_host

from policy import require

# The hosts these checks are about (tests/host/tiers.py).
HOST_GROUPS = APP

REPO_ROOT = Path(__file__).resolve().parents[2]
_SECRETS_SCAN = base64.b64encode((Path(__file__).parent / "probes" / "secrets_scan.py").read_bytes()).decode()


# --- helpers --------------------------------------------------------------------------------


def _var(hostvars, name: str, default):
    return hostvars.get(name, default)


def _main_pid(host) -> int:
    return int(host.check_output("systemctl show --property=MainPID --value platform.service"))


def _wait(predicate, timeout: float, interval: float = 0.5):
    """Poll until predicate() is truthy; return its last value (bounded, never forever)."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def _app_listen(host) -> str:
    """Where platform.socket listens, systemd's view (not the inventory's): "127.0.0.1:8000"
    or a unix socket's path."""
    return host.check_output("systemctl show --property=Listen --value platform.socket").split()[0]


# Python run on the host (the distro's: no curl there): HTTP on the app's own socket, TCP or unix.
_CONNECT = (
    "import http.client, json, socket\n"
    "class C(http.client.HTTPConnection):\n"
    "    def connect(self):\n"
    "        if TARGET.startswith('/'):\n"
    "            self.sock = socket.socket(socket.AF_UNIX); self.sock.settimeout(10); self.sock.connect(TARGET)\n"
    "        else:\n"
    "            address, _, port = TARGET.rpartition(':')\n"
    "            self.sock = socket.create_connection((address.strip('[]'), int(port)), timeout=10)\n"
    "def call(method, path, body=None, headers=None):\n"
    "    c = C('localhost', timeout=10); c.request(method, path, body, headers or {})\n"
    "    r = c.getresponse(); return r.status, r.read()\n"
)


def _loopback_get(host, path: str) -> tuple[int, str]:
    """GET on the app's own socket, from the host."""
    script = (
        f"TARGET = {_app_listen(host)!r}\n" + _CONNECT + "try:\n"
        f"    status, body = call('GET', {path!r}); print(status); print(body.decode())\n"
        "except OSError as e:\n"
        "    print(0); print(e)\n"
    )
    out = host.run(f"python3 - <<'EOF'\n{script}EOF")
    status, _, body = out.stdout.partition("\n")
    return int(status or 0), body.strip()


def _healthy(host) -> bool:
    status, body = _loopback_get(host, "/healthz")
    return status == 200 and '"ok"' in body


def _action_lines(host, hostvars) -> list[dict]:
    directory = _var(hostvars, "app_actionlog_dir", "/var/log/platform")
    month = datetime.now(UTC).strftime("%Y-%m")
    out = host.run(f"cat {directory}/actions-{month}.jsonl")
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def _unit(host, unit: str, prop: str) -> str:
    return host.check_output(f"systemctl show -p {prop} --value {unit}")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_json(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


# --- the service --------------------------------------------------------------------------


@pytest.mark.claim("infra.platform")
def test_socket_and_service_enabled_and_running(host, evidence):
    states = {u: (host.service(u).is_enabled, host.service(u).is_running)
              for u in ("platform.socket", "platform.service", "platform-actionlog.service")}
    exec_start = _unit(host, "platform.service", "ExecStart")
    venv_python = re.search(r"path=(\S+?)/bin/\S+", exec_start)
    python = host.run(f"{venv_python.group(1)}/bin/python -V").stdout.split()[-1] if venv_python else None
    evidence("infra.platform", app_managed_by="systemd" if all(all(v) for v in states.values()) else "not running",
             app_server="uvicorn" if "uvicorn" in exec_start else exec_start[:80], python=python)
    for unit, (enabled, running) in states.items():
        assert enabled, f"{unit} is not enabled"
        assert running, f"{unit} is not running"
    assert require("infra.platform")["app_server"] in exec_start


@pytest.mark.claim("host.sandbox")
def test_service_runs_as_an_unprivileged_user(host, evidence):
    user = _unit(host, "platform.service", "User")
    pid = _main_pid(host)
    assert pid > 0
    main = host.check_output(f"ps -o user= -p {pid}").strip()
    # Every process of the service (supervisor and workers), none as root.
    children = host.check_output(f"ps -o user= --ppid {pid}").split()
    passwd = host.user(user)
    evidence("host.sandbox", unit="platform.service", user=user, processes=[main, *children], shell=passwd.shell)
    assert user and user != "root"
    assert main == user and children and set(children) == {user}, (main, children)
    assert passwd.shell in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")
    assert not host.file(passwd.home).exists


@pytest.mark.claim("proxy.app_port_private")
def test_listens_only_on_loopback(host, evidence):
    """platform.socket listens on loopback or on a unix socket; nothing answers on the
    policy's port anywhere else."""
    wanted = require("proxy.app_port_private")
    listen = _app_listen(host)
    unix = listen.startswith("/")
    lines = host.check_output("ss -Hltn").splitlines()
    on_port = [line.split()[3] for line in lines if re.search(rf":{wanted['port']}\s", line)]
    bind = f"unix socket {listen}" if unix else listen.rpartition(":")[0].strip("[]")
    evidence("proxy.app_port_private", port=wanted["port"], app_socket=listen, bind_address=bind,
             listening_on_port=on_port)
    for local in on_port:
        assert local.rpartition(":")[0].strip("[]") in wanted["listen_addresses"], f"port {wanted['port']} on {local}"
    assert unix or bind in wanted["listen_addresses"], f"platform.socket listens on {listen}"
    # Reachable by an unprivileged local process? (connecting to a unix socket needs write
    # permission on it; any local process can reach a loopback port.)
    local = (not unix) or host.run(f"setpriv --reuid=nobody --regid=nogroup --clear-groups test -w {listen}").rc == 0
    evidence("proxy.app_port_private", reachable_by_local_users=local)
    if wanted.get("reachable_by_local_users") is False:
        assert not local, f"an unprivileged local process can connect to {listen}"
    # The app's processes own no listening socket of their own (PrivateNetwork): only
    # systemd's platform.socket listens.
    processes = host.check_output("ss -Hltnp").splitlines()
    assert all("uvicorn" not in line and "python" not in line for line in processes), processes


@pytest.mark.claim("proxy.app_port_private")
def test_app_port_unreachable_from_outside(hostvars, evidence):
    """From the controller, the host's public address does not answer on the app port."""
    address = hostvars.get("ansible_host") or hostvars["inventory_hostname"]
    port = require("proxy.app_port_private")["port"]
    try:
        socket.create_connection((address, port), timeout=3).close()
        outcome = "connected"
    except ConnectionRefusedError:
        outcome = "refused"
    except OSError as exc:  # timeout: the firewall drops it
        outcome = f"no answer ({type(exc).__name__})"
    evidence("proxy.app_port_private", reachable_from_outside=outcome == "connected", from_controller=outcome)
    assert outcome != "connected"


@pytest.mark.claim("host.sandbox")
@pytest.mark.parametrize("unit", ["platform.service", "platform-actionlog.service"])
def test_systemd_exposure_within_policy(host, unit, evidence):
    out = host.check_output(f"systemd-analyze security --no-pager {unit}")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
    assert match, out[-500:]
    exposure = float(match.group(1))
    bound = require("host.sandbox")["exposure_max"][unit]
    evidence("host.sandbox", unit=unit, exposure=exposure, exposure_max=bound)
    assert exposure <= bound


@pytest.mark.claim("secrets.market_data")
def test_secrets_file_is_root_only(host, hostvars, evidence):
    wanted = require("secrets.market_data")
    config = _var(hostvars, "app_config_dir", "/etc/platform")
    env = host.file(f"{config}/platform.env")
    assert env.is_file
    users = host.file(f"{config}/users.json")
    unit = host.check_output("systemctl cat platform.service")
    loaded = f"EnvironmentFile={config}/platform.env" in unit
    evidence("secrets.market_data", env_file=f"{config}/platform.env", owner=f"{env.user}:{env.group}",
             mode=f"{env.mode:04o}", loaded_by="systemd EnvironmentFile" if loaded else "?")
    assert (env.user, env.group, f"{env.mode:04o}") == (wanted["env_file_owner"], "root", wanted["env_file_mode"])
    assert users.user == "root" and not users.mode & 0o007, f"users.json {users.user} {users.mode:o}"
    assert loaded


@pytest.mark.claim("auth.isolation")
def test_state_directory_is_private(host, evidence):
    user = _unit(host, "platform.service", "User")
    state = host.file("/var/lib/platform")
    evidence("auth.isolation", state_dir="/var/lib/platform", owner=state.user, mode=f"{state.mode:04o}")
    assert state.is_directory
    assert (state.user, state.mode) == (user, 0o700)


@pytest.mark.claim("host.sandbox")
def test_code_is_read_only_for_the_app(host, hostvars, evidence):
    base = _var(hostvars, "app_base_dir", "/opt/platform")
    current = host.file(f"{base}/current")
    assert current.is_symlink
    assert current.linked_to.startswith(f"{base}/releases/")
    user = _unit(host, "platform.service", "User")
    # access(2) as the app user: asks, writes nothing.
    as_app = f"setpriv --reuid={user} --regid={user} --clear-groups"
    writable = host.run(f"{as_app} test -w {current.linked_to}/venv").rc == 0
    evidence("host.sandbox", unit="platform.service", release=current.linked_to, code_writable_by_app=writable)
    assert not writable


@pytest.mark.claim("infra.platform")
@pytest.mark.disruptive(reason="kills the app's main process")
def test_kill_9_of_the_main_process_is_followed_by_a_restart(host, hostvars):
    before = _main_pid(host)
    host.run(f"kill -9 {before}")
    after = _wait(lambda: (pid := _main_pid(host)) not in (0, before) and pid, timeout=30)
    assert after, "platform.service was not restarted within 30 s"
    # A new main process exists while the unit is still starting: wait for "active".
    assert _wait(lambda: host.service("platform.service").is_running, timeout=30), "not active again"
    assert _wait(lambda: _healthy(host), timeout=60), "the restarted service is not healthy"


@pytest.mark.claim("secrets.market_data")
def test_no_secret_in_process_list_journal_units_or_responses(host, hostvars, evidence):
    """The secrets are read ON the host from the app's environment file and searched there
    (tests/host/probes/secrets_scan.py): they never travel to the controller."""
    config = _var(hostvars, "app_config_dir", "/etc/platform")
    paths = ["/", "/healthz", "/api/market/status", "/api/no-such-endpoint"]
    out = host.check_output(
        f"echo {_SECRETS_SCAN} | base64 -d | python3 - {config}/platform.env {_app_listen(host)} {' '.join(paths)}"
    )
    scan = json.loads(out)
    found = scan["found"]
    evidence("secrets.market_data", secrets_searched=scan["secrets"], in_process_arguments=found["process_arguments"],
             in_unit_files=found["unit_files"], in_journal=found["journal"], journal_lines=scan["journal_lines"],
             in_responses=found["responses"], responses=scan["responses"])
    assert scan["secrets"], "no secret found in the environment file to search for"
    for where, names in found.items():
        assert not names, f"{names} appear in {where.replace('_', ' ')}"


@pytest.mark.claim("actionlog")
def test_action_log_is_out_of_the_apps_reach(host, hostvars, evidence):
    directory = _var(hostvars, "app_actionlog_dir", "/var/log/platform")
    user = _unit(host, "platform.service", "User")
    log_dir = host.file(directory)
    month = datetime.now(UTC).strftime("%Y-%m")
    as_app = f"setpriv --reuid={user} --regid={user} --clear-groups"
    # access(2) as the app user: asks, reads and writes nothing.
    can = {what: host.run(f"{as_app} test -{flag} {path}").rc == 0 for what, flag, path in (
        ("read_file", "r", f"{directory}/actions-{month}.jsonl"),
        ("write_file", "w", f"{directory}/actions-{month}.jsonl"),
        ("list_dir", "r", directory),
    )}
    unit = host.check_output("systemctl cat platform.service")
    # The sandbox hides the directory from the app, or mounts it read-only (an app that serves
    # the log through its admin API reads it, never writes it).
    sandbox = [d for d in (f"InaccessiblePaths=-{directory}", f"ReadOnlyPaths=-{directory}") if d in unit]
    retention = re.search(r"ACTIONLOG_RETENTION_MONTHS=(\d+)", _unit(host, "platform-actionlog.service", "Environment"))
    evidence("actionlog", dir=directory, owner=log_dir.user, mode=f"{log_dir.mode:04o}", app_can=can,
             app_sandbox=sandbox, retention_months=int(retention.group(1)) if retention else None)
    wanted = require("actionlog")
    assert log_dir.user != user
    # Append-only for the app: it can neither rewrite nor append (the copier appends).
    assert not (can["write_file"] and not wanted["app_can_rewrite"]), can
    assert wanted["append_only"] and sandbox, unit
    assert retention and int(retention.group(1)) >= require("actionlog")["retention_months_min"]


@pytest.mark.claim("actionlog", "auth.isolation")
@pytest.mark.disruptive(reason="writes a portfolio of the audit user")
@pytest.mark.usefixtures("one_check_per_app_user")  # not while another app host fills its quota
def test_actions_on_loopback_reach_the_jsonl_file(host, hostvars, account):
    """The chain on loopback: app, journal, copier, file."""
    user, password = account("app_user")
    marker = f"probe-{uuid.uuid4().hex[:8]}"
    script = (
        f"TARGET = {_app_listen(host)!r}\n" + _CONNECT
        + f"body = json.dumps({{'username': {user!r}, 'password': {password!r}}}).encode()\n"
        "status, data = call('POST', '/api/auth/login', body, {'Content-Type': 'application/json'})\n"
        "token = json.loads(data)['access_token']\n"
        f"status, _ = call('PUT', '/api/portfolios/{user}/{marker}', b'{{\"AAPL\": 1}}',\n"
        "    {'Content-Type': 'application/json', 'Authorization': 'Bearer ' + token})\n"
        # Nothing left behind: the record is written by then, the portfolio goes at once.
        f"gone, _ = call('DELETE', '/api/portfolios/{user}/{marker}', b'',\n"
        "    {'Authorization': 'Bearer ' + token})\n"
        "print(status, gone)\n"
    )
    out = host.run(f"python3 - <<'EOF'\n{script}EOF")
    assert out.rc == 0, out.stderr
    written_status, deleted_status = out.stdout.split()
    assert written_status in ("200", "201"), out.stdout
    assert deleted_status in ("200", "204"), f"the probe's portfolio {marker} was not deleted: {out.stdout}"

    def written():
        return [
            r for r in _action_lines(host, hostvars)
            if r.get("op") == "portfolio_write" and r.get("details", {}).get("name") == marker
        ]

    records = _wait(written, timeout=20)
    assert records and records[0]["user"] == user
    assert set(records[0]) >= set(require("actionlog")["fields"])


# --- a release that fails its health check ----------------------------------------------------


@pytest.mark.claim("infra.platform")
@pytest.mark.disruptive(reason="reruns Ansible with a broken release")
def test_failing_release_leaves_the_previous_one_serving(host, hostvars, tmp_path, request):
    inventory = request.config.getoption("ansible_inventory")
    if not inventory:
        pytest.fail("needs --ansible-inventory to run ansible-playbook against the host")
    base = _var(hostvars, "app_base_dir", "/opt/platform")
    serving = host.file(f"{base}/current").linked_to
    pid = _main_pid(host)

    broken = tmp_path / "app"
    shutil.copytree(REPO_ROOT / "app", broken, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    pyproject = broken / "pyproject.toml"
    pyproject.write_text(re.sub(r'(?m)^version = ".*"', 'version = "0.0.1+brokenhealth"', pyproject.read_text()))
    with (broken / "platform_app" / "main.py").open("a") as handle:
        handle.write('\nraise RuntimeError("this release fails its health check on purpose")\n')

    ansible = Path(sys.executable).with_name("ansible-playbook")
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(REPO_ROOT / "collections"),
    }
    identity = request.config.getoption("ssh_identity_file")
    if identity:
        env["ANSIBLE_PRIVATE_KEY_FILE"] = identity
    started = time.monotonic()
    run = subprocess.run(  # noqa: S603
        [
            str(ansible), "-i", inventory, str(REPO_ROOT / "playbooks" / "app.yml"),
            "--limit", host.backend.get_hostname(), "--tags", "app_release",
            "-e", f"app_source={broken}", "-e", "app_healthcheck_timeout=6",
        ],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    print(f"ansible-playbook with a broken release: rc={run.returncode} in {time.monotonic() - started:.0f} s")
    assert run.returncode != 0, "the play must fail when the new release fails its health check"
    assert "failed its health check" in run.stdout, run.stdout[-3000:]
    assert host.file(f"{base}/current").linked_to == serving
    assert _main_pid(host) == pid, "the serving process was restarted"
    assert _healthy(host)
    assert not host.file(f"{base}/releases/0.0.1_brokenhealth").exists
    assert not host.service("platform-candidate.service").is_running


# --- through the TLS edge (needs roles/nginx on the host) -------------------------------------


@pytest.fixture(scope="module")
def site(host, sites, hostvars) -> str:
    """The public name of the site nginx proxies to the app (the inventory's nginx_sites, or
    its edge's for an app host behind an edge)."""
    return app_site(host, sites, hostvars)


def _request(probe, site, path, **kwargs):
    """probe.request (paced under the edge's limits), waiting out a 429 should one come."""
    for _ in range(15):
        resp = probe.request(site, path, **kwargs)
        if resp.status != 429:
            return resp
        time.sleep(1.5)
    return resp


def _login(probe, site, user, password) -> str:
    resp = _request(
        probe, site, "/api/auth/login", method="POST",
        headers={"Content-Type": "application/json"},
        body=json.dumps({"username": user, "password": password}),
    )
    assert resp.status == 200, f"login as the audit account {user}: HTTP {resp.status}"
    return resp.json()["access_token"]


@pytest.fixture(scope="module")
def user_token(probe, site, account) -> tuple[str, str]:
    name, password = account("app_user")
    return name, _login(probe, site, name, password)


@pytest.fixture(scope="module")
def admin_token(probe, site, account) -> tuple[str, str]:
    name, password = account("app_admin")
    return name, _login(probe, site, name, password)


# Run on the host: each user's name, role and bcrypt cost, never a hash.
_USERS_SCRIPT = (
    "import json, re, sys\n"
    "users = json.load(open(sys.argv[1]))['users']\n"
    "out = []\n"
    "for name, entry in users.items():\n"
    "    m = re.match(r'[$](2[aby])[$]([0-9]+)[$]', entry.get('password_hash', ''))\n"
    "    out.append([name, entry.get('role'), m.group(1) if m else None, int(m.group(2)) if m else None])\n"
    "print(json.dumps(out))\n"
)


def _users(host, hostvars) -> list[list]:
    config = _var(hostvars, "app_config_dir", "/etc/platform")
    return json.loads(host.check_output(f"python3 -c {shlex.quote(_USERS_SCRIPT)} {config}/users.json"))


@pytest.fixture(scope="module")
def other_user(host, hostvars, user_token) -> str:
    """Another user of the app (its name only, read from the users file on the host)."""
    others = [name for name, *_ in _users(host, hostvars) if name != user_token[0]]
    if not others:
        pytest.skip("the app has no second user to test isolation against")
    return others[0]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.claim("auth.rbac")
def test_admin_endpoint_refuses_anonymous_requests(probe, site, evidence):
    wanted = require("auth.rbac")
    status = _request(probe, site, wanted["admin_path"]).status
    evidence("auth.rbac", anonymous=status)
    assert status == wanted["anonymous_status"]


@pytest.mark.claim("auth.rbac")
def test_admin_endpoint_refuses_non_admins(probe, site, user_token, evidence):
    wanted = require("auth.rbac")
    status = _request(probe, site, wanted["admin_path"], headers=_bearer(user_token[1])).status
    evidence("auth.rbac", non_admin=status)
    assert status == wanted["non_admin_status"]


@pytest.mark.claim("auth.rbac", "actionlog")
def test_admin_endpoint_serves_admins(probe, site, admin_token, evidence):
    wanted = require("auth.rbac")
    resp = _request(probe, site, f"{require('actionlog')['admin_api']}?limit=5", headers=_bearer(admin_token[1]))
    records = resp.json().get("actions", []) if resp.status == 200 else []
    evidence("auth.rbac", admin=resp.status)
    evidence("actionlog", admin_api=resp.status, fields_seen=sorted({k for r in records for k in r}))
    assert resp.status == wanted["admin_status"]
    assert isinstance(resp.json()["actions"], list)


@pytest.mark.claim("auth.jwt")
def test_tokens_are_short_lived_hs256_and_verified(probe, site, user_token, evidence):
    wanted = require("auth.jwt")
    token = user_token[1]
    head, body, signature = token.split(".")
    header, claims = _b64url_json(head), _b64url_json(body)
    lifetime = claims["exp"] - claims["iat"]
    forged_sig = f"{head}.{body}.{_b64url(bytes(32))}"
    tampered = f"{head}.{_b64url(json.dumps({**claims, 'role': 'admin'}).encode())}.{signature}"
    unsigned = f"{_b64url(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{body}."
    statuses = {"genuine": _request(probe, site, "/api/me", headers=_bearer(token)).status}
    for name, value in (("forged_signature", forged_sig), ("tampered_claims", tampered), ("alg_none", unsigned)):
        statuses[name] = _request(probe, site, "/api/me", headers=_bearer(value)).status
    evidence("auth.jwt", algorithm=header.get("alg"), lifetime_seconds=lifetime, server_state="none (stateless)",
             statuses=statuses)
    assert header.get("alg") == wanted["algorithm"]
    assert 0 < lifetime <= wanted["lifetime_seconds_max"]
    assert statuses["genuine"] == 200
    for name in wanted["rejects"]:
        assert statuses[name] == 401, f"{name}: HTTP {statuses[name]}"


@pytest.mark.claim("auth.bcrypt")
def test_password_hashes_are_bcrypt_with_the_policy_cost(host, hostvars, evidence):
    """Read on the host: only each hash's scheme and cost leave it, never a hash."""
    found = _users(host, hostvars)
    schemes = sorted({f"${scheme}$" if scheme else "not bcrypt" for _, _, scheme, _ in found})
    costs = [cost for *_, cost in found]
    evidence("auth.bcrypt", users=len(found), schemes=schemes, costs=sorted(set(costs), key=str))
    wanted = require("auth.bcrypt")
    assert wanted["algorithm"] == "bcrypt"
    assert found, "no users"
    assert all(scheme for _, _, scheme, _ in found), "a password hash is not bcrypt"
    assert all(c is not None and c >= wanted["cost_min"] for c in costs), costs


@pytest.mark.claim("auth.isolation")
def test_cross_user_reads_refused_alike(probe, site, user_token, other_user, evidence):
    wanted = require("auth.isolation")
    token = user_token[1]
    other = _request(probe, site, f"/api/portfolios/{other_user}/main", headers=_bearer(token))
    listing = _request(probe, site, f"/api/portfolios/{other_user}", headers=_bearer(token))
    missing = _request(probe, site, "/api/portfolios/no-such-user-audit/main", headers=_bearer(token))
    evidence("auth.isolation", other_users_portfolio=other.status, other_users_list=listing.status,
             missing_users_portfolio=missing.status)
    assert other.status in wanted["cross_user_status"]
    assert listing.status in wanted["cross_user_status"]
    if wanted["indistinguishable"]:
        assert other.status == missing.status and other.body == missing.body, (
            f"another user's portfolio ({other.status} {other.body[:60]!r}) and a missing user's "
            f"({missing.status} {missing.body[:60]!r}) can be told apart"
        )


@pytest.mark.claim("auth.isolation")
@pytest.mark.disruptive(reason="would write another user's portfolio if the isolation were broken")
def test_cross_user_write_refused(probe, site, user_token, other_user):
    resp = _request(
        probe, site, f"/api/portfolios/{other_user}/main", method="PUT", body=b'{"x": 1}',
        headers={**_bearer(user_token[1]), "Content-Type": "application/json"},
    )
    assert resp.status == 403


@pytest.mark.claim("auth.isolation")
@pytest.mark.parametrize(
    "template",
    [
        "/api/portfolios/{me}/..%2f..%2fetc%2fpasswd",
        "/api/portfolios/{me}/%2e%2e",
        "/api/portfolios/{me}/..%252f..%252fusers.json",
        "/api/portfolios/..%2f{other}/main",
        "/api/portfolios/{me}/main%00.json",
    ],
)
def test_traversal_refused(probe, site, user_token, other_user, template, evidence):
    path = template.format(me=user_token[0], other=other_user)
    resp = _request(probe, site, path, headers=_bearer(user_token[1]))
    evidence("auth.isolation", traversal=template, status=resp.status)
    assert resp.status in require("auth.isolation")["path_traversal_status"], (path, resp.status)
    assert b"root:" not in resp.body and b"password_hash" not in resp.body


@pytest.mark.claim("actionlog")
def test_actions_through_nginx_appear_in_the_jsonl_file(host, hostvars, probe, site, user_token, admin_token,
                                                         other_user, request, evidence):
    """Behind an edge that balances across app hosts, each request's record is on the host
    that served it: the action logs of all of them are read."""
    admin, user = admin_token[0], user_token[0]
    assert _request(probe, site, "/api/admin/actions?limit=7", headers=_bearer(admin_token[1])).status == 200
    assert _request(probe, site, f"/api/portfolios/{other_user}/main", headers=_bearer(user_token[1])).status == 403
    me = hostvars["inventory_hostname"]
    serving = [host if name == me else inventory_host(request, name) for name in app_hosts_behind(hostvars)]

    def seen():
        records = [r for h in serving for r in _action_lines(h, hostvars)]
        admin_view = [r for r in records if r["op"] == "admin_view" and r["details"].get("limit") == 7]
        denied = [r for r in records if r["op"] == "access_denied" and r["user"] == user
                  and r["details"].get("owner") == other_user]
        logins = [r for r in records if r["op"] == "login" and r["user"] in (admin, user)]
        return (admin_view, denied, logins) if admin_view and denied and logins else None

    found = _wait(seen, timeout=20)
    last = found[0][-1] if found else {}
    evidence("actionlog", format=require("actionlog")["format"], record_fields=sorted(last),
             client_ip_recorded=last.get("ip"))
    assert found, "the actions did not reach the JSONL file within 20 s"
    assert set(last) >= set(require("actionlog")["fields"])
    # nginx's X-Forwarded-For is trusted from 127.0.0.1 only: the client address is the controller's.
    assert last["ip"] not in (None, "127.0.0.1")
