"""Every role's defaults and its argument spec agree (STYLE.md point 2).

An auditor reads defaults/main.yml; Ansible enforces meta/argument_specs.yml. When the two
disagree (dev-sec's nginx role: spec TLSv1.2, defaults TLSv1.2 TLSv1.3) the documentation
lies. These tests cover every role under roles/, including roles added later.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = sorted(p for p in (Path(__file__).resolve().parents[2] / "roles").iterdir() if p.is_dir())


def _load(path: Path) -> dict:
    if not path.exists():
        return {}
    return yaml.safe_load(path.read_text()) or {}


def _spec(role: Path) -> dict:
    specs = _load(role / "meta" / "argument_specs.yml").get("argument_specs", {})
    return specs.get("main", {}).get("options", {}) or {}


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_has_argument_spec(role: Path) -> None:
    assert (role / "meta" / "argument_specs.yml").exists(), f"{role.name}: no meta/argument_specs.yml"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_spec_defaults_match_role_defaults(role: Path) -> None:
    defaults = _load(role / "defaults" / "main.yml")
    spec = _spec(role)
    mismatched = {
        name: (opt["default"], defaults.get(name, "<missing from defaults/main.yml>"))
        for name, opt in spec.items()
        if "default" in opt and defaults.get(name, object()) != opt["default"]
    }
    assert not mismatched, f"{role.name}: spec default != defaults/main.yml: {mismatched}"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_default_is_specified(role: Path) -> None:
    defaults = _load(role / "defaults" / "main.yml")
    spec = _spec(role)
    public = [name for name in defaults if not name.startswith("__")]
    unspecified = [name for name in public if name not in spec]
    assert not unspecified, f"{role.name}: defaults without an argument spec entry: {unspecified}"
    no_default = [name for name in public if "default" not in spec[name] and not spec[name].get("required")]
    assert not no_default, f"{role.name}: spec entries that omit the default that defaults/main.yml sets: {no_default}"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_variables_are_prefixed_by_role(role: Path) -> None:
    prefix = role.name.split("_")[0] + "_"
    stray = [name for name in _spec(role) if not name.startswith(prefix)]
    assert not stray, f"{role.name}: variables not prefixed with {prefix!r}: {stray}"
