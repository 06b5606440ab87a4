"""The app service (roles/app, docs/app.md): what a user or an auditor would notice.

Runs against any host of the `platform` group:

    pytest --hosts=ansible://platform --ansible-inventory=<inventory> \
        --ssh-identity-file=<key> tests/host/test_app_service.py

The "through nginx" tests connect from the controller to https://www.<lab_domain>/ (the
`probe` fixture) and so need the TLS edge (roles/nginx) on the host. The test of a failing
release runs ansible-playbook against the host from the controller (about a minute).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET_VARS = ("app_jwt_secret", "app_fmp_api_key", "app_polygon_api_key")


# --- helpers --------------------------------------------------------------------------------


def _var(hostvars, name: str, default):
    return hostvars.get(name, default)


def _port(hostvars) -> int:
    return int(_var(hostvars, "app_listen_port", 8000))


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


def _loopback_get(host, port: int, path: str) -> tuple[int, str]:
    """GET on the host's loopback with the distro Python (no curl on the host)."""
    script = (
        "import sys, urllib.request, urllib.error\n"
        "try:\n"
        f"    r = urllib.request.urlopen('http://127.0.0.1:{port}{path}', timeout=5)\n"
        "    print(r.status); print(r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code); print(e.read().decode())\n"
        "except OSError as e:\n"
        "    print(0); print(e)\n"
    )
    out = host.run(f"python3 - <<'EOF'\n{script}EOF")
    status, _, body = out.stdout.partition("\n")
    return int(status or 0), body.strip()


def _healthy(host, port: int) -> bool:
    status, body = _loopback_get(host, port, "/healthz")
    return status == 200 and '"ok"' in body


def _action_lines(host, hostvars) -> list[dict]:
    directory = _var(hostvars, "app_actionlog_dir", "/var/log/platform")
    month = datetime.now(UTC).strftime("%Y-%m")
    out = host.run(f"cat {directory}/actions-{month}.jsonl")
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def _secrets(hostvars) -> dict[str, str]:
    values = {name: str(hostvars[name]) for name in SECRET_VARS if hostvars.get(name)}
    for user, password in (hostvars.get("lab_app_passwords") or {}).items():
        values[f"password of {user}"] = str(password)
    assert values, "no secret values in the inventory to look for"
    return values


# --- the service --------------------------------------------------------------------------


def test_socket_and_service_enabled_and_running(host):
    for unit in ("platform.socket", "platform.service", "platform-actionlog.service"):
        svc = host.service(unit)
        assert svc.is_enabled, f"{unit} is not enabled"
        assert svc.is_running, f"{unit} is not running"


def test_service_runs_as_the_app_user(host, hostvars):
    user = _var(hostvars, "app_user", "platform")
    pid = _main_pid(host)
    assert pid > 0
    assert host.check_output(f"ps -o user= -p {pid}").strip() == user
    # Every process of the service (supervisor and workers), none as root.
    children = host.check_output(f"ps -o user= --ppid {pid}").split()
    assert len(children) >= int(hostvars.get("app_workers", 2)), children
    assert set(children) == {user}, children
    passwd = host.user(user)
    assert passwd.shell in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")
    assert not host.file(passwd.home).exists


def test_listens_only_on_loopback(host, hostvars):
    port = _port(hostvars)
    lines = host.check_output("ss -Hltnp").splitlines()
    ours = [line for line in lines if re.search(rf":{port}\s", line)]
    print("\n".join(ours))
    assert ours, f"nothing listens on port {port}"
    for line in ours:
        local = line.split()[3]
        assert local in (f"127.0.0.1:{port}", f"[::1]:{port}"), f"port {port} bound to {local}"
    # The app's processes own no listening socket of their own (PrivateNetwork): only
    # systemd's platform.socket listens.
    assert all("uvicorn" not in line and "python" not in line for line in lines), lines


@pytest.mark.parametrize("unit", ["platform.service", "platform-actionlog.service"])
def test_systemd_exposure_is_at_most_2(host, unit):
    out = host.check_output(f"systemd-analyze security --no-pager {unit}")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
    assert match, out[-500:]
    exposure = float(match.group(1))
    print(f"systemd-analyze security {unit}: exposure {exposure}")
    assert exposure <= 2.0


