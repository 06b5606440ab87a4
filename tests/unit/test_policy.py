"""policy/claims.yml is the contract, and everything answers to it (no host needed).

- The file is well formed: unique ids, the fields every claim needs, page_values that name
  something the checks record.
- Both directions between claims and checks (collected by pytest itself from tests/host):
  every claim has at least one check tagged with it, every host check cites at least one
  existing claim, and every requirement of a claim is read by a module that proves it.
- The roles' copies of the policy (roles/*/vars/policy.yml) equal the policy; the roles'
  defaults satisfy it (their policy preflight passes, run by Ansible on the controller);
  an inventory that weakens a claim is refused, naming the claim, unless it names an
  exception with a reason.
- Values two roles share have one home (the backup time).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "host"))
from audit_report import host_scope, index_checks  # noqa: E402
from preflight_cases import run  # noqa: E402

from policy import claims  # noqa: E402

# Claims whose checks other helpers of issue 12 write or tag in parallel, and host check
# modules they tag. Each entry is a strict xfail: as soon as the check exists (or the module
# is tagged) the test XPASSes, which fails, and the entry must be removed.
AWAITING_CHECKS: dict[str, str] = {}
AWAITING_TAGS: dict[str, str] = {}

COLLECT_PLUGIN = '''
import json, os
def pytest_collection_modifyitems(session, config, items):
    out = []
    for item in items:
        ids = []
        for mark in item.iter_markers("claim"):
            ids += [a for a in mark.args if a not in ids]
        out.append({"module": item.path.name, "name": item.originalname, "claims": ids,
                    "disruptive": item.get_closest_marker("disruptive") is not None})
    with open(os.environ["CLAIM_DUMP"], "w") as f:
        json.dump(out, f)
'''


def _policy() -> dict:
    return yaml.safe_load((REPO / "policy" / "claims.yml").read_text())


@pytest.fixture(scope="session")
def collected(tmp_path_factory) -> list[dict]:
    """Every host check as pytest collects it (markers from decorators, pytestmark,
    parametrize), without a host."""
    tmp = tmp_path_factory.mktemp("collect")
    (tmp / "claimdump.py").write_text(COLLECT_PLUGIN)
    env = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "CLAIM_DUMP": str(tmp / "checks.json")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider", "-p", "claimdump",
         "tests/host"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((tmp / "checks.json").read_text())


# --- the file ---------------------------------------------------------------------------------


def test_claims_are_well_formed() -> None:
    data = _policy()
    ids = [c["id"] for s in data["sections"] for c in s["claims"]]
    assert len(ids) == len(set(ids)), "duplicate ids"
    for section in data["sections"]:
        assert section.get("id") and section.get("title")
        for claim in section["claims"]:
            where = claim.get("id", "?")
            assert re.fullmatch(r"[a-z]+(\.[a-z_]+)*", claim["id"]), where
            assert claim.get("title") and claim.get("says"), where
            assert claim.get("origin") in ("page", "ours"), where
            assert isinstance(claim.get("require"), dict) and claim["require"], f"{where}: no requirements"


def test_page_claims_quote_the_page() -> None:
    """A claim of origin page holds the page's words (modulo spacing and punctuation)."""
    page = re.sub(r"\W+", " ", (REPO / "policy" / "page.txt").read_text()).lower()
    for claim in claims().values():
        if claim["origin"] != "page":
            continue
        words = re.sub(r"\W+", " ", claim["says"]).lower().split()
        # Its first words appear in the page in this order (the page's sentence, maybe shortened).
        head = " ".join(words[:4])
        assert head in page, f"{claim['id']}: {claim['says']!r} is not the page's wording"


# --- claims <-> checks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "claim_id",
    [pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=f"awaiting {AWAITING_CHECKS[c]}"))
     if c in AWAITING_CHECKS else c for c in claims()],
)
def test_every_claim_has_a_check(collected, claim_id) -> None:
    proving = sorted({f"{c['module']}::{c['name']}" for c in collected if claim_id in c["claims"]})
    assert proving, f"no host check carries @pytest.mark.claim({claim_id!r})"


