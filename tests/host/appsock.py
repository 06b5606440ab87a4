"""Helpers for the app checks that talk to the app itself, on the host, around nginx."""

from __future__ import annotations

import base64
import json
import re
import shlex
import time
from pathlib import Path

_CLIENT = base64.b64encode((Path(__file__).parent / "probes" / "app_client.py").read_bytes()).decode()
ENV_FILE = "/etc/platform/platform.env"


def endpoint(host) -> str:
    """Where platform.socket listens: "unix:/path" (roles/app) or "tcp:ADDRESS:PORT"."""
    listen = host.check_output("systemctl show --property=Listen --value platform.socket")
    where = listen.split()[0]  # "/run/platform/app.sock (Stream)" or "127.0.0.1:8000 (Stream)"
    return f"unix:{where}" if where.startswith("/") else f"tcp:{where}"


def app_site(host, sites: list[dict], hostvars=None) -> str:
    """The public name of the nginx site that proxies to the app's socket (as systemd has it),
    or, for an app host behind an edge, the edge's site whose app hosts include this host's
    private listener (the host's own nginx, which proxies from there to the socket)."""
    kind, _, where = endpoint(host).partition(":")
    target = f"http://unix:{where}" if kind == "unix" else f":{where.rpartition(':')[2]}"
    names = [s["server_names"][0] for s in sites
             if str(s.get("upstream", "")).rstrip("/").endswith(target) or f"{target}:" in str(s.get("upstream", ""))]
    private = [
        f"{('[' + p['listen'] + ']') if ':' in p['listen'] else p['listen']}:{p.get('port', 8443)}"
        for p in (hostvars or {}).get("nginx_private_sites", [])
        if str(p.get("upstream", "")).rstrip("/").endswith(target)
    ]
    names += [s["server_names"][0] for s in sites if set(private) & set(s.get("upstream_servers") or [])]
    assert names, f"no nginx site proxies to the app's socket {where}"
    return names[0]


def run_plan(host, plan: dict, timeout: int = 900) -> dict:
    """Run tests/host/probes/app_client.py on the host with PLAN on stdin (as root)."""
    script = f"echo {_CLIENT} | base64 -d > /tmp/.app_client.py"
    payload = base64.b64encode(json.dumps(plan).encode()).decode()
    cmd = (
        f"{script} && echo {payload} | base64 -d | timeout {timeout} python3 /tmp/.app_client.py "
        f"{shlex.quote(endpoint(host))}; rc=$?; rm -f /tmp/.app_client.py; exit $rc"
    )
    out = host.run(cmd)
    assert out.rc == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def app_settings(host) -> dict[str, str]:
    """The app's settings as deployed on the host (the root-only environment file), without
    the secrets: what the app really runs with, not what the inventory says."""
    values = {}
    for line in host.check_output(f"cat {ENV_FILE}").splitlines():
        match = re.fullmatch(r"(PLATFORM_[A-Z_]+)='([^']*)'", line.strip())
        if match and "SECRET" not in match.group(1) and "PASSWORD" not in match.group(1):
            values[match.group(1)] = match.group(2)
    return values


def app_user(host) -> str:
    return host.check_output("systemctl show --property=User --value platform.service")


def actionlog_dir(host) -> str:
    """Where the copier writes, as its unit says (not the inventory)."""
    env = host.check_output("systemctl show --property=Environment --value platform-actionlog.service")
    found = [item.partition("=")[2] for item in env.split() if item.startswith("ACTIONLOG_DIR=")]
    assert found, env
    return found[0]


def app_users(host) -> list[str]:
    """The app's usernames, read from its users file on the host (names only, no hash)."""
    script = "import json, sys; print(' '.join(json.load(open(sys.argv[1]))['users']))"
    return host.check_output(f"python3 -c {shlex.quote(script)} /etc/platform/users.json").split()


def app_python(host) -> str:
    """The interpreter of the serving release (its venv has the app and its dependencies)."""
    return host.check_output("readlink -f /opt/platform/current") + "/venv/bin/python"


def reset_command(host, user: str | None) -> list[str]:
    """The command that lifts a user's limits and lockouts (as the app user, so the store's
    files keep their owner); empty on a release without the shared limiter. With the
    app's database (PLATFORM_DATABASE_URL, docs/tiers.md) the same tool runs against it,
    with the settings of the root-only environment file in its environment (never in argv)."""
    who = ["--all"] if user is None else [user]
    if host.run(f"grep -q '^PLATFORM_DATABASE_URL=' {ENV_FILE}").rc == 0:
        # As docs/app.md says: a transient unit with the app's environment file and user
        # (and that user's HOME: libpq looks for client certificates there).
        unit = ["-p", f"EnvironmentFile={ENV_FILE}", "-p", f"User={app_user(host)}"]
        return ["systemd-run", "--quiet", "--pipe", "--wait", "--collect", *unit,
                app_python(host), "-m", "platform_app.limits", "reset", *who]  # fmt: skip
    db = "/run/platform-limits/limits.sqlite3"
    if not host.file(db).exists:
        return []
    owner = host.file(db).user
    return ["setpriv", f"--reuid={owner}", f"--regid={owner}", "--clear-groups",
            app_python(host), "-m", "platform_app.limits", "--db", db, "reset", *who]  # fmt: skip


def reset_limits(host, user: str | None) -> None:
    command = reset_command(host, user)
    if command:
        host.check_output(shlex.join(command))


def wait(predicate, timeout: float, interval: float = 1.0):
    """Poll until predicate() is truthy; return its last value (bounded, never forever)."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value
