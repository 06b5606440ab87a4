"""The policy's requirements (policy/claims.yml), for the host checks.

Checks compare what they measure on the host with these values, never with the inventory
they are checking: an inventory that weakens a claim must make its check fail.

    from policy import require
    assert max_age >= require("tls.hsts")["max_age_min"]
"""

from __future__ import annotations

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
