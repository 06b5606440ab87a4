"""Umami (roles/umami) behind the TLS edge (roles/nginx).

Two views:
  * on the host: the service, its sandbox and environment, its files, loopback only;
  * from the controller, through nginx (`probe`, HTTPS by the site's name, verified against
    the lab CA): heartbeat, logins, the tracker and the collect endpoint, pageviews counted.

The first database query after a (re)start compiles Prisma's WASM query compiler (several
seconds), hence the generous timeouts.

Claims: analytics.self_hosted, analytics.hardened (policy/claims.yml). The Umami login comes
from the inventory's audit account (`account("umami")`; SKIP without one); secrets are
compared on the host, never copied to the controller. Disruptive: creating a website and
counting pageviews (writes data), and the default login through nginx (a failed login from
the checking address, which Umami's fail2ban jail counts).
"""

from __future__ import annotations

import json
import re
import shlex
import time
import uuid
from typing import Any

import pytest
from tiers import ANALYTICS

from policy import require

# The hosts these checks are about (tests/host/tiers.py).
HOST_GROUPS = ANALYTICS

TIMEOUT = 60
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
INSTALL_ROOT_DEFAULT = "/opt/umami"
# Seconds between collect calls: this module sends about 15 API requests from one address.
API_PACE = 1.1


def _root(host, command: str):
    if host.user().name == "root":
        return host.run(command)
    with host.sudo():
        return host.run(command)


def _site_name(hostvars, port: int) -> str:
    """The public name nginx serves Umami under: the nginx_sites entry proxying to its port."""
    for site in hostvars.get("nginx_sites", []):
        if str(site.get("upstream", "")).rstrip("/").endswith(f":{port}"):
            return site["server_names"][0]
    raise AssertionError(f"no nginx site proxies to Umami's port {port}")


@pytest.fixture(scope="module")
def umami(hostvars, sites) -> dict[str, Any]:
    """Where Umami is (host-specific names, ports and paths); no secret."""
    port = int(hostvars.get("umami_port", 3000))
    websites = hostvars.get("umami_websites", [])
    others = [s["server_names"][0] for s in sites if not str(s.get("upstream", "")).rstrip("/").endswith(f":{port}")]
    tracked = websites[0]["domain"] if websites else others[0]
    return {
        "port": port,
        "root": hostvars.get("umami_install_root", INSTALL_ROOT_DEFAULT),
        "client_ip_header": hostvars.get("umami_client_ip_header", "x-real-ip"),
        "websites": websites,
        "site": _site_name(hostvars, port),
        "app_origin": f"https://{tracked}",
    }


@pytest.fixture(scope="module")
def main_pid(host) -> int:
    pid = int(host.check_output("systemctl show -p MainPID --value umami.service"))
    assert pid > 0, "umami.service has no main process"
    return pid


def _loopback(host, umami, path: str, body: dict | None = None) -> int:
    """Status of an HTTP request made on the host itself to Umami's loopback port."""
    script = (
        "import json, sys, urllib.request, urllib.error\n"
        "url, body = sys.argv[1], sys.argv[2]\n"
        "req = urllib.request.Request(url, data=body.encode() or None, headers={'Content-Type': 'application/json'})\n"
        "try:\n"
        f"    print(urllib.request.urlopen(req, timeout={TIMEOUT}).status)\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code)\n"
    )
    url = f"http://127.0.0.1:{umami['port']}{path}"
    out = host.check_output(
        f"python3 -c {shlex.quote(script)} {shlex.quote(url)} {shlex.quote(json.dumps(body) if body else '')}"
    )
    return int(out)


# --- On the host ---------------------------------------------------------------------


@pytest.mark.claim("analytics.self_hosted")
def test_service_runs_as_its_own_user(host, main_pid, evidence):
    svc = host.service("umami")
    user = host.check_output(f"ps -o user= -p {main_pid}")
    version = host.run("cat $(readlink -f /opt/umami/current)/BUNDLE-INFO.json").stdout
    evidence("analytics.self_hosted", tool="umami", running_on_this_host=svc.is_running, user=user,
             version=json.loads(version).get("version") if version.strip() else None)
    assert svc.is_enabled
    assert svc.is_running
    assert require("analytics.self_hosted")["tool"] == "umami" and require("analytics.self_hosted")["same_host"]
    assert user == "umami"
    account = host.user("umami")
    assert account.shell in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")


