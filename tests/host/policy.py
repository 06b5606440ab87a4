"""The policy's requirements (policy/claims.yml), for the host checks.

Checks compare what they measure on the host with these values, never with the inventory
they are checking: an inventory that weakens a claim must make its check fail.

    from policy import require
    assert max_age >= require("tls.hsts")["max_age_min"]
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import yaml

POLICY_FILE = Path(__file__).resolve().parents[2] / "policy" / "claims.yml"


@cache
def claims() -> dict[str, dict[str, Any]]:
    """Every claim of the policy by id, each with its section id added."""
    data = yaml.safe_load(POLICY_FILE.read_text())
    out: dict[str, dict[str, Any]] = {}
    for section in data["sections"]:
        for claim in section["claims"]:
            assert claim["id"] not in out, f"duplicate claim id {claim['id']}"
            out[claim["id"]] = {**claim, "section": section["id"]}
    return out


def require(claim_id: str) -> dict[str, Any]:
    """The machine-checkable requirements of one claim."""
    return claims()[claim_id].get("require", {})


def hsts_max_age(value: str | None) -> int | None:
    """The max-age of a Strict-Transport-Security value, or None."""
    for part in (value or "").split(";"):
        key, _, number = part.strip().partition("=")
        if key.lower() == "max-age" and number.strip().strip('"').isdigit():
            return int(number.strip().strip('"'))
    return None


def header_problems(get: Callable[[str], str | None]) -> list[str]:
    """What breaks headers.security in one response; `get(name)` returns a header's value
    (case-insensitive) or None."""
    problems = []
    for name, rule in require("headers.security")["headers"].items():
        value = get(name)
        if not value:
            problems.append(f"{name} missing")
            continue
        if "equals" in rule and value not in rule["equals"]:
            problems.append(f"{name} is {value!r}, allowed: {rule['equals']}")
        for part in rule.get("contains", []):
            if part not in value:
                problems.append(f"{name} lacks {part!r}: {value!r}")
        if "max_age_min" in rule and (hsts_max_age(value) or 0) < rule["max_age_min"]:
            problems.append(f"{name} max-age {hsts_max_age(value)} < {rule['max_age_min']}")
    return problems
