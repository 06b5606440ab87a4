"""The 7 daily / 8 weekly / 12 monthly policy, worked out without a host.

tests/host/test_backups.py proves on a host that restic keeps exactly the snapshots that
`expected_kept` (a per-rule set formulation) predicts. Here the same function is checked
against a transcription of restic's documented walk (newest first; each rule keeps a
snapshot whose bucket differs from the last one that rule kept, while it has budget) on
irregular schedules, and the numbers the policy's readers care about are spelled out:
rules overlap, so one snapshot a night gives 25 distinct snapshots, not 27.
"""

from __future__ import annotations

import random
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host"))
from test_backups import expected_kept  # noqa: E402


def restic_walk(times: list[datetime], daily: int, weekly: int, monthly: int) -> set[datetime]:
    rules = [
        [daily, lambda t: t.date(), None],
        [weekly, lambda t: t.isocalendar()[:2], None],
        [monthly, lambda t: (t.year, t.month), None],
    ]
    kept = set()
    for t in sorted(times, reverse=True):
        for rule in rules:
            budget, bucket, last = rule
            if budget > 0 and bucket(t) != last:
                kept.add(t)
                rule[0] -= 1
                rule[2] = bucket(t)
    return kept


def nightly(last: date, nights: int) -> list[datetime]:
    return [datetime.combine(last - timedelta(days=i), datetime.min.time()).replace(hour=3) for i in range(nights)]


def test_overlap_keeps_25_of_400_nights() -> None:
    times = nightly(date(2026, 3, 15), 400)
    kept = expected_kept(times, 7, 8, 12)
    assert len(kept) == 25
    # The newest snapshot is daily, weekly and monthly at once.
    assert max(times) in kept
    # The oldest kept is the last night of the month eleven months back.
    assert min(kept).date() == date(2025, 4, 30)


def test_short_history_keeps_everything_it_can() -> None:
    times = nightly(date(2026, 3, 15), 5)
    assert expected_kept(times, 7, 8, 12) == set(times)


@pytest.mark.parametrize("seed", range(20))
def test_set_formulation_matches_restic_walk(seed: int) -> None:
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, 3)
    times = sorted({start + timedelta(hours=rng.randrange(0, 24 * 500)) for _ in range(rng.randrange(1, 600))})
    policy = (rng.randrange(0, 10), rng.randrange(0, 10), rng.randrange(0, 14))
    assert expected_kept(times, *policy) == restic_walk(times, *policy)
