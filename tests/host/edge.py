"""Helpers for the TLS edge checks that need the host's own view."""

from __future__ import annotations

import base64
import json
import math
import random
import re
from pathlib import Path

_BURST = base64.b64encode((Path(__file__).parent / "probes" / "burst.py").read_bytes()).decode()


def fresh_source() -> str:
    """A loopback address nginx has (almost certainly) no rate limit state for."""
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def burst(host, name: str, path: str, count: int, source: str | None = None, forge: bool = False) -> dict:
    """COUNT requests from one address, sent from the host itself (tests/host/probes/burst.py)."""
    source = source or fresh_source()
    cmd = f"echo {_BURST} | base64 -d | python3 - {name} {path} {count} {source} {'forge' if forge else ''}"
    result = json.loads(host.check_output(cmd))
    result["source"] = source
    return result


def rate_per_second(rate: str) -> float:
    number, unit = re.fullmatch(r"(\d+)r/([ms])", rate).groups()
    return int(number) / (60 if unit == "m" else 1)


def admitted_bounds(burst_size: int, rate: str, elapsed: float) -> tuple[int, int]:
    """What nginx's limit_req (leaky bucket, nodelay) admits from a fresh client sending
    back-to-back requests for `elapsed` seconds: the first request plus `burst` more at
    once, then one per 1/rate seconds of elapsed time."""
    low = burst_size + 1
    return low, low + math.ceil(elapsed * rate_per_second(rate))
