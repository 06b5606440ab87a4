"""The smaller promises of the app, attacked the way the review did (issue 13, finding 9):

* auth.isolation: another user's portfolios and a made-up user's answer alike (no
  username enumeration); one user cannot fill the disk (portfolios.quota);
* auth.bcrypt: the app itself refuses a users file with a bcrypt cost below 12;
* proxy.app_port_private: nothing listens on the application port; the app's socket
  only accepts root and the proxy's group, so no local process can reach the app around
  the edge or forge the client address it records and throttles by.

Set in roles/app (app_listen_socket, app_proxy_group, app_portfolio_*), enforced by the
app (app/platform_app) and systemd's platform.socket.
"""

from __future__ import annotations

import json
import shlex
import socket
import time
import uuid
from urllib.parse import urlsplit

import hoststate
import pytest
from appsock import (
    ENV_FILE,
    actionlog_dir,
    app_python,
    app_settings,
    app_site,
    app_user,
    app_users,
    endpoint,
    reset_command,
    reset_limits,
    run_plan,
    wait,
)
from tiers import APP, app_hosts_behind, inventory_host

from policy import require

# The hosts these checks are about (tests/host/tiers.py).
HOST_GROUPS = APP

# App hosts sharing a database share the audit user's limits and portfolios (conftest.py).
pytestmark = pytest.mark.usefixtures("one_check_per_app_user")


@pytest.fixture(scope="module")
def site(host, sites, hostvars) -> str:
    return app_site(host, sites, hostvars)


def _request(probe, site, path, **kwargs):
    """probe.request, waiting out the edge's API rate limit (60/min per IP) on a 429."""
    for _ in range(20):
        resp = probe.request(site, path, **kwargs)
        if resp.status != 429:
            return resp
        time.sleep(2)
    return resp


def _token(probe, site, account, role: str) -> tuple[str, dict[str, str]]:
    """Log in with an audit account (conftest `account`): its name and a bearer header."""
    user, password = account(role)
    body = json.dumps({"username": user, "password": password})
    resp = _request(probe, site, "/api/auth/login", method="POST", body=body,
                    headers={"Content-Type": "application/json"})  # fmt: skip
    assert resp.status == 200, resp.body[:200]
    return user, {"Authorization": f"Bearer {resp.json()['access_token']}"}


# --- no username enumeration --------------------------------------------------------------------


@pytest.mark.claim("auth.isolation")
def test_other_users_and_unknown_users_answer_alike(probe, site, host, account, evidence):
    """The finding: another user's portfolios answered 403, a made-up user's 404."""
    req = require("auth.isolation")
    name, token = _token(probe, site, account, "app_user")
    others = [u for u in app_users(host) if u != name]
    if not others:
        pytest.skip("the app has no second user to compare with a made-up one")
    existing, unknown = others[0], f"nobody{uuid.uuid4().hex[:6]}"
    answers = {}
    for owner in (existing, unknown):
        for path in (f"/api/portfolios/{owner}", f"/api/portfolios/{owner}/main"):
            resp = _request(probe, site, path, headers=token)
            answers[path.replace(owner, "<owner>") + f" ({'existing' if owner == existing else 'unknown'})"] = (
                resp.status, resp.body.decode(errors="replace"))
    evidence("auth.isolation", answers={k: v[0] for k, v in answers.items()})
    statuses = {status for status, _ in answers.values()}
    assert statuses <= set(req["cross_user_status"]), answers
    if req["indistinguishable"]:
        for kind in ("/api/portfolios/<owner>", "/api/portfolios/<owner>/main"):
            assert answers[f"{kind} (existing)"] == answers[f"{kind} (unknown)"], answers


# --- one user cannot fill the disk ----------------------------------------------------------------


def _portfolio_names(host, login: dict, name: str) -> list[str]:
    """The user's portfolios as the app lists them (whichever store it uses)."""
    out = run_plan(host, {"login": login, "reset": reset_command(host, name),
                          "requests": [{"method": "GET", "path": f"/api/portfolios/{name}", "keep": 1 << 20}]})
    status, _, body = out["results"][0]
    assert status == 200, out
    return json.loads(body)["portfolios"]


def _portfolio_count(host, login: dict, name: str) -> int:
    return len(_portfolio_names(host, login, name))


def _delete_portfolios(host, login: dict, name: str, prefix: str) -> None:
    """Remove what the check wrote, through the app (files or its database alike)."""
    mine = [p for p in _portfolio_names(host, login, name) if p.startswith(f"{prefix}-")]
    if mine:
        out = run_plan(host, {"login": login, "reset": reset_command(host, name),
                              "requests": [{"method": "DELETE", "path": f"/api/portfolios/{name}/{p}"} for p in mine]})
        assert {r[0] for r in out["results"]} <= {200, 204}, out
    assert not [p for p in _portfolio_names(host, login, name) if p.startswith(f"{prefix}-")]