@pytest.mark.claim("analytics.hardened")
def test_release_is_a_read_only_checksummed_bundle(host, umami):
    current = host.file(f"{umami['root']}/current")
    assert current.is_symlink
    release = host.file(current.linked_to)
    assert release.is_directory
    assert release.user == "root" and not release.mode & 0o022
    name = release.path.rsplit("/", 1)[1]
    info = json.loads(host.file(f"{release.path}/BUNDLE-INFO.json").content_string)
    assert name.startswith(f"{info['version']}-") and info["recipe_hash"].startswith(name.split("-", 1)[1])
    marker = host.file(f"{release.path}/.bundle-sha256").content_string.split()
    tarball = host.file(f"{umami['root']}/dist/{marker[1]}")
    assert tarball.sha256sum == marker[0]
    # The service account cannot change its own code.
    assert host.run(f"setpriv --reuid=umami --regid=umami --init-groups test -w {release.path}/server.js").rc != 0


@pytest.mark.claim("analytics.hardened")
def test_listens_on_loopback_only(host, umami, evidence):
    listeners = [
        line.split()[3].rsplit(":", 1)[0].strip("[]")
        for line in _root(host, "ss -ltnH").stdout.splitlines()
        if line.split()[3].rsplit(":", 1)[1] == str(umami["port"])
    ]
    evidence("analytics.hardened", umami_listens=listeners)
    assert listeners and set(listeners) <= set(require("analytics.hardened")["listen_addresses"]), listeners


def _service_environment(host, pid: int) -> dict[str, str]:
    """The service's environment: the running process's own (/proc/<pid>/environ) where
    root may read it; otherwise (lab containers lack CAP_SYS_PTRACE) what systemd gives it:
    the unit's Environment= plus its root-only EnvironmentFile= files."""
    proc = _root(host, f"tr '\\0' '\\n' < /proc/{pid}/environ")
    if proc.rc == 0 and proc.stdout.strip():
        return dict(item.split("=", 1) for item in proc.stdout.splitlines() if "=" in item)
    env: dict[str, str] = {}
    for item in shlex.split(host.check_output("systemctl show -p Environment --value umami.service")):
        key, _, value = item.partition("=")
        env[key] = value
    files = host.check_output("systemctl show -p EnvironmentFiles --value umami.service")
    for line in files.splitlines():
        content = _root(host, f"cat {shlex.quote(line.split()[0])}").stdout
        for entry in content.splitlines():
            if entry.strip() and not entry.lstrip().startswith("#") and "=" in entry:
                key, _, value = entry.partition("=")
                env[key.strip()] = value.strip().strip("'\"")
    return env


@pytest.mark.claim("analytics.self_hosted", "analytics.hardened")
def test_no_request_leaves_for_the_vendor(host, main_pid, umami, evidence):
    """Telemetry and update checks are off in the service's environment."""
    env = _service_environment(host, main_pid)
    secret_length = len(env.get("APP_SECRET", ""))
    evidence("analytics.self_hosted", telemetry="off" if env.get("DISABLE_TELEMETRY") == "1" else "on",
             update_checks="off" if env.get("DISABLE_UPDATES") == "1" else "on",
             next_telemetry="off" if env.get("NEXT_TELEMETRY_DISABLED") == "1" else "on")
    evidence("analytics.hardened", app_secret_length=secret_length, umami_binds=env.get("HOSTNAME"))
    assert not require("analytics.self_hosted")["telemetry"]
    assert env.get("DISABLE_TELEMETRY") == "1"
    assert env.get("DISABLE_UPDATES") == "1"
    assert env.get("NEXT_TELEMETRY_DISABLED") == "1"
    assert env.get("HOSTNAME") == "127.0.0.1"
    assert env.get("PORT") == str(umami["port"])
    assert env.get("CLIENT_IP_HEADER") == umami["client_ip_header"]
    assert secret_length >= require("analytics.hardened")["app_secret_min_length"], "APP_SECRET too short"
    assert env.get("DATABASE_URL", "").startswith("postgresql://")
    # Egress limited to what umami_ip_address_allow names (enforced where the kernel lets
    # systemd attach its cgroup filter: real hosts; see docs/analytics.md for containers).
    props = host.check_output("systemctl show -p IPAddressDeny --value umami.service")
    assert "0.0.0.0/0" in props and "::/0" in props


# Run on the host: the secrets' values are read there and never leave it (only the names of
# the places a value shows up are printed).
_UMAMI_LEAK_SCAN = r"""
import re, subprocess, sys
values = []
for name in ("database.env", "app-secret.env"):
    for line in open(f"/etc/umami/{name}"):
        key, _, value = line.strip().partition("=")
        value = value.strip().strip("'\"")
        if key in ("DATABASE_URL", "APP_SECRET") and value:
            values.append(value)
            password = re.match(r"postgres(?:ql)?://[^:]+:([^@]+)@", value)
            if password:
                values.append(password.group(1))
places = {
    "unit": ["systemctl", "cat", "umami.service"],
    "systemd environment": ["systemctl", "show", "-p", "Environment", "umami.service"],
    "command line": ["cat", f"/proc/{sys.argv[1]}/cmdline"],
}
for where, cmd in places.items():
    text = subprocess.run(cmd, capture_output=True, text=True, errors="replace").stdout
    if any(v in text for v in values) or "DATABASE_URL=" in text or "APP_SECRET=" in text:
        print(where)
print(f"checked {len(values)} values")
"""