def _modules() -> list[str]:
    return sorted(p.name for p in (REPO / "tests" / "host").glob("test_*.py"))


@pytest.mark.parametrize(
    "module",
    [pytest.param(m, marks=pytest.mark.xfail(strict=True, reason=f"awaiting tags from the {AWAITING_TAGS[m]}"))
     if m in AWAITING_TAGS else m for m in _modules()],
)
def test_every_host_check_cites_an_existing_claim(collected, module) -> None:
    known = claims()
    checks = [c for c in collected if c["module"] == module]
    assert checks, f"{module}: nothing collected"
    untagged = sorted({c["name"] for c in checks if not c["claims"]})
    unknown = sorted({(c["name"], i) for c in checks for i in c["claims"] if i not in known})
    assert not untagged, f"{module}: checks citing no claim: {untagged}"
    assert not unknown, f"{module}: unknown claim ids: {unknown}"


def test_the_audit_sees_the_marks_pytest_sees(collected) -> None:
    """The audit report lists the checks it did not run from the source (audit_report.index_checks):
    it must agree with pytest's own collection."""
    by_source = {(c.module, c.name): (sorted(c.claims), c.disruptive) for c in index_checks(REPO / "tests" / "host")}
    by_pytest = {(c["module"], c["name"]): (sorted(c["claims"]), c["disruptive"]) for c in collected}
    assert by_source == by_pytest


@cache
def _module_sources() -> dict[str, str]:
    return {p.name: p.read_text() for p in (REPO / "tests" / "host").glob("test_*.py")}


@pytest.mark.parametrize("claim_id", [c for c in claims() if c not in AWAITING_CHECKS])
def test_every_requirement_is_read_by_a_check(collected, claim_id) -> None:
    """Each requirement key of a claim appears ("key" or key=) in a module with a check of
    that claim: no requirement that nothing measures."""
    modules = {c["module"] for c in collected if claim_id in c["claims"]}
    text = "".join(_module_sources()[m] for m in modules)
    missing = [key for key in claims()[claim_id]["require"]
               if not re.search(rf"""["']{re.escape(key)}["']|\b{re.escape(key)}=""", text)]
    assert not missing, f"{claim_id}: no check in {sorted(modules)} reads {missing}"


def test_page_values_name_recorded_evidence() -> None:
    """page_values are compared with what checks record: each key is recorded somewhere."""
    text = "".join(_module_sources().values())
    for claim in claims().values():
        for key in claim.get("page_values") or {}:
            if claim["id"] in AWAITING_CHECKS:
                continue
            assert re.search(rf"\b{re.escape(key)}=", text), f"{claim['id']}: no check records {key}="


# --- roles answer to the policy ------------------------------------------------------------


def _role_policies() -> dict[str, dict]:
    out = {}
    for path in sorted(REPO.glob("roles/*/vars/policy.yml")):
        role = path.parts[-3]
        data = yaml.safe_load(path.read_text())
        out[role] = data[f"__{role}_policy"]
    return out


def test_roles_carry_a_policy_copy() -> None:
    assert set(_role_policies()) >= {"nginx", "baseline", "backup", "app"}


@pytest.mark.parametrize("role", sorted(_role_policies()))
def test_role_policy_copy_equals_the_policy(role) -> None:
    known = claims()
    for claim_id, wanted in _role_policies()[role].items():
        assert claim_id in known, f"roles/{role}/vars/policy.yml: unknown claim {claim_id}"
        for key, value in wanted.items():
            assert key in known[claim_id]["require"], f"roles/{role}: {claim_id}.{key} is not in the policy"
            assert value == known[claim_id]["require"][key], (
                f"roles/{role}/vars/policy.yml {claim_id}.{key} = {value!r}, policy/claims.yml says "
                f"{known[claim_id]['require'][key]!r}"
            )


