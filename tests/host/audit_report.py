"""The audit report: what the host checks measured, per host and per claim of the policy.

A pytest plugin, registered by conftest.py, active with --audit-report=DIR:

    pytest --hosts=ansible://platform --ansible-inventory=INV --audit-report=reports \
        [--audit-readonly -n auto --dist loadgroup] tests/host

writes DIR/<UTC time>/ (and points DIR/latest at it; earlier runs stay beside it):
  evidence.json  per host, per claim: status (pass, fail, skip with the reason), the values
                 the checks measured (the `evidence` fixture), the checks, when; tool
                 versions and the policy file's sha256 at the top
  junit.xml      pytest's own (unless --junitxml names another file)
  index.html     the security page regenerated from the evidence (report_html.py)

--audit-readonly (`make audit`): only checks that cite a claim and are not marked
`disruptive` run; the report lists the others with their reasons. With `-n auto` the
hosts are checked in parallel, one xdist worker per host (conftest.py groups each host's
checks; --dist loadgroup keeps a group, and so its module-scoped fixtures, on one worker).

Exit status: non-zero when a claim fails on a host whose inventory names no exception for
it (policy_exceptions), or when pytest itself could not run the checks.
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import json
import os
import platform
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from policy import POLICY_FILE, claims

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
SCHEMA = 1
TOOLS = ("pytest", "pytest-testinfra", "pytest-xdist", "ansible-core", "sslyze", "bandit", "playwright")


# --- the checks, read from the source (no host, no collection) ------------------------------


@dataclass
class Check:
    module: str
    name: str
    claims: list[str] = field(default_factory=list)
    disruptive: bool = False
    reason: str = ""
    doc: str = ""

    @property
    def id(self) -> str:
        return f"{self.module}::{self.name}"


def _marks(decorators: list[ast.expr]) -> list[tuple[str, list[Any], dict[str, Any]]]:
    """pytest.mark.NAME(args) decorators (or a pytestmark value) as (name, args, kwargs)."""
    out = []
    for node in decorators:
        call = node if isinstance(node, ast.Call) else None
        target = call.func if call else node
        if isinstance(target, ast.Attribute) and ast.unparse(target) in ("pytest.mark.claim", "pytest.mark.disruptive"):
            args = [ast.literal_eval(a) for a in call.args] if call else []
            kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg} if call else {}
            out.append((target.attr, args, kwargs))
    return out


def index_checks(directory: Path = HERE) -> list[Check]:
    """Every test function of tests/host/test_*.py with the claims it cites and whether it
    is disruptive, from its decorators and the module's pytestmark."""
    checks = []
    for path in sorted(directory.glob("test_*.py")):
        tree = ast.parse(path.read_text(), str(path))
        module_marks: list[tuple[str, list[Any], dict[str, Any]]] = []
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in node.targets):
                values = node.value.elts if isinstance(node.value, ast.List | ast.Tuple) else [node.value]
                module_marks += _marks(values)
        functions = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name.startswith("Test")):
            functions += [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
        for fn in functions:
            check = Check(path.name, fn.name, doc=(ast.get_docstring(fn) or "").split("\n\n")[0])
            for name, args, kwargs in module_marks + _marks(fn.decorator_list):
                if name == "claim":
                    check.claims += [a for a in args if a not in check.claims]
                elif name == "disruptive":
                    check.disruptive = True
                    check.reason = kwargs.get("reason") or (args[0] if args else check.reason)
            checks.append(check)
    return checks


# --- options and configuration ---------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("audit", "the audit report (tests/host/audit_report.py)")
    group.addoption("--audit-report", metavar="DIR", default=None,
                    help="write evidence.json, junit.xml and index.html to DIR/<time>/ and link DIR/latest to it")
    group.addoption("--audit-readonly", action="store_true", default=False,
                    help="run only non-disruptive checks that cite a claim (make audit: safe against production)")


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _hosts(config: pytest.Config) -> list[Any]:
    import testinfra

    spec = config.getoption("hosts")
    if not spec:
        return []
    return testinfra.get_hosts(
        spec.split(","),
        connection=config.getoption("connection"),
        ssh_identity_file=config.getoption("ssh_identity_file"),
        ansible_inventory=config.getoption("ansible_inventory"),
        force_ansible=config.getoption("force_ansible"),
    )


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto` with the audit: one worker per host."""
    if config.getoption("audit_report") or config.getoption("audit_readonly"):
        return max(1, len(_hosts(config)))
    return None


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup`: one worker per host, whatever the pytest version.

    conftest.py marks each check with xdist_group(<host>), and xdist's worker appends
    "@<group>" to the node id for its scheduler; pytest 9 keeps node ids elsewhere
    (Node._id), so that suffix never appears and every check becomes a group of its own: a
    host's checks then run on several workers at once (module fixtures set up twice, two
    processes spending one client address's rate-limit budget). This scheduler groups by the
    testinfra host in the node id's parameters instead, and by the suffix where it exists."""
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    host_ids = [h.backend.get_pytest_id() for h in _hosts(config)]

    class HostScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return host_scope(nodeid, host_ids)

    return HostScheduling(config, log)


def host_scope(nodeid: str, host_ids: list[str]) -> str:
    """The xdist group of a check: xdist's "@group" suffix if present, else the testinfra
    host id its parameters start with (the longest that fits: dev-2 vs dev-20), else itself."""
    if nodeid.rfind("@") > nodeid.rfind("]"):
        return nodeid.split("@")[-1]
    params = nodeid.partition("[")[2]
    for host_id in sorted(host_ids, key=len, reverse=True):
        if params.startswith(host_id) and params[len(host_id):len(host_id) + 1] in ("]", "-"):
            return host_id
    return nodeid


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    base = config.getoption("audit_report")
    if not base or _is_worker(config):
        return
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = Path(base).resolve() / stamp
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = Path(base).resolve() / f"{stamp}-{suffix}"
    run_dir.mkdir(parents=True)
    if not config.option.xmlpath:
        config.option.xmlpath = str(run_dir / "junit.xml")
    run = Run(run_dir=run_dir, started=time.time(), readonly=config.getoption("audit_readonly"))
    config.stash[_RUN] = run
    _RUNS.append(run)


# --- collection: claims, hosts, read-only selection --------------------------------------


def _host_of(item: pytest.Item) -> tuple[str, str]:
    callspec = getattr(item, "callspec", None)
    host = callspec.params.get("_testinfra_host") if callspec else None
    if host is None:
        return "controller", ""
    return host.backend.get_hostname(), host.backend.get_pytest_id()


def _check_name(item: pytest.Item, pytest_id: str) -> str:
    """test_module.py::test_name[params], without the host (reported beside it)."""
    path, _, rest = item.nodeid.partition("::")
    name = f"{Path(path).name}::{rest}"
    if pytest_id:
        name = name.replace(f"[{pytest_id}]", "").replace(f"[{pytest_id}-", "[")
    return name


def _claims_of(item: pytest.Item) -> list[str]:
    ids: list[str] = []
    for mark in item.iter_markers("claim"):
        ids += [a for a in mark.args if a not in ids]
    return ids


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    readonly = config.getoption("audit_readonly")
    if not (config.getoption("audit_report") or readonly):
        return
    known = claims()
    keep, drop = [], []
    for item in items:
        ids = _claims_of(item)
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise pytest.UsageError(f"{item.nodeid} cites unknown claims {unknown} (policy/claims.yml)")
        if readonly and (not ids or item.get_closest_marker("disruptive")):
            drop.append(item)
            continue
        host, pytest_id = _host_of(item)
        # (conftest.py puts each host's checks in one xdist group: one worker per host.)
        item.user_properties.append(("audit", {"host": host, "claims": ids, "check": _check_name(item, pytest_id)}))
        keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


# --- results --------------------------------------------------------------------------------


@dataclass
class Result:
    host: str
    check: str
    claims: list[str]
    outcome: str = "passed"  # passed | failed | error | skipped
    reason: str = ""
    duration: float = 0.0
    when: float = 0.0
    evidence: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Run:
    run_dir: Path
    started: float
    readonly: bool
    results: dict[str, Result] = field(default_factory=dict)


_RUN = pytest.StashKey[Run]()
# pytest_runtest_logreport gets no config: the run of this process (the controller's).
_RUNS: list[Run] = []


def _properties(report: pytest.TestReport) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    audit, evidence = None, []
    for entry in report.user_properties:
        key, value = entry[0], entry[1]
        if key == "audit":
            audit = value
        elif key == "evidence":
            evidence.append(value)
    return audit, evidence


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple):
        return str(longrepr[2]).removeprefix("Skipped: ")
    if hasattr(longrepr, "reprcrash") and longrepr.reprcrash is not None:
        # The assertion's own message, not pytest's rewritten expression under it.
        return longrepr.reprcrash.message.split("\n")[0][:400]
    return str(longrepr or "").strip().splitlines()[-1][:400] if longrepr else ""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    run = _RUNS[-1] if _RUNS else None
    if run is None:
        return
    audit, evidence = _properties(report)
    if audit is None:
        return
    result = run.results.setdefault(report.nodeid, Result(audit["host"], audit["check"], audit["claims"]))
    result.duration += report.duration
    result.when = getattr(report, "stop", time.time())
    # The latest phase's evidence list is the complete one (user_properties accumulate).
    if len(evidence) >= len(result.evidence):
        result.evidence = evidence
    if report.failed:
        if result.outcome != "failed":
            result.outcome = "failed" if report.when == "call" else "error"
            result.reason = _reason(report)
    elif report.skipped and result.outcome == "passed":
        result.outcome = "skipped"
        result.reason = _reason(report)