def test_secrets_file_is_root_only(host, hostvars):
    config = _var(hostvars, "app_config_dir", "/etc/platform")
    env = host.file(f"{config}/platform.env")
    assert env.is_file
    assert (env.user, env.group, env.mode) == ("root", "root", 0o600)
    users = host.file(f"{config}/users.json")
    assert (users.user, users.group, users.mode) == ("root", _var(hostvars, "app_group", "platform"), 0o640)
    unit = host.check_output("systemctl cat platform.service")
    assert f"EnvironmentFile={config}/platform.env" in unit


def test_state_directory_is_private(host, hostvars):
    state = host.file("/var/lib/platform")
    assert state.is_directory
    assert (state.user, state.mode) == (_var(hostvars, "app_user", "platform"), 0o700)


def test_code_is_read_only_for_the_app(host, hostvars):
    base = _var(hostvars, "app_base_dir", "/opt/platform")
    current = host.file(f"{base}/current")
    assert current.is_symlink
    assert current.linked_to.startswith(f"{base}/releases/")
    user = _var(hostvars, "app_user", "platform")
    probe = host.run(f"setpriv --reuid={user} --regid={user} --clear-groups touch {current.linked_to}/venv/x")
    assert probe.rc != 0


def test_kill_9_of_the_main_process_is_followed_by_a_restart(host, hostvars):
    port = _port(hostvars)
    before = _main_pid(host)
    host.run(f"kill -9 {before}")
    after = _wait(lambda: (pid := _main_pid(host)) not in (0, before) and pid, timeout=30)
    assert after, "platform.service was not restarted within 30 s"
    # A new main process exists while the unit is still starting: wait for "active".
    assert _wait(lambda: host.service("platform.service").is_running, timeout=30), "not active again"
    assert _wait(lambda: _healthy(host, port), timeout=60), "the restarted service is not healthy"


def test_no_secret_in_process_list_or_journal(host, hostvars):
    secrets = _secrets(hostvars)
    ps = host.check_output("ps auxww")
    journal = host.run("journalctl --no-pager --output=cat --boot").stdout
    units = host.check_output("systemctl cat platform.service platform-candidate.service platform.socket")
    for name, value in secrets.items():
        assert value not in ps, f"{name} appears in ps auxww"
        assert value not in journal, f"{name} appears in the journal"
        assert value not in units, f"{name} appears in a unit file"


def test_action_log_is_out_of_the_apps_reach(host, hostvars):
    directory = _var(hostvars, "app_actionlog_dir", "/var/log/platform")
    user = _var(hostvars, "app_user", "platform")
    log_dir = host.file(directory)
    assert (log_dir.user, log_dir.mode) == (_var(hostvars, "app_actionlog_user", "platform-actionlog"), 0o2750)
    month = datetime.now(UTC).strftime("%Y-%m")
    as_app = f"setpriv --reuid={user} --regid={user} --clear-groups"
    assert host.run(f"{as_app} cat {directory}/actions-{month}.jsonl").rc != 0
    assert host.run(f"{as_app} sh -c 'echo forged >> {directory}/actions-{month}.jsonl'").rc != 0
    assert host.run(f"{as_app} ls {directory}").rc != 0
    unit = host.check_output("systemctl cat platform.service")
    assert f"InaccessiblePaths=-{directory}" in unit


def test_actions_on_loopback_reach_the_jsonl_file(host, hostvars):
    """Until the TLS edge lands, the same chain proven on loopback: app, journal, copier, file."""
    port = _port(hostvars)
    password = hostvars["lab_app_passwords"]["alice"]
    marker = f"probe-{uuid.uuid4().hex[:8]}"
    script = (
        "import json, urllib.request\n"
        f"body = json.dumps({{'username': 'alice', 'password': {password!r}}}).encode()\n"
        f"req = urllib.request.Request('http://127.0.0.1:{port}/api/auth/login', body,\n"
        "    {'Content-Type': 'application/json'})\n"
        "token = json.load(urllib.request.urlopen(req, timeout=10))['access_token']\n"
        f"req = urllib.request.Request('http://127.0.0.1:{port}/api/portfolios/alice/{marker}',\n"
        "    b'{\"AAPL\": 1}', {'Content-Type': 'application/json',\n"
        "    'Authorization': 'Bearer ' + token}, method='PUT')\n"
        "print(urllib.request.urlopen(req, timeout=10).status)\n"
    )
    out = host.run(f"python3 - <<'EOF'\n{script}EOF")
    assert out.rc == 0 and out.stdout.strip() in ("200", "201"), out.stderr

    def written():
        return [
            r for r in _action_lines(host, hostvars)
            if r.get("op") == "portfolio_write" and r.get("details", {}).get("name") == marker
        ]

    records = _wait(written, timeout=20)
    assert records and records[0]["user"] == "alice"
    assert set(records[0]) >= {"ts", "user", "op", "details"}


