"""Policy: "0 High severity issues in application code (Bandit)" (audit.bandit).

The page shows a Bandit result typed in by hand; here it is measured. The app's own package
is copied read-only from the release that is live on the host (the one platform.service
runs: `tar` to stdout, nothing written there, nothing installed) and scanned on the
controller with the pinned Bandit (requirements.txt). The report's banner shows its version,
the date, the lines scanned and the issues by severity.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import re
import subprocess
import sys
import tarfile
from importlib import metadata

import pytest
from tiers import APP

from policy import require

# The hosts these checks are about (tests/host/tiers.py).
HOST_GROUPS = APP

pytestmark = pytest.mark.claim("audit.bandit")


@pytest.fixture(scope="module")
def live_code(host, tmp_path_factory) -> dict:
    """The app package of the live release, copied to the controller."""
    exec_start = host.check_output("systemctl show -p ExecStart --value platform.service")
    argv = re.search(r"argv\[\]=(\S+) (.*?) ;", exec_start)
    assert argv, f"cannot read platform.service's command: {exec_start}"
    venv = argv.group(1).rsplit("/bin/", 1)[0]
    module = next(a for a in argv.group(2).split() if ":" in a and not a.startswith("-"))
    package = module.split(":")[0].split(".")[0]
    found = host.check_output(f"find {venv}/lib -maxdepth 3 -type d -name {package} -path '*site-packages*'")
    assert found, f"{package} not found under {venv}"
    site_packages, _, _ = found.splitlines()[0].rpartition("/")
    release = host.check_output(f"readlink -f {venv}/..")
    data = host.check_output(f"tar -C {site_packages} --exclude=__pycache__ -cf - {package} | base64 -w0")
    target = tmp_path_factory.mktemp("live-release")
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(data))) as tar:
        tar.extractall(target, filter="data")
    return {"dir": target / package, "package": package, "release": release}


def test_live_release_has_no_high_severity_issue(live_code, evidence):
    wanted = require("audit.bandit")
    proc = subprocess.run(
        [sys.executable, "-m", "bandit", "-r", str(live_code["dir"]), "-f", "json", "-q"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode in (0, 1), proc.stderr[-2000:]  # 1: issues found
    report = json.loads(proc.stdout)
    totals = report["metrics"]["_totals"]
    issues = [
        {"test": r["test_id"], "severity": r["issue_severity"], "confidence": r["issue_confidence"],
         "where": f"{r['filename'].split(str(live_code['dir'].parent) + '/', 1)[-1]}:{r['line_number']}",
         "what": r["issue_text"]}
        for r in report["results"]
    ]
    version = metadata.version("bandit")
    high, medium, low = (int(totals[f"SEVERITY.{s}"]) for s in ("HIGH", "MEDIUM", "LOW"))
    evidence(
        "audit.bandit", bandit_version=version, scan_date=dt.datetime.now(dt.UTC).date().isoformat(),
        scope=f"{live_code['package']} (live release)", release=live_code["release"],
        lines_scanned=int(totals["loc"]), files=len(report["metrics"]) - 1,
        high=high, medium=medium, low=low, issues=issues,
    )
    assert version == wanted["bandit_version"], f"Bandit {version}, the policy pins {wanted['bandit_version']}"
    assert totals["loc"] > 0, "nothing scanned"
    assert high <= wanted["high_max"], [i for i in issues if i["severity"] == "HIGH"]