# --- the evidence file ------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _exceptions(config: pytest.Config, hosts: list[str]) -> dict[str, list[dict[str, str]]]:
    """policy_exceptions of each host, as the playbooks see them."""
    inventory = config.getoption("ansible_inventory")
    out: dict[str, list[dict[str, str]]] = {h: [] for h in hosts}
    if not inventory:
        return out
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.loader import init_plugin_loader
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager

    init_plugin_loader()
    loader = DataLoader()
    inv = InventoryManager(loader=loader, sources=[inventory])
    manager = VariableManager(loader=loader, inventory=inv)
    for name in hosts:
        host = inv.get_host(name)
        if host is None:
            continue
        variables = manager.get_vars(host=host)
        raw = variables.get("policy_exceptions") or []
        value = Templar(loader=loader, variables=variables).template(raw)
        out[name] = [{"claim": str(e.get("claim")), "reason": str(e.get("reason"))} for e in value or []]
    return out


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def build_evidence(run: Run, config: pytest.Config) -> dict[str, Any]:
    policy = claims()
    by_host: dict[str, list[Result]] = defaultdict(list)
    for result in run.results.values():
        by_host[result.host].append(result)
    exceptions = _exceptions(config, sorted(by_host))
    index = index_checks()
    tagged = defaultdict(list)
    for check in index:
        for claim_id in check.claims:
            tagged[claim_id].append(check)

    hosts: dict[str, Any] = {}
    for host, results in sorted(by_host.items()):
        excepted = {e["claim"]: e["reason"] for e in exceptions.get(host, [])}
        entries = {}
        for claim_id in policy:
            mine = [r for r in results if claim_id in r.claims]
            entries[claim_id] = _claim_entry(claim_id, mine, tagged[claim_id], run.readonly, excepted.get(claim_id))
        hosts[host] = {
            "exceptions": exceptions.get(host, []),
            "duration_seconds": round(sum(r.duration for r in results), 1),
            "checks": {k: sum(1 for r in results if r.outcome == k) for k in ("passed", "failed", "error", "skipped")},
            "claims": entries,
        }

    statuses = [c["status"] for h in hosts.values() for c in h["claims"].values()]
    unexcepted = sorted({f"{h}: {cid}" for h, data in hosts.items() for cid, c in data["claims"].items()
                         if c["status"] == "fail" and not c["exception"]})
    not_run = [
        {"check": c.id, "claims": c.claims, "reason": c.reason or ("cites no claim" if not c.claims else "disruptive")}
        for c in index if run.readonly and (c.disruptive or not c.claims)
    ]
    return {
        "schema": SCHEMA,
        "mode": "audit (read-only)" if run.readonly else "verify (all checks)",
        "started": _iso(run.started),
        "finished": _iso(time.time()),
        "duration_seconds": round(time.time() - run.started, 1),
        "inventory": config.getoption("ansible_inventory"),
        "hosts_option": config.getoption("hosts"),
        "policy": {
            "file": str(POLICY_FILE.relative_to(REPO_ROOT)),
            "sha256": hashlib.sha256(POLICY_FILE.read_bytes()).hexdigest(),
            "claims": len(policy),
        },
        "tools": {"python": platform.python_version(), **{t: _version(t) for t in TOOLS},
                  "controller": f"{platform.system()} {platform.release()}"},
        "summary": {
            "hosts": len(hosts),
            "pass": statuses.count("pass"),
            "fail": statuses.count("fail"),
            "skip": statuses.count("skip"),
            "failing_without_exception": unexcepted,
        },
        "hosts": hosts,
        "not_run": not_run,
        "unclaimed": sorted({r.check for r in run.results.values() if not r.claims}),
    }