@pytest.mark.parametrize("role", sorted(_role_policies()))
def test_role_runs_its_policy_preflight_first(role) -> None:
    """Imported from tasks/main.yml, tagged always, before anything that changes the host."""
    tasks = yaml.safe_load((REPO / "roles" / role / "tasks" / "main.yml").read_text())
    imports = [t.get("ansible.builtin.import_tasks") for t in tasks]
    assert "policy.yml" in imports, f"roles/{role}/tasks/main.yml does not import policy.yml"
    entry = tasks[imports.index("policy.yml")]
    assert "always" in entry.get("tags", []), f"roles/{role}: the policy preflight must run with every tag"
    before = imports[: imports.index("policy.yml")]
    assert set(before) <= {"preflight.yml", "assert.yml"}, f"roles/{role}: {before} run before the policy check"


# Inputs with no default (secrets, per-deployment values) that the preflight reads.
REQUIRED_INPUTS = {
    "nginx_security_txt_expires": "2027-06-30T00:00:00Z",
    "nginx_security_txt_contact": "mailto:security@example.org",
    # roles/app: the reference app's claims apply with its features on (as in the lab and production).
    "app_platform_features": True,
    "app_users": [{"name": "u", "role": "user",
                   "password_hash": "$2b$12$INlLbgiTwB4lScHepsvNWuuRzKsc3Cal5h70F73Nt.xcPijs4Eb76"}],
    # roles/backup has no default off-site server; production names one (the policy needs it).
    "backup_offsite_url": "sftp:restic@backup.example.org:/repos/host",
}


def _play(index: int, extra: dict) -> dict:
    """One play per case: every role's policy preflight with the case's variables (play vars
    override role defaults, as an inventory does); prints CASE <n> PASS or FAIL: <message>."""
    return {
        "name": f"Policy preflight, case {index}",
        "hosts": "localhost",
        "gather_facts": False,
        "connection": "local",
        # The controller's own Python (the .venv): interpreter discovery could pick a shim that
        # does not run here (roles/backup reads the package database with a module).
        "vars": {"ansible_python_interpreter": sys.executable, **REQUIRED_INPUTS, **extra},
        "tasks": [{
            "name": "Run each role's policy preflight",
            "block": [
                {"name": "Include", "ansible.builtin.include_role": {"name": "{{ item }}", "tasks_from": "policy.yml"},
                 "loop": [f"hardened.platform.{role}" for role in ("baseline", "nginx", "app", "backup")]},
                {"name": "Pass", "ansible.builtin.debug": {"msg": f"CASE {index} PASS"}},
            ],
            "rescue": [{"name": "Fail", "ansible.builtin.debug": {
                # A failed loop says "One or more items failed": the items' own messages follow.
                "msg": f"CASE {index} FAIL: {{{{ ([ansible_failed_result.msg | default('')]"
                       " + (ansible_failed_result.results | default([]) | selectattr('failed', 'defined')"
                       " | selectattr('failed') | map(attribute='msg') | list)) | join(' | ') }}"}}],
        }],
    }