@pytest.mark.claim("analytics.hardened")
def test_secrets_stay_in_root_only_files(host, main_pid, evidence):
    modes = {name: _root(host, f"stat -c '%U %G %a' /etc/umami/{name}").stdout.split()
             for name in ("database.env", "app-secret.env")}
    out = _root(host, f"python3 -c {shlex.quote(_UMAMI_LEAK_SCAN)} {main_pid}").stdout.splitlines()
    evidence("analytics.hardened", secret_files={k: " ".join(v) for k, v in modes.items()},
             secrets_visible_in=out[:-1], scan=out[-1] if out else None)
    mode = require("analytics.hardened")["secret_files_mode"].lstrip("0")
    for name, f in modes.items():
        assert f == ["root", "root", mode], f"/etc/umami/{name}: {f}"
    assert out and out[-1].startswith("checked") and not out[-1].startswith("checked 0"), out
    assert not out[:-1], f"a secret is visible in the {out[:-1]}"


@pytest.mark.claim("host.sandbox")
def test_sandbox(host, evidence):
    props = dict(
        line.split("=", 1)
        for line in host.check_output(
            "systemctl show umami.service -p User -p NoNewPrivileges -p ProtectSystem -p ProtectHome"
            " -p PrivateTmp -p PrivateDevices -p CapabilityBoundingSet -p RestrictSUIDSGID"
            " -p SystemCallFilter -p MemoryDenyWriteExecute"
        ).splitlines()
    )
    evidence("host.sandbox", unit="umami.service", **{k: v for k, v in props.items() if k != "SystemCallFilter"})
    assert props["User"] == "umami"
    assert props["NoNewPrivileges"] == "yes"
    assert props["ProtectSystem"] == "strict"
    assert props["ProtectHome"] == "yes"
    assert props["PrivateTmp"] == "yes"
    assert props["PrivateDevices"] == "yes"
    assert props["CapabilityBoundingSet"] == ""
    assert props["RestrictSUIDSGID"] == "yes"
    assert props["SystemCallFilter"]
    # Deliberately off: V8's JIT needs writable+executable memory (docs/analytics.md).
    assert props["MemoryDenyWriteExecute"] == "no"


@pytest.mark.claim("analytics.self_hosted")
def test_heartbeat_on_loopback(host, umami):
    assert _loopback(host, umami, "/api/heartbeat") == 200


@pytest.mark.claim("analytics.hardened")
def test_default_login_refused_on_loopback(host, umami, evidence):
    """From the host's loopback (never banned): the login every install starts with."""
    status = _loopback(host, umami, "/api/auth/login", {"username": "admin", "password": "umami"})
    evidence("analytics.hardened", default_login_admin_umami=status)
    assert status == 401 or not require("analytics.hardened")["default_login_refused"]


# --- Through nginx (https://analytics.<lab_domain>/) -----------------------------------


def _api(
    probe,
    umami,
    path: str,
    *,
    method: str = "GET",
    body: dict | None = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
):
    hdrs = {"Accept": "application/json", **(headers or {})}
    if body is not None:
        hdrs["Content-Type"] = "application/json"
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    return probe.request(
        umami["site"],
        path,
        method=method,
        headers=hdrs,
        body=json.dumps(body) if body is not None else None,
        timeout=TIMEOUT,
    )


@pytest.fixture(scope="module")
def login(account) -> tuple[str, str]:
    return account("umami")


@pytest.fixture(scope="module")
def token(probe, umami, login) -> str:
    resp = _api(probe, umami, "/api/auth/login", method="POST", body={"username": login[0], "password": login[1]})
    assert resp.status == 200, f"login as the audit account {login[0]}: HTTP {resp.status}"
    return resp.json()["token"]


@pytest.mark.claim("analytics.self_hosted")
def test_heartbeat_through_nginx(probe, umami):
    resp = _api(probe, umami, "/api/heartbeat")
    assert resp.status == 200


@pytest.mark.claim("analytics.hardened")
@pytest.mark.disruptive(reason="a failed login from the checking address, counted by Umami's fail2ban jail")
def test_default_login_refused(probe, umami):
    resp = _api(probe, umami, "/api/auth/login", method="POST", body={"username": "admin", "password": "umami"})
    assert resp.status == 401


@pytest.mark.claim("analytics.hardened")
def test_audit_account_logs_in(probe, umami, login, token):
    """The credentials from the inventory (vault) work: the login is not the default one."""
    resp = _api(probe, umami, "/api/auth/verify", method="POST", token=token)
    assert resp.status == 200
    assert resp.json()["username"] == login[0]