def _claim_entry(claim_id: str, results: list[Result], tagged: list[Check], readonly: bool,
                 exception: str | None) -> dict[str, Any]:
    checks = [{"check": r.check, "outcome": r.outcome, "reason": r.reason, "seconds": round(r.duration, 2)}
              for r in sorted(results, key=lambda r: r.check)]
    measured = [{"check": r.check, **{k: v for k, v in e.items() if k != "claim"}}
                for r in sorted(results, key=lambda r: r.check) for e in r.evidence if e.get("claim") == claim_id]
    outcomes = [r.outcome for r in results]
    if any(o in ("failed", "error") for o in outcomes):
        status = "fail"
        reason = "; ".join(f"{r.check}: {r.reason}" for r in results if r.outcome in ("failed", "error"))
    elif "passed" in outcomes:
        # Passed as far as it ran: any check of it that was skipped is named, so a reader
        # sees what this pass does not cover.
        status = "pass"
        skipped = [r for r in results if r.outcome == "skipped"]
        reason = (f"{len(skipped)} of {len(results)} checks skipped: "
                  + "; ".join(f"{r.check}: {r.reason}" for r in skipped)) if skipped else ""
    elif outcomes:
        status = "skip"
        reason = "; ".join(sorted({r.reason for r in results}))
    elif not tagged:
        status, reason = "skip", "no check cites this claim yet"
    elif readonly and all(c.disruptive for c in tagged):
        status = "skip"
        reason = "proven only by disruptive checks (make verify): " + ", ".join(c.name for c in tagged)
    else:
        # e.g. the TLS edge's claims on a backup server: the check modules' HOST_GROUPS leave
        # this host out (conftest.py), or the run was narrowed with -k / a path
        status, reason = "skip", "not checked on this host: its checks are for other host groups, or were deselected"
    return {
        "id": claim_id,
        "status": status,
        "reason": reason,
        "exception": exception,
        "measured": measured,
        "checks": checks,
        "when": _iso(max(r.when for r in results)) if results else None,
    }