EXCEPTION = {"reason": "a named, reasoned exception (unit test)"}
BASELINE_MODES = yaml.safe_load((REPO / "roles/baseline/defaults/main.yml").read_text())["baseline_file_modes"]
CASES = {
    # name: (extra vars, claim the preflight must name, or None when it must pass)
    "role defaults": ({}, None),
    "HSTS of 5 minutes": ({"nginx_hsts_max_age": 300}, "tls.hsts"),
    "HSTS of 5 minutes, with an exception": (
        {"nginx_hsts_max_age": 300, "policy_exceptions": [{"claim": "tls.hsts", **EXCEPTION}]}, None),
    "300 requests a minute": ({"nginx_ratelimit_general_rate": "300r/m"}, "ratelimit.edge"),
    "a burst of 100": ({"nginx_ratelimit_api_burst": 100}, "ratelimit.edge"),
    "TLS 1.3 only": ({"nginx_tls_profile": "modern"}, "tls.versions"),
    "a public site with a dashboard's bursts": (
        {"nginx_sites": [{"name": "app", "server_names": ["www.example.org"], "upstream": "http://127.0.0.1:8000",
                          "ratelimit": {"general_burst": 60}}]}, "ratelimit.edge"),
    "an admin-only site with a dashboard's bursts": (
        {"nginx_sites": [{"name": "an", "server_names": ["an.example.org"], "upstream": "http://127.0.0.1:3000",
                          "admin_only": True, "public_paths": ["/script.js"], "static_paths": ["/_next/static/"],
                          "ratelimit": {"general_burst": 60, "api_burst": 60, "static_burst": 100}}]}, None),
    "an admin-only site with a public path bursting 60": (
        {"nginx_sites": [{"name": "an", "server_names": ["an.example.org"], "upstream": "http://127.0.0.1:3000",
                          "admin_only": True, "public_paths": ["/script.js"],
                          "ratelimit": {"public_burst": 60}}]}, "ratelimit.edge"),
    "a site dropping X-Frame-Options": (
        {"nginx_sites": [{"name": "app", "server_names": ["www.example.org"], "upstream": "http://127.0.0.1:8000",
                          "headers": {"X-Frame-Options": None}}]}, "headers.security"),
    "a site framing allowed by CSP": (
        {"nginx_sites": [{"name": "app", "server_names": ["www.example.org"], "upstream": "http://127.0.0.1:8000",
                          "headers": {"Content-Security-Policy": "default-src 'self'"}}]}, "headers.security"),
    "X-XSS-Protection 1; mode=block": (
        {"nginx_security_headers": {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
                                    "X-XSS-Protection": "1; mode=block", "Referrer-Policy": "no-referrer",
                                    "Permissions-Policy": "camera=()", "Cross-Origin-Opener-Policy": "same-origin",
                                    "Content-Security-Policy": "object-src 'none'; frame-ancestors 'none'"}},
        "headers.security"),
    "security.txt expiring in two years": ({"nginx_security_txt_expires": "2029-01-01T00:00:00Z"},
                                           "disclosure.security_txt"),
    "password logins for root": ({"baseline_ssh_permit_root_login": "yes"}, "host.ssh"),
    "a SHA-1 MAC": ({"baseline_ssh_macs": ["hmac-sha1", "hmac-sha2-256-etm@openssh.com"]}, "host.ssh"),
    "a crontab others can read": (
        {"baseline_file_modes": {**BASELINE_MODES, "/etc/crontab": "0644"}}, "host.file_modes"),
    "sshd_config left out of the modes": ({"baseline_file_modes": {"/etc/crontab": "0600"}}, "host.file_modes"),
    "modes stricter than the policy": ({"baseline_file_modes": {**BASELINE_MODES, "/etc/crontab": "0400"}}, None),
    "port 8000 public in the firewall": ({"baseline_firewall_public_tcp_ports": [80, 443, 8000]}, "host.firewall"),
    "upgrades guarding a 02:00 backup": ({"baseline_updates_backup_time": "02:00"}, "backup.schedule"),
    "backups at 04:00": ({"backup_on_calendar": "*-*-* 04:00:00 UTC"}, "backup.schedule"),
    "6 monthly snapshots": ({"backup_keep_monthly": 6}, "backup.retention"),
    "no off-site copy": ({"backup_offsite_url": ""}, "backup.offsite_append_only"),
    "no off-site copy, with an exception": (
        {"backup_offsite_url": "", "policy_exceptions": [{"claim": "backup.offsite_append_only", **EXCEPTION}]}, None),
    "/opt/platform not backed up": ({"backup_paths": ["/var/lib/platform", "/etc"]}, "backup.coverage"),
    # The databases are dumped where PostgreSQL runs (the package database says where).
    "a host that runs PostgreSQL, without dumps": (
        {"ansible_facts": {"packages": {"postgresql": [{"version": "17+278"}]}}, "backup_postgresql_enabled": False},
        "backup.coverage"),
    "an edge or app host without PostgreSQL, without dumps": (
        {"ansible_facts": {"packages": {"nginx": []}}, "backup_postgresql_enabled": False}, None),
    "day-long tokens": ({"app_jwt_ttl_seconds": 86400}, "auth.jwt"),
    "bcrypt cost 10": (
        {"app_users": [{"name": "u", "role": "user",
                        "password_hash": "$2b$10$INlLbgiTwB4lScHepsvNWuuRzKsc3Cal5h70F73Nt.xcPijs4Eb76"}]},
        "auth.bcrypt"),
    "120 strategy evaluations a minute per user": ({"app_ratelimit_compute_per_minute": 120}, "ratelimit.app"),
    "account-wide lockouts of an hour": ({"app_login_account_lockout_max_seconds": 3600}, "ratelimit.app"),
    "10,000 portfolios per user": ({"app_portfolio_max_count": 10000}, "portfolios.quota"),
    "another app, without the reference app's users or limits": (
        {"app_platform_features": False, "app_users": None, "app_portfolio_max_count": 10000}, None),
    "an exception without a reason": ({"policy_exceptions": [{"claim": "tls.hsts", "reason": " "}]}, "reason"),
}