# --- a release that fails its health check ----------------------------------------------------


def test_failing_release_leaves_the_previous_one_serving(host, hostvars, tmp_path, request):
    inventory = request.config.getoption("ansible_inventory")
    if not inventory:
        pytest.fail("needs --ansible-inventory to run ansible-playbook against the host")
    port = _port(hostvars)
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
        "ANSIBLE_ROLES_PATH": str(REPO_ROOT / "roles"),
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
    assert _healthy(host, port)
    assert not host.file(f"{base}/releases/0.0.1_brokenhealth").exists
    assert not host.service("platform-candidate.service").is_running


# --- through the TLS edge (needs roles/nginx on the host) -------------------------------------


@pytest.fixture(scope="module")
def site(hostvars) -> str:
    return f"www.{hostvars['lab_domain']}"


def _request(probe, site, path, **kwargs):
    """probe.request, waiting out the edge's API rate limit (60/min, burst 10) on a 429."""
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
    assert resp.status == 200, resp.body[:200]
    return resp.json()["access_token"]


@pytest.fixture(scope="module")
def tokens(probe, site, hostvars) -> dict[str, str]:
    passwords = hostvars["lab_app_passwords"]
    return {user: _login(probe, site, user, passwords[user]) for user in ("admin", "alice")}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_nginx_admin_endpoint_401_403_200(probe, site, tokens):
    assert _request(probe, site, "/api/admin/actions").status == 401
    assert _request(probe, site, "/api/admin/actions", headers=_bearer(tokens["alice"])).status == 403
    resp = _request(probe, site, "/api/admin/actions?limit=5", headers=_bearer(tokens["admin"]))
    assert resp.status == 200
    assert "actions" in resp.json()


def test_nginx_cross_user_portfolio_refused(probe, site, tokens):
    resp = _request(probe, site, "/api/portfolios/bob/main", headers=_bearer(tokens["alice"]))
    assert resp.status == 403
    resp = _request(
        probe, site, "/api/portfolios/bob/main", method="PUT", body=b'{"x": 1}',
        headers={**_bearer(tokens["alice"]), "Content-Type": "application/json"},
    )
    assert resp.status == 403


@pytest.mark.parametrize(
    "path",
    [
        "/api/portfolios/alice/..%2f..%2fetc%2fpasswd",
        "/api/portfolios/alice/%2e%2e",
        "/api/portfolios/alice/..%252f..%252fusers.json",
        "/api/portfolios/..%2fbob/main",
        "/api/portfolios/alice/main%00.json",
    ],
)
def test_nginx_traversal_refused(probe, site, tokens, path):
    resp = _request(probe, site, path, headers=_bearer(tokens["alice"]))
    assert resp.status in (400, 403, 404), (path, resp.status)
    assert b"root:" not in resp.body and b"password_hash" not in resp.body


def test_nginx_actions_appear_in_the_jsonl_file(host, hostvars, probe, site, tokens):
    assert _request(probe, site, "/api/admin/actions?limit=7", headers=_bearer(tokens["admin"])).status == 200
    assert _request(probe, site, "/api/portfolios/bob/main", headers=_bearer(tokens["alice"])).status == 403

    def seen():
        records = _action_lines(host, hostvars)
        admin_view = [r for r in records if r["op"] == "admin_view" and r["details"].get("limit") == 7]
        denied = [r for r in records if r["op"] == "access_denied" and r["user"] == "alice"
                  and r["details"].get("owner") == "bob"]
        logins = [r for r in records if r["op"] == "login" and r["user"] in ("admin", "alice")]
        return (admin_view, denied, logins) if admin_view and denied and logins else None

    found = _wait(seen, timeout=20)
    assert found, "the actions did not reach the JSONL file within 20 s"
    admin_view, _, _ = found
    # nginx's X-Forwarded-For is trusted from 127.0.0.1 only: the client address is the controller's.
    assert admin_view[-1]["ip"] not in (None, "127.0.0.1")
