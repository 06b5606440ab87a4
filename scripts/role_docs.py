#!/usr/bin/env python3
"""Keep each role's documentation in one place and everything else generated from it.

The reasoning behind a default lives as a comment above it in roles/<role>/defaults/main.yml
(where an auditor reads it). This script copies that reasoning into the option's description
in meta/argument_specs.yml (so `ansible-doc -t role hardened.platform.<role>` shows it) and
writes roles/<role>/README.md from the argument spec, the role's tags and a minimal playbook.

    scripts/role_docs.py            # write both
    scripts/role_docs.py --check    # exit 1 and name what is out of date (tests/unit)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COLLECTION = "hardened.platform"
VARIABLE = re.compile(r"^([a-z][a-z0-9_]*):")
WHY = "Why: "


def default_comments(defaults: Path) -> dict[str, str]:
    """Variable -> the comment block directly above it (section rules and headings left out)."""
    found: dict[str, str] = {}
    block: list[str] = []
    for line in defaults.read_text().splitlines():
        if line.startswith("#"):
            text = line[1:].strip()
            if text.startswith("---"):  # a section heading, not about the next variable
                block = []
            else:
                block.append(text)
            continue
        match = VARIABLE.match(line)
        if match and block:
            found[match.group(1)] = " ".join(" ".join(block).split())
        if not line.startswith(" "):
            block = []
    return found


def _wrap(text: str, indent: str, width: int = 96) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(indent) + len(line) + 1 + len(word) > width:
            lines.append(indent + line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, indent + line] if line else lines


def _item(text: str, indent: str) -> list[str]:
    """One list item: plain when YAML reads it back unchanged and it fits, else folded (>-)."""
    single = f"{indent}- {text}"
    try:
        plain = len(single) <= 100 and yaml.safe_load(f"- {text}") == [text]
    except yaml.YAMLError:
        plain = False
    if plain:
        return [single]
    return [f"{indent}- >-", *_wrap(text, indent + "  ")]


def _summary(description) -> str:
    if isinstance(description, list):
        return " ".join(str(description[0]).split()) if description else ""
    return " ".join(str(description or "").split())


def sync_spec(role: Path) -> tuple[str, str]:
    """(current text, wanted text) of meta/argument_specs.yml: each top-level option's
    description becomes [its summary, "Why: " + the comment above it in defaults/main.yml].
    Text surgery, not a YAML round trip: every other line stays as a person wrote it."""
    path = role / "meta" / "argument_specs.yml"
    current = path.read_text()
    why = default_comments(role / "defaults" / "main.yml")
    options = yaml.safe_load(current)["argument_specs"]["main"]["options"]
    lines = current.splitlines()
    out: list[str] = []
    index, option = 0, None
    while index < len(lines):
        line = lines[index]
        top = re.match(r"^      ([a-z][a-z0-9_]*):\s*$", line)
        if top:
            option = top.group(1)
        if option in options and line.startswith("        description:"):
            end = index + 1
            while end < len(lines) and (lines[end].startswith("         ") or not lines[end].strip()):
                end += 1
            summary = _summary(options[option].get("description"))
            if why.get(option):
                out += ["        description:", *_item(summary, "          "),
                        *_item(WHY + why[option], "          ")]
            else:
                out += lines[index:end]
            index = end
            continue
        out.append(line)
        index += 1
    return current, "\n".join(out) + "\n"


def _default(option) -> str:
    if "default" not in option:
        return "**required**" if option.get("required") else ""
    value = option["default"]
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value in ([], {}, "", None):
        return f"`{value!r}`" if value is not None else "`null`"
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return f"`{text}`" if len(text) <= 60 else f"`{text[:57]}...`"


def _tags(role: Path) -> list[str]:
    tags: list[str] = []
    for line in (role / "tasks" / "main.yml").read_text().splitlines():
        match = re.search(r"tags:\s*\[(.*)\]", line)
        if match:
            for tag in (t.strip() for t in match.group(1).split(",")):
                if tag and tag != "always" and tag not in tags:
                    tags.append(tag)
    return tags


def readme(role: Path) -> str:
    spec = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]
    name = role.name
    lines = [
        f"# {COLLECTION}.{name}",
        "",
        "<!-- Generated by scripts/role_docs.py from meta/argument_specs.yml and the comments in",
        "     defaults/main.yml: edit those, then run the script (tests/unit/test_role_docs.py). -->",
        "",
        str(spec.get("short_description", "")),
        "",
    ]
    for paragraph in spec.get("description") or []:
        lines += [re.sub(r"C\(([^)]*)\)", r"`\1`", str(paragraph)), ""]
    lines += [
        "## Use",
        "",
        "```yaml",
        f"- hosts: {name}_hosts",
        "  roles:",
        f"    - {COLLECTION}.{name}",
        "```",
        "",
        f"Every option below is checked before any task runs; `ansible-doc -t role {COLLECTION}.{name}`",
        "shows the same text.",
        "",
        "## Tags",
        "",
        " ".join(f"`{tag}`" for tag in _tags(role)),
        "",
        "## Options",
        "",
        "| Option | Type | Default | Description |",
        "| --- | --- | --- | --- |",
    ]
    for option_name, option in spec["options"].items():
        description = option.get("description", "")
        if isinstance(description, list):
            description = " ".join(str(part) for part in description)
        kind = option.get("type", "str")
        if kind == "list" and option.get("elements"):
            kind = f"list of {option['elements']}"
        description = str(description).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{option_name}` | {kind} | {_default(option)} | {description} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if anything is out of date")
    parser.add_argument("roles", nargs="*", help="role names (default: every role)")
    args = parser.parse_args()
    roles = [ROOT / "roles" / r for r in args.roles] or sorted(p for p in (ROOT / "roles").iterdir() if p.is_dir())
    stale = []
    for role in roles:
        current, wanted = sync_spec(role)
        if current != wanted:
            stale.append(f"{role.name}/meta/argument_specs.yml")
            if not args.check:
                (role / "meta" / "argument_specs.yml").write_text(wanted)
        path = role / "README.md"
        text = readme(role)
        if not path.exists() or path.read_text() != text:
            stale.append(f"{role.name}/README.md")
            if not args.check:
                path.write_text(text)
    if stale:
        verb = "out of date (run scripts/role_docs.py)" if args.check else "written"
        print(f"{verb}: " + ", ".join(stale))
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
