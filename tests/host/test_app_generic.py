"""roles/app deploys any ASGI app, not only the reference app (issue 15).

A second, minimal ASGI app (tests/fixtures/hello_asgi: no framework, answers /healthz and
echoes one setting and whether its secret is set) is deployed with the role's generic
variables only (app_service_name, app_source, app_module, app_environment, app_secrets,
app_healthcheck_path) from an inventory holding nothing but the host's address, beside the
platform app, then removed. Proven here: it answers on its own unix socket, its plain
setting reached it, its secret sits in a root-only 0600 file and appears neither in the
process list, its units, the journal, its answers nor Ansible's output; a second run
changes nothing.

Run alone: make generic-app-test INVENTORY=...
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from policy import require

HOST_GROUPS = ("platform",)

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "hello_asgi"
SOCKET = "/run/hello/app.sock"
ENV_FILE = "/etc/hello/hello.env"
UNITS = "hello.service hello-candidate.service hello.socket hello-candidate.socket"
_SECRETS_SCAN = base64.b64encode((Path(__file__).parent / "probes" / "secrets_scan.py").read_bytes()).decode()
# GET PATH on the app's unix socket with the host's own Python; prints status and body.
_GET = (
    "import http.client, socket, sys\n"
    "c = http.client.HTTPConnection('localhost', timeout=10)\n"
    "s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1]); c.sock = s\n"
    "c.request('GET', sys.argv[2]); r = c.getresponse()\n"
    "print(r.status); print(r.read().decode())\n"
)

pytestmark = pytest.mark.disruptive(reason="deploys a second app with roles/app, then removes it")


def _playbook(request, hostvars, host, tmp_path: Path, name: str, extra: list[str]) -> subprocess.CompletedProcess:
    """ansible-playbook FIXTURE/NAME against an inventory of this host alone (its address and
    how to reach it, none of the lab's or production's group variables)."""
    hostname = host.backend.get_hostname()
    inventory = tmp_path / "inventory.yml"
    reach = {key: hostvars[key] for key in ("ansible_host", "ansible_user", "ansible_port", "ansible_ssh_common_args")
             if key in hostvars}
    # JSON is YAML; json (unlike yaml.safe_dump) takes Ansible's tagged strings as str.
    inventory.write_text(json.dumps({"all": {"hosts": {hostname: reach}}}))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
           "ANSIBLE_COLLECTIONS_PATH": str(REPO_ROOT / "collections"),
           "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
    identity = request.config.getoption("ssh_identity_file")
    if identity:
        env["ANSIBLE_PRIVATE_KEY_FILE"] = identity
    ansible = Path(sys.executable).with_name("ansible-playbook")
    return subprocess.run(  # noqa: S603
        [str(ansible), "-v", "-i", str(inventory), str(FIXTURE / name), *extra],
        capture_output=True, text=True, env=env, timeout=900, check=False,
    )


def _recap_changed(output: str) -> int:
    found = re.findall(r"changed=(\d+)", output.split("PLAY RECAP")[-1])
    assert found, output[-2000:]
    return sum(int(n) for n in found)


@pytest.fixture(scope="module")
def hello(request, host, hostvars, tmp_path_factory):
    """The hello app deployed twice (the second run must change nothing), removed afterwards
    even when a check or the deployment fails."""
    tmp = tmp_path_factory.mktemp("hello")
    token = "hello-token-" + secrets.token_hex(16)
    greeting = "hello from roles/app " + secrets.token_hex(4)
    values = tmp / "vars.yml"
    values.touch(mode=0o600)
    # Its own wheelhouse: the hosts of a molecule run deploy hello at the same time, and one
    # cache directory would have them build the same wheel into the same place at once.
    values.write_text(yaml.safe_dump({"hello_greeting": greeting, "hello_token": token,
                                      "app_wheelhouse_dir": str(tmp / "wheelhouse")}))
    try:
        started = time.monotonic()
        first = _playbook(request, hostvars, host, tmp, "deploy.yml", ["-e", f"@{values}"])
        first_s = time.monotonic() - started
        started = time.monotonic()
        second = None
        if first.returncode == 0:
            second = _playbook(request, hostvars, host, tmp, "deploy.yml", ["-e", f"@{values}"])
        second_s = time.monotonic() - started
        print(f"hello deployed in {first_s:.0f} s (rc={first.returncode}), again in {second_s:.0f} s")
        yield {"token": token, "greeting": greeting, "first": first, "second": second}
    finally:
        removed = _playbook(request, hostvars, host, tmp, "remove.yml", [])
        assert removed.returncode == 0, removed.stdout[-3000:] + removed.stderr[-2000:]


@pytest.mark.claim("infra.platform")
def test_the_role_deploys_another_asgi_app_idempotently(hello):
    first, second = hello["first"], hello["second"]
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert second is not None and second.returncode == 0, second.stdout[-4000:] if second else ""
    assert _recap_changed(second.stdout) == 0, "a second run changed the host: " + second.stdout[-3000:]


@pytest.mark.claim("infra.platform")
def test_it_answers_on_its_own_socket_with_its_setting(host, hello):
    socket_unit = host.check_output("systemctl show --property=Listen --value hello.socket")
    assert socket_unit.split()[0] == SOCKET
    sock = host.file(SOCKET)
    # Like the platform app's socket: only root and the proxy's group may connect.
    assert (sock.user, sock.group, f"{sock.mode:04o}") == ("root", "www-data", "0660")
    for path, status in (("/healthz", 200), ("/", 200)):
        out = host.check_output(f"python3 -c {shlex.quote(_GET)} {SOCKET} {path}").splitlines()
        assert int(out[0]) == status, out
    body = json.loads(out[1])
    assert body == {"app": "hello-asgi", "greeting": hello["greeting"], "secret_present": True}
    assert host.service("hello.service").is_running
    # The platform app still serves beside it.
    assert host.service("platform.service").is_running


@pytest.mark.claim("secrets.market_data")
def test_its_settings_and_secret_are_in_a_root_only_file(host, hello):
    wanted = require("secrets.market_data")
    env = host.file(ENV_FILE)
    assert (env.user, env.group, f"{env.mode:04o}") == (wanted["env_file_owner"], "root", wanted["env_file_mode"])
    unit = host.check_output("systemctl cat hello.service")
    assert f"EnvironmentFile={ENV_FILE}" in unit
    # No reference-app setting, no action-log copier for this app.
    assert "platform-actionlog" not in unit
    names = host.check_output(f"sed -n '/^[A-Za-z_]/s/=.*//p' {ENV_FILE}").split()
    assert sorted(names) == ["HELLO_GREETING", "HELLO_TOKEN"], names


@pytest.mark.claim("secrets.market_data")
def test_its_secret_is_nowhere_but_in_that_file(host, hello):
    first, second = hello["first"], hello["second"]
    for run in (first, second):
        if run is not None:
            assert hello["token"] not in run.stdout + run.stderr, "the secret appears in Ansible's output"
    # Read and searched ON the host (the process list, the units, the journal, the answers).
    out = host.check_output(
        f"echo {_SECRETS_SCAN} | base64 -d | SECRETS_SCAN_UNITS={shlex.quote(UNITS)} "
        f"python3 - {ENV_FILE} {SOCKET} / /healthz /nope"
    )
    scan = json.loads(out)
    assert scan["secrets"] == ["HELLO_TOKEN"], scan
    for where, names in scan["found"].items():
        assert not names, f"{names} appear in {where.replace('_', ' ')}"


@pytest.mark.claim("host.sandbox")
def test_it_runs_in_the_same_sandbox_as_the_platform_app(host, hello):
    """The role's sandbox is the same for any app: bounded like the platform app's unit."""
    out = host.check_output("systemd-analyze security --no-pager hello.service")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
    assert match, out[-500:]
    assert float(match.group(1)) <= require("host.sandbox")["exposure_max"]["platform.service"]
    assert host.check_output("systemctl show --property=User --value hello.service") == "hello"
