"""modes_wider_than: which paths a mode mapping leaves wider than the policy allows.

    baseline_file_modes | hardened.platform.modes_wider_than(policy_max_modes)

Jinja has no bitwise operators, and "is 0640 within 0600" is one: a mode is within the
maximum when it sets no permission bit the maximum does not. A path of the policy that the
mapping leaves out counts as wider (nothing would restrict it). Returns "path mode>max"
strings, empty when all is within the policy.
"""

from __future__ import annotations

from typing import Any


def _octal(mode: Any) -> int:
    return int(str(mode), 8)


def modes_wider_than(modes: dict[str, Any], maximum: dict[str, Any]) -> list[str]:
    wider = []
    for path, most in sorted((maximum or {}).items()):
        mode = (modes or {}).get(path)
        if mode is None:
            wider.append(f"{path} unset>{most}")
        elif _octal(mode) & ~_octal(most) & 0o7777:
            wider.append(f"{path} {mode}>{most}")
    return wider


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"modes_wider_than": modes_wider_than}