@pytest.mark.claim("portfolios.quota")
@pytest.mark.disruptive
def test_portfolio_count_and_size_are_capped(host, hostvars, account, evidence):
    """The finding: portfolios per user were unlimited. One more than the cap is refused
    (409), one byte more than the size cap too (413); what the check wrote is removed.
    App hosts that share one database share each user's count: it is checked from the first
    of them only (on every host at once, each would count the others' portfolios)."""
    settings = app_settings(host)
    peers = app_hosts_behind(hostvars)
    if settings.get("PLATFORM_DATABASE_URL") and peers[0] != hostvars["inventory_hostname"]:
        pytest.skip(f"this host's users' portfolios are in the database it shares with {peers[0]}: checked there")
    req = require("portfolios.quota")
    max_count = int(settings.get("PLATFORM_PORTFOLIO_MAX_COUNT", 0))
    max_bytes = int(settings.get("PLATFORM_PORTFOLIO_MAX_BYTES", 0))
    prefix = f"quota{uuid.uuid4().hex[:6]}"
    name, password = account("app_user")
    login = {"username": name, "password": password}
    # What the user holds already, as the app lists it (files or its database, docs/tiers.md).
    # No other check writes a portfolio of this user meanwhile (one_check_per_app_user).
    existing = _portfolio_count(host, login, name)
    # Up to the cap (the role's default, 100, when the app has none), then one more.
    attempts = (max_count or 100) - existing + 1
    try:
        reset_limits(host, name)
        filled = run_plan(host, {
            "login": login, "concurrency": 4, "reset": reset_command(host, name),
            "repeat": {"count": max(attempts, 1), "method": "PUT", "path": f"/api/portfolios/{name}/{prefix}-{{i}}",
                       "body": {"positions": [{"symbol": "ACME", "qty": 1}]}},
        }, timeout=1800)  # fmt: skip
        too_big = run_plan(host, {
            "login": login, "reset": reset_command(host, name),
            "requests": [
                {"method": "DELETE", "path": f"/api/portfolios/{name}/{prefix}-0"},
                {"method": "PUT", "path": f"/api/portfolios/{name}/{prefix}-big",
                 "pad": (max_bytes or 256 * 1024) + 1},
            ],
        })  # fmt: skip
    finally:
        _delete_portfolios(host, login, name, prefix)
        reset_limits(host, name)
    statuses = [r[0] for r in filled["results"]]
    evidence("portfolios.quota", max_count=max_count, max_bytes=max_bytes, existing_before=existing,
             written=statuses.count(200), refused=sorted(set(statuses) - {200}),
             oversized_status=too_big["results"][1][0])  # fmt: skip
    accepted = statuses.count(200)
    assert statuses.count(req["over_count_status"]) == 1, (
        f"{accepted} of {len(statuses)} new portfolios accepted ({existing} existed): {sorted(set(statuses))}"
    )
    assert too_big["results"][1][0] == req["over_size_status"], too_big
    assert 0 < max_count <= req["max_count_max"], f"no portfolio cap in the app's settings: {settings}"
    assert 0 < max_bytes <= req["max_bytes_max"], f"no size cap in the app's settings: {settings}"
    assert statuses.count(200) == max(attempts - 1, 0), statuses