def _link_latest(run_dir: Path) -> None:
    latest = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.name)
    tmp.replace(latest)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    run = session.config.stash.get(_RUN, None)
    if run is None or _is_worker(session.config):
        return
    evidence = build_evidence(run, session.config)
    evidence["pytest_exit_status"] = int(exitstatus)
    (run.run_dir / "evidence.json").write_text(json.dumps(evidence, indent=2, sort_keys=False) + "\n")
    from report_html import render, screenshots

    page = run.run_dir / "index.html"
    page.write_text(render(evidence, claims_file=POLICY_FILE))
    try:
        screenshots(page, run.run_dir)
    except Exception as exc:  # the report stands without its pictures
        print(f"audit report: no screenshots ({exc})", file=sys.stderr)
    _link_latest(run.run_dir)
    failing = evidence["summary"]["failing_without_exception"]
    # Tests ran (0: all passed, 1: some failed): the claims decide. Anything else (usage
    # error, interrupted, internal error, nothing collected) stays a failure.
    if int(exitstatus) in (0, 1) and evidence["summary"]["hosts"]:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED if failing else pytest.ExitCode.OK
    elif int(exitstatus) == 0:
        session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED
    session.config.stash[_SUMMARY] = (run.run_dir, evidence)


_SUMMARY = pytest.StashKey[tuple[Path, dict[str, Any]]]()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    found = config.stash.get(_SUMMARY, None)
    if found is None:
        return
    run_dir, evidence = found
    tr = terminalreporter
    tr.section("audit report")
    for host, data in evidence["hosts"].items():
        counts = defaultdict(int)
        for claim in data["claims"].values():
            counts[claim["status"]] += 1
        tr.write_line(f"{host}: {counts['pass']} pass, {counts['fail']} fail, {counts['skip']} skip "
                      f"({data['duration_seconds']} s of checks)")
    for line in evidence["summary"]["failing_without_exception"]:
        tr.write_line(f"FAIL {line}")
    for host, data in evidence["hosts"].items():
        for claim_id, claim in data["claims"].items():
            if claim["status"] == "fail" and claim["exception"]:
                tr.write_line(f"FAIL {host}: {claim_id} (named exception: {claim['exception']})")
    tr.write_line(f"report: {run_dir}/index.html (evidence.json, junit.xml); latest: {run_dir.parent / 'latest'}")


__all__ = [
    "Check",
    "build_evidence",
    "index_checks",
    "pytest_addoption",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_runtest_logreport",
    "pytest_sessionfinish",
    "pytest_terminal_summary",
    "pytest_xdist_auto_num_workers",
    "pytest_xdist_make_scheduler",
]
