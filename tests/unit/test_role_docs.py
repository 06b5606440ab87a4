"""Each role's documentation has one source: the comments above its defaults (the reasons)
and its argument spec (types, defaults). The argument spec carries the reasons to
`ansible-doc`, and roles/<role>/README.md is generated from both (scripts/role_docs.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p for p in (ROOT / "roles").iterdir() if p.is_dir())
TAG = re.compile(r"tags:\s*\[(.*)\]")


def test_argument_specs_and_role_readmes_are_current() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "role_docs.py"), "--check"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_option_says_what_it_is(role: Path) -> None:
    options = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    bare = [name for name, option in options.items() if not option.get("description")]
    assert not bare, f"{role.name}: options without a description: {bare}"


def _tags() -> dict[str, set[str]]:
    """Tag -> the files that set it (role task entry points and playbooks)."""
    found: dict[str, set[str]] = {}
    for path in [*ROOT.glob("roles/*/tasks/main.yml"), *ROOT.glob("playbooks/*.yml")]:
        for match in TAG.finditer(path.read_text()):
            for tag in (t.strip() for t in match.group(1).split(",")):
                found.setdefault(tag, set()).add(str(path.relative_to(ROOT)))
    return found


def test_tags_follow_one_scheme() -> None:
    """`<role>` or `<role>_<concern>` (plus Ansible's `always`): --tags nginx_tls reads the same
    as the variable names nginx_tls_*."""
    roles = {role.name for role in ROLES}
    odd = {tag: files for tag, files in _tags().items()
           if tag != "always" and not (tag in roles or any(tag.startswith(f"{r}_") for r in roles))
           or not re.fullmatch(r"[a-z][a-z0-9_]*", tag)}
    assert not odd, f"tags outside the <role>_<concern> scheme: {odd}"


def test_readme_lists_every_tag() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = sorted(tag for tag in _tags() if tag != "always" and f"`{tag}`" not in readme)
    assert not missing, f"README.md does not list these tags: {missing}"


def _descriptions(options: dict) -> list[tuple[str, str]]:
    found = []
    for name, option in options.items():
        text = option.get("description", "")
        found += [(name, line) for line in ([text] if isinstance(text, str) else text)]
        found += _descriptions(option.get("options") or {})
    return found


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_no_description_holds_a_template(role: Path) -> None:
    """Ansible templates the argument spec when it validates a play's variables: a "{{ x }}"
    in a description fails every play whose inventory lacks x (a bare inventory did, with
    'pki_ca_dir' is undefined, in test_app_generic)."""
    options = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    templated = [name for name, text in _descriptions(options) if "{{" in text or "{%" in text]
    assert not templated, f"{role.name}: descriptions with Jinja: {templated}"