@pytest.mark.claim("auth.isolation")
@pytest.mark.disruptive(reason="writes and deletes a portfolio of the audit user")
def test_portfolios_live_on_the_database_tier(request, host, hostvars, account, evidence):
    """With app hosts apart from the database (docs/tiers.md), a user's portfolios are rows
    of the app's database on the db host, not files of the app host that served the write:
    the same data behind any app host. Seen from both ends: the row on the database host
    (psql as its superuser), no file on the app host; deleted through the app afterwards."""
    url = host.run(f"sed -n \"s/^PLATFORM_DATABASE_URL='\\(.*\\)'$/\\1/p\" {ENV_FILE}").stdout.strip()
    if not url:
        pytest.skip("the app keeps portfolios in files on this host (one app host, no app_database_host)")
    parts = urlsplit(url)
    db_address, database = parts.hostname, parts.path.lstrip("/")
    db_hosts = [h for h in hostvars["groups"].get("db", [])
                if hostvars["hostvars"][h].get("ansible_host") == db_address]  # fmt: skip
    assert db_hosts, f"PLATFORM_DATABASE_URL names {db_address}, no host of the db group"
    assert "sslmode=verify-full" in url and "sslrootcert=" in url, f"the app's database link is not verified TLS: {url}"
    db = inventory_host(request, db_hosts[0])
    name, password = account("app_user")
    login = {"username": name, "password": password}
    marker = f"tier{uuid.uuid4().hex[:8]}"
    state = host.check_output("systemctl show --property=StateDirectory --value platform.service").split()[0]
    query = (f"SELECT bytes FROM portfolios WHERE owner = '{name}' AND name = '{marker}'")  # noqa: S608
    psql = (f"runuser -u postgres -- psql -X -A -t -d {database} -c {shlex.quote(query)}")
    try:
        with hoststate.touching(db_hosts[0], f"a portfolio row of {name} ({marker})"):
            wrote = run_plan(host, {"login": login, "reset": reset_command(host, name), "requests": [
                {"method": "PUT", "path": f"/api/portfolios/{name}/{marker}", "body": {"positions": []}}]})
            row = db.run(psql).stdout.strip()
            as_file = host.file(f"/var/lib/{state}/users/{name}/{marker}.json").exists
            evidence("auth.isolation", store=f"database {database} on {db_hosts[0]}",
                     write_status=wrote["results"][0][0], row_bytes=row or None, file_on_app_host=as_file)
            assert wrote["results"][0][0] == 200, wrote
            assert row.isdigit() and int(row) > 0, f"no row for {name}/{marker} in {database} on {db_hosts[0]}"
            assert not as_file, "the portfolio was written as a file on the app host"
    finally:
        run_plan(host, {"login": login, "reset": reset_command(host, name), "requests": [
            {"method": "DELETE", "path": f"/api/portfolios/{name}/{marker}"}]})
        reset_limits(host, name)
    assert db.run(psql).stdout.strip() == "", "the check's portfolio is still in the database"


# --- bcrypt cost >= 12, enforced by the app --------------------------------------------------------


def _import_app(host, python: str, users: dict, workdir: str) -> tuple[int, str]:
    """Start the deployed release's app (import only) as the app user with a scratch
    configuration; return its exit status and stderr."""
    user = app_user(host)
    host.check_output(f"install -d -o {user} -m 0700 {workdir}/state && chown {user} {workdir}")
    host.check_output(f"echo {shlex.quote(json.dumps({'users': users}))} > {workdir}/users.json"
                      f" && chown {user} {workdir}/users.json")  # fmt: skip
    env = (f"PLATFORM_JWT_SECRET={uuid.uuid4().hex}{uuid.uuid4().hex} PLATFORM_STATE_DIR={workdir}/state"
           f" PLATFORM_USERS_FILE={workdir}/users.json PLATFORM_ACTION_LOG=file:{workdir}/actions.jsonl"
           f" PLATFORM_LIMITS_DB={workdir}/limits.sqlite3")  # fmt: skip
    out = host.run(f"cd / && setpriv --reuid={user} --regid={user} --clear-groups env -i {env}"
                   f" {python} -c 'import platform_app.main'")  # fmt: skip
    return out.rc, out.stderr.strip()


@pytest.mark.claim("auth.bcrypt")
def test_the_app_refuses_a_bcrypt_cost_below_12(host, evidence):
    """The finding: cost >= 12 was enforced only by Ansible. The serving release, started
    with a users file holding one cost-10 hash, must refuse to start (exit 78)."""
    req = require("auth.bcrypt")
    python = app_python(host)
    make_hash = "import bcrypt, sys; print(bcrypt.hashpw(b'pw', bcrypt.gensalt(int(sys.argv[1]))).decode())"
    hashes = {
        cost: host.check_output(f"{python} -c {shlex.quote(make_hash)} {cost}")
        for cost in (req["cost_min"] - 2, req["cost_min"])
    }
    workdir = host.check_output("mktemp -d /tmp/bcrypt-check.XXXXXXXX")
    try:
        good_rc, good_err = _import_app(host, python, {"u1": {"password_hash": hashes[req["cost_min"]]}}, workdir)
        weak_rc, weak_err = _import_app(host, python, {
            "u1": {"password_hash": hashes[req["cost_min"]]},
            "u2": {"password_hash": hashes[req["cost_min"] - 2]}}, workdir)  # fmt: skip
    finally:
        host.run(f"rm -rf {workdir}")
    deployed = json.loads(host.check_output("cat /etc/platform/users.json"))["users"]
    costs = sorted({int(u["password_hash"][4:6]) for u in deployed.values()})
    evidence("auth.bcrypt", deployed_costs=costs, cost_12_start=good_rc,
             cost_10_start=weak_rc, refusal=weak_err[-200:])  # fmt: skip
    assert min(costs) >= req["cost_min"], costs
    assert good_rc == 0, good_err[-500:]
    assert weak_rc == 78, f"the app started with a cost-{req['cost_min'] - 2} hash (rc {weak_rc})"
    assert f"bcrypt cost {req['cost_min'] - 2} is below {req['cost_min']}" in weak_err
    assert "Traceback" not in weak_err