@pytest.mark.claim("analytics.self_hosted")
def test_configured_websites_exist(probe, umami, token):
    for site in umami["websites"]:
        resp = _api(probe, umami, f"/api/websites/{site['id']}", token=token)
        assert resp.status == 200, f"website {site['name']} ({site['id']}): HTTP {resp.status}"
        assert resp.json()["domain"] == site["domain"]


@pytest.mark.claim("analytics.self_hosted")
def test_tracker_script_can_be_embedded_by_the_app(probe, umami):
    resp = _api(probe, umami, "/script.js", headers={"Origin": umami["app_origin"], "Sec-Fetch-Dest": "script"})
    assert resp.status == 200
    assert "javascript" in (resp.header("Content-Type") or "")
    # A same-origin CORP would make browsers refuse the script on the app's pages.
    assert resp.header("Cross-Origin-Resource-Policy") in (None, "cross-origin")


@pytest.mark.claim("analytics.self_hosted")
def test_collect_endpoint_accepts_the_apps_origin(probe, umami):
    resp = _api(
        probe,
        umami,
        "/api/send",
        method="OPTIONS",
        headers={
            "Origin": umami["app_origin"],
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert 200 <= resp.status < 300
    assert resp.header("Access-Control-Allow-Origin") in ("*", umami["app_origin"])
    assert "content-type" in (resp.header("Access-Control-Allow-Headers") or "").lower()


@pytest.mark.claim("analytics.self_hosted")
@pytest.mark.disruptive(reason="creates a website and records pageviews in Umami's database")
def test_pageviews_through_nginx_are_counted(probe, umami, token):
    domain = umami["app_origin"].split("://", 1)[1]
    created = _api(
        probe,
        umami,
        "/api/websites",
        method="POST",
        token=token,
        body={"name": f"test-{uuid.uuid4().hex[:8]}", "domain": domain},
    )
    assert created.status == 200, f"create website: HTTP {created.status}"
    website = created.json()["id"]
    start = int(time.time() * 1000) - 60_000
    try:
        pageviews = 5
        for i in range(pageviews):
            # A visitor's pace: nginx's per-IP API limit (burst, then about 1/s) stays clear.
            time.sleep(API_PACE)
            sent = _api(
                probe,
                umami,
                "/api/send",
                method="POST",
                headers={
                    "User-Agent": BROWSER_UA,
                    "Origin": umami["app_origin"],
                },
                body={
                    "type": "event",
                    "payload": {
                        "website": website,
                        "hostname": domain,
                        "url": f"/test/{i}",
                        "referrer": "",
                        "language": "en-US",
                        "screen": "1920x1080",
                        "title": "test",
                    },
                },
            )
            assert sent.status == 200, f"/api/send: HTTP {sent.status}"
            assert sent.header("Access-Control-Allow-Origin") in ("*", umami["app_origin"])
        end = int(time.time() * 1000) + 60_000
        stats = _api(probe, umami, f"/api/websites/{website}/stats?startAt={start}&endAt={end}", token=token)
        assert stats.status == 200
        assert stats.json()["pageviews"]["value"] == pageviews
    finally:
        _api(probe, umami, f"/api/websites/{website}", method="DELETE", token=token)


def _csp_sources(policy: str, directive: str) -> list[str] | None:
    """The sources of a CSP directive (falling back to default-src), or None if absent."""
    directives = {}
    for part in policy.split(";"):
        words = part.split()
        if words:
            directives.setdefault(words[0].lower(), words[1:])
    return directives.get(directive, directives.get("default-src"))


@pytest.mark.claim("analytics.self_hosted", "headers.security")
def test_dashboard_csp_lets_umami_run(probe, umami):
    """The dashboard (Next.js) bootstraps with inline scripts: a CSP without
    'unsafe-inline' (or a nonce/hash) in script-src leaves a blank page in browsers.
    The dashboard itself must still not be framed by other sites."""
    resp = _api(probe, umami, "/login", headers={"Accept": "text/html"})
    assert resp.status == 200
    html = resp.body.decode()
    inline_scripts = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    policies = resp.headers.get_all("Content-Security-Policy") or []
    for policy in policies:  # every CSP header is enforced
        scripts = _csp_sources(policy, "script-src") or []
        if inline_scripts:
            assert "'unsafe-inline'" in scripts or any(s.startswith(("'nonce-", "'sha")) for s in scripts), (
                f"{len(inline_scripts)} inline scripts blocked by: {policy}"
            )
    framing = [_csp_sources(p, "frame-ancestors") for p in policies]
    assert resp.header("X-Frame-Options") == "DENY" or any(f in (["'none'"], ["'self'"]) for f in framing)