@pytest.fixture(scope="module")
def preflight_runs(tmp_path_factory) -> dict[str, str]:
    """Every case in one ansible-playbook run on the controller: case name -> PASS / FAIL: msg."""
    names = list(CASES)
    return run(tmp_path_factory.mktemp("preflight"), {name: _play(i, CASES[name][0]) for i, name in enumerate(names)})


@pytest.mark.parametrize("case", list(CASES))
def test_policy_preflight(preflight_runs, case) -> None:
    outcome = preflight_runs.get(case, "no result")
    claim = CASES[case][1]
    if claim is None:
        assert outcome == "PASS", outcome
    else:
        assert outcome.startswith("FAIL"), f"{case}: the preflight let it through"
        needle = "policy_exceptions entries need" if claim == "reason" else f"weakens policy claim {claim}"
        assert needle in " ".join(outcome.split()), outcome


# --- one home for shared values -------------------------------------------------------------


def test_backup_time_has_one_home() -> None:
    """backup.schedule's time: the roles' defaults agree with the policy, and each inventory
    sets it once (backup_on_calendar) and derives the baseline role's copy from it."""
    calendar = claims()["backup.schedule"]["require"]["calendar"]
    backup = yaml.safe_load((REPO / "roles/backup/defaults/main.yml").read_text())
    baseline = yaml.safe_load((REPO / "roles/baseline/defaults/main.yml").read_text())
    assert backup["backup_on_calendar"] == calendar
    assert baseline["baseline_updates_backup_time"] == re.search(r"\d\d:\d\d", calendar).group()
    for inventory in ("inventory/lab", "inventory/production.example"):
        found = {}
        for path in (REPO / inventory / "group_vars").rglob("*.yml"):
            for key, value in (yaml.safe_load(path.read_text()) or {}).items():
                if key in ("backup_on_calendar", "baseline_updates_backup_time"):
                    assert key not in found, f"{inventory}: {key} set twice ({found[key]}, {path})"
                    found[key] = (path.name, value)
        assert found.get("backup_on_calendar", (None, None))[1] == calendar, f"{inventory}: {found}"
        assert "backup_on_calendar" in str(found.get("baseline_updates_backup_time", (None, ""))[1]), (
            f"{inventory}: baseline_updates_backup_time must be derived from backup_on_calendar"
        )


def test_inventory_exceptions_name_existing_claims() -> None:
    for path in REPO.glob("inventory/*/group_vars/**/*.yml"):
        text = path.read_text()
        for claim_id in re.findall(r"""['"]?claim['"]?\s*:\s*['"]?([a-z_.]+)""", text):
            assert claim_id in claims(), f"{path}: unknown claim {claim_id}"


def test_each_hosts_checks_form_one_xdist_group() -> None:
    """make audit: one worker per host (audit_report.host_scope, xdist's loadgroup)."""
    ids = ["ansible://dev-2", "ansible://dev-20", "ansible://web"]
    assert host_scope("tests/host/test_tls.py::test_x[ansible://dev-2]", ids) == "ansible://dev-2"
    assert host_scope("tests/host/test_tls.py::test_x[ansible://dev-2-TLSv1.2]", ids) == "ansible://dev-2"
    assert host_scope("tests/host/test_tls.py::test_x[ansible://dev-20-SSLv2]", ids) == "ansible://dev-20"
    assert host_scope("tests/host/test_tls.py::test_x[ansible://web]@web", ids) == "web"
    assert host_scope("tests/unit/test_y.py::test_z", ids) == "tests/unit/test_y.py::test_z"
