"""Which edge sites a rolling release drains an app host from (roles/nginx upstream_member,
task "Choose the sites to edit"), run by Ansible on the controller over site text in the
shape roles/nginx/templates/site.conf.j2 renders.

The host is drained only where another server is still serving: draining the only one left
(one app host behind the edge, or the others already down) would make nginx answer 502 to
every request until the host is back, while the release switch alone keeps serving. Putting
a host back edits every site. The tiered lab proves the drain itself (docs/tiers.md).
"""

from __future__ import annotations

import base64
import json
import sys

import pytest
import yaml
from preflight_cases import REPO, ansible_playbook

MEMBER = "10.0.0.61:8443"


def site(*servers: str) -> str:
    """A site file's upstream block with these server lines (as the template writes them)."""
    lines = [f"    server {s};" for s in servers]
    return "\n".join([
        "upstream platform_app_hosts {", "    least_conn;", *lines, "    keepalive 16;", "}", "",
        "server {", "    listen 443 ssl;", "    server_name www.example.org;", "}", ""])


CASES = {
    "another app host serves": ("drained", {
        ("edge1", "/s/platform.conf"): site(f"{MEMBER} max_fails=2 fail_timeout=10s",
                                            "10.0.0.62:8443 max_fails=2 fail_timeout=10s")}),
    "the only app host": ("drained", {
        ("edge1", "/s/platform.conf"): site(f"{MEMBER} max_fails=2 fail_timeout=10s")}),
    "every other app host down on one edge": ("drained", {
        ("edge1", "/s/platform.conf"): site(f"{MEMBER} max_fails=2 fail_timeout=10s",
                                            "10.0.0.62:8443 max_fails=2 fail_timeout=10s down"),
        ("edge2", "/s/platform.conf"): site(f"{MEMBER} max_fails=2 fail_timeout=10s",
                                            "10.0.0.62:8443 max_fails=2 fail_timeout=10s")}),
    # 10.0.0.61:84430 is not the member: it still serves, so the member may go.
    "an address that only starts like the member": ("drained", {
        ("edge1", "/s/platform.conf"): site(f"{MEMBER} max_fails=2", "10.0.0.61:84430 max_fails=2")}),
    "put back": ("serving", {
        ("edge1", "/s/platform.conf"): site(f"{MEMBER} max_fails=2 fail_timeout=10s down"),
        ("edge2", "/s/platform.conf"): site(f"{MEMBER} max_fails=2 fail_timeout=10s down",
                                            "10.0.0.62:8443 max_fails=2 fail_timeout=10s")}),
}


@pytest.fixture(scope="module")
def plans(tmp_path_factory) -> dict[str, dict]:
    """Every case in one ansible-playbook run of the role's own task over slurped site text:
    case name -> the plan it made."""
    tasks = yaml.safe_load((REPO / "roles/nginx/tasks/upstream_member.yml").read_text())
    choose = next(t for t in tasks if t["name"] == "Upstream member | Choose the sites to edit")
    names = list(CASES)
    plays = []
    for index, name in enumerate(names):
        state, sites = CASES[name]
        results = [{"item": [{"item": edge}, {"path": path}], "content": base64.b64encode(text.encode()).decode()}
                   for (edge, path), text in sites.items()]
        plays.append({
            "hosts": "localhost", "gather_facts": False, "connection": "local",
            "vars": {"ansible_python_interpreter": sys.executable, "nginx_upstream_member": MEMBER,
                     "nginx_upstream_member_state": state, "__nginx_member_site_text": {"results": results}},
            "tasks": [choose, {"name": "Show", "ansible.builtin.debug": {
                "msg": f"PLAN {index} {{{{ __nginx_member_plan | to_json }}}}"}}],
        })
    stdout = ansible_playbook(tmp_path_factory.mktemp("upstream_member"), plays, timeout=300)
    out = {}
    for line in stdout.splitlines():
        if '"msg": "PLAN ' in line:
            index, text = json.loads(line.strip().split('"msg": ', 1)[1])[len("PLAN "):].split(" ", 1)
            out[names[int(index)]] = json.loads(text)
    return out


def edited(result: dict) -> list[str]:
    return [f"{s['edge']}:{s['path']}" for s in result["edit"]]


def kept(result: dict) -> list[str]:
    return [f"{s['edge']}:{s['path']}" for s in result["kept"]]


def test_drained_where_another_app_host_serves(plans) -> None:
    result = plans["another app host serves"]
    assert edited(result) == ["edge1:/s/platform.conf"] and kept(result) == []


def test_not_drained_where_it_is_the_only_app_host(plans) -> None:
    result = plans["the only app host"]
    assert edited(result) == [] and kept(result) == ["edge1:/s/platform.conf"]


def test_not_drained_where_every_other_app_host_is_down(plans) -> None:
    result = plans["every other app host down on one edge"]
    assert edited(result) == ["edge2:/s/platform.conf"] and kept(result) == ["edge1:/s/platform.conf"]


def test_an_address_that_only_starts_like_the_member_is_another_host(plans) -> None:
    assert edited(plans["an address that only starts like the member"]) == ["edge1:/s/platform.conf"]


def test_put_back_everywhere(plans) -> None:
    result = plans["put back"]
    assert edited(result) == ["edge1:/s/platform.conf", "edge2:/s/platform.conf"] and kept(result) == []
