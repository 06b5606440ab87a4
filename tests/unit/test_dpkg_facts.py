"""hardened.platform.dpkg_facts (plugins/modules/dpkg_facts.py) on this controller's real
package database: the same answer package_facts gives, in its format."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "plugins" / "modules" / "dpkg_facts.py"

pytestmark = pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs a Debian or Ubuntu controller")


def test_lists_installed_packages_in_package_facts_format(tmp_path):
    spec = tmp_path / "args.json"
    spec.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"_ansible_check_mode": True}}))
    proc = subprocess.run([sys.executable, str(MODULE), str(spec)], capture_output=True, text=True, check=False)
    result = json.loads(proc.stdout)
    assert result["changed"] is False, result
    packages = result["ansible_facts"]["packages"]
    version = subprocess.run(["dpkg-query", "--show", "--showformat", "${Version}", "dpkg"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    arch = packages["dpkg"][0]["arch"]
    assert packages["dpkg"] == [{"name": "dpkg", "version": version, "arch": arch, "source": "apt"}]
    # every name dpkg lists as installed, and none that is only remembered by its configuration files
    listed = subprocess.run(["dpkg-query", "--show", "--showformat", "${db:Status-Abbrev} ${Package}\\n"],
                            capture_output=True, text=True, check=True).stdout.splitlines()  # fmt: skip
    installed = {line.split()[1] for line in listed if line[1:2] not in ("n", "c")}
    assert set(packages) == installed