# --- the application port is not exposed; the client address cannot be forged --------------------


@pytest.mark.claim("proxy.app_port_private")
def test_nothing_listens_on_the_application_port(host, hostvars, evidence):
    req = require("proxy.app_port_private")
    port = req["port"]
    listeners = host.check_output(f"ss -Hltn 'sport = :{port}'").splitlines()
    where = endpoint(host)
    evidence("proxy.app_port_private", app_listens_on=where, tcp_listeners_on_port=listeners)
    for line in listeners:
        local = line.split()[3].rsplit(":", 1)[0].strip("[]")
        assert local in req["listen_addresses"], f"port {port} bound to {local}"
    # From outside (the controller): nothing answers on the port.
    address = hostvars.get("ansible_host") or hostvars["inventory_hostname"]
    with pytest.raises(OSError):
        socket.create_connection((address, port), timeout=3).close()


@pytest.mark.claim("proxy.app_port_private")
def test_only_the_proxy_can_connect_to_the_app(host, evidence):
    """The finding: uvicorn trusted X-Forwarded-For from any local process (any process
    could connect to 127.0.0.1:8000 and forge the client address). Now an unprivileged
    local user cannot connect at all; nginx's workers can."""
    req = require("proxy.app_port_private")
    where = endpoint(host)
    proxy_group = host.check_output("ps -o group= -C nginx | sort | uniq -c | sort -n | tail -1 | awk '{print $2}'")
    probe = (
        "import socket, sys\n"
        "kind, _, where = sys.argv[1].partition(':')\n"
        "if kind == 'unix':\n"
        "    s = socket.socket(socket.AF_UNIX); target = where\n"
        "else:\n"
        "    a, _, p = where.rpartition(':'); s = socket.socket(); target = (a, int(p))\n"
        "try:\n"
        "    s.connect(target)\n"
        "    s.sendall(b'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\nX-Forwarded-For: 203.0.113.66\\r\\n\\r\\n')\n"
        "    print(s.recv(64).split(b'\\r\\n')[0].decode())\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    script = shlex.quote(probe)

    def as_user(user: str, group: str) -> str:
        return host.check_output(
            f"setpriv --reuid={user} --regid={group} --clear-groups python3 -c {script} {shlex.quote(where)}"
        )

    stranger = as_user("nobody", "nogroup")
    proxy = as_user("www-data" if proxy_group == "www-data" else proxy_group, proxy_group)
    mode = owner = None
    if where.startswith("unix:"):
        path = where.removeprefix("unix:")
        owner, mode = host.check_output(f"stat -c '%U:%G %a' {path}").split()
    evidence("proxy.app_port_private", app_socket=where, socket_owner=owner, socket_mode=mode,
             unprivileged_local_user=stranger, proxy_group=proxy_group, proxy=proxy)  # fmt: skip
    assert stranger == "PermissionError", f"an unprivileged local process reached the app: {stranger}"
    assert proxy.startswith("HTTP/1.1 200"), f"nginx's group ({proxy_group}) cannot reach the app: {proxy}"
    assert req["reachable_from_outside"] is False
    assert mode is not None and int(mode, 8) & 0o007 == 0, mode


@pytest.mark.claim("proxy.app_port_private", "actionlog")
def test_forged_forwarded_for_through_the_edge_is_ignored(probe, site, account, host, hostvars, request, evidence):
    """A client that sends its own X-Forwarded-For through nginx is recorded (and throttled)
    under its real address: nginx overwrites the header, and nobody else reaches the app.
    Behind an edge that balances across app hosts, the record is on whichever host served
    the request: every one of them is searched."""
    _, token = _token(probe, site, account, "app_user")
    marker = f"xff-{uuid.uuid4().hex[:8]}"
    resp = _request(probe, site, f"/api/portfolios/audit-nobody/{marker}",
                    headers={**token, "X-Forwarded-For": "203.0.113.66", "X-Real-IP": "203.0.113.66"})  # fmt: skip
    assert resp.status == 403
    logdir = actionlog_dir(host)
    me = hostvars["inventory_hostname"]
    serving = [host if name == me else inventory_host(request, name) for name in app_hosts_behind(hostvars)]

    def record():
        out = "".join(h.check_output(f"grep -hF '{marker}' {logdir}/actions-*.jsonl || true") + "\n"
                      for h in serving)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    found = wait(record, timeout=30)
    evidence("proxy.app_port_private", forged="203.0.113.66", recorded_ip=found[0]["ip"] if found else None,
             probe_source=probe.source)  # fmt: skip
    assert found, "the action never reached the action log"
    assert found[0]["ip"] != "203.0.113.66"
    if probe.source:
        assert found[0]["ip"] == probe.source
