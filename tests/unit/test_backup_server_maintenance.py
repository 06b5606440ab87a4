"""roles/backup_server/files/backup_server_maintenance.py: the server-side retention, without a host.

The server keeps 7 daily / 8 weekly / 12 monthly snapshots per group of host and tags, dated
by ARRIVAL (the snapshot file's mtime on the server), never by the time a client wrote into
the snapshot. Proven here over simulated years: the kept set equals restic's own walk
(tests/unit/test_retention.py's transcription), a change of the backed-up paths starts no new
group, and a client that forges snapshot times cannot push the real history out.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import backup_server_maintenance as bsm
import pytest
from test_retention import restic_walk


def nightly(last: date, nights: int, hour: int = 3) -> list[datetime]:
    return [datetime.combine(last - timedelta(days=i), datetime.min.time()).replace(hour=hour, tzinfo=UTC)
            for i in range(nights)]


def snap(i: int, host: str = "web-1", tags: tuple[str, ...] = ("nightly",), paths: tuple[str, ...] = ("/etc",),
         time: str = "2026-01-01T00:00:00Z") -> dict:
    return {"id": f"{i:064x}", "hostname": host, "tags": list(tags), "paths": list(paths), "time": time}


@pytest.mark.parametrize("seed", range(20))
def test_keep_equals_restics_walk(seed: int) -> None:
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, 3, tzinfo=UTC)
    times = sorted({start + timedelta(hours=rng.randrange(0, 24 * 500)) for _ in range(rng.randrange(1, 600))})
    policy = (rng.randrange(0, 10), rng.randrange(0, 10), rng.randrange(0, 14))
    items = [(t.isoformat(), t) for t in times]
    kept = {datetime.fromisoformat(i) for i in bsm.keep(items, *policy)}
    assert kept == restic_walk(times, *policy)


def test_400_nights_keep_25() -> None:
    times = nightly(date(2026, 3, 15), 400)
    assert len(bsm.keep([(t.isoformat(), t) for t in times], 7, 8, 12)) == 25


def test_a_change_of_paths_starts_no_new_group() -> None:
    """A year with the old path set, then a year with a new one: the old set's snapshots age
    out like any others (restic's default grouping, host+paths, would keep 25 of them forever)."""
    times = nightly(date(2026, 3, 15), 730)
    snaps, arrivals = [], {}
    for i, t in enumerate(times):
        paths = ("/etc", "/var/lib/platform") if i < 365 else ("/etc",)
        s = snap(i, paths=paths)
        snaps.append(s)
        arrivals[s["id"]] = t
    decision = bsm.plan(snaps, arrivals, {"daily": 7, "weekly": 8, "monthly": 12})
    assert decision["groups"] == 1
    assert len(decision["keep"]) == 25
    newest_year = {s["id"] for s in snaps[:365]}
    assert set(decision["keep"]) <= newest_year


def test_hosts_and_tags_are_separate_groups() -> None:
    t = nightly(date(2026, 3, 15), 3)
    snaps = [snap(1, host="a"), snap(2, host="b"), snap(3, host="a", tags=("manual",))]
    arrivals = {s["id"]: t[0] for s in snaps}
    decision = bsm.plan(snaps, arrivals, {"daily": 1, "weekly": 0, "monthly": 0})
    assert decision["groups"] == 3 and len(decision["keep"]) == 3


def test_forged_snapshot_times_cannot_push_out_the_history() -> None:
    """A burglar adds 27 snapshots dated in the coming days, weeks and months. By their own
    times they would be the newest of every bucket and restic forget would drop the real
    history; by arrival (all of them today) they share today's buckets."""
    real_nights = nightly(date(2026, 3, 15), 400)
    snaps, arrivals = [], {}
    for i, t in enumerate(real_nights):
        s = snap(i, time=t.isoformat())
        snaps.append(s)
        arrivals[s["id"]] = t
    attack_at = datetime(2026, 3, 15, 10, tzinfo=UTC)
    forged = []
    for j, days in enumerate([*range(1, 8), *range(7, 63, 7), *range(31, 400, 31)]):
        s = snap(10_000 + j, time=(attack_at + timedelta(days=days)).isoformat())
        forged.append(s["id"])
        snaps.append(s)
        arrivals[s["id"]] = attack_at + timedelta(seconds=j)
    decision = bsm.plan(snaps, arrivals, {"daily": 7, "weekly": 8, "monthly": 12})
    kept = set(decision["keep"])
    # One forged snapshot (the newest arrival) stands for today, this week and this month;
    # every other real snapshot the policy keeps is still kept.
    assert len(kept & set(forged)) == 1
    real_kept_before = bsm.keep([(s["id"], arrivals[s["id"]]) for s in snaps[:400]], 7, 8, 12)
    lost = real_kept_before - kept
    assert len(lost) == 1, "only today's real snapshot gives way to the newest arrival"
    # Restic's own policy on the forged times would have lost almost all history.
    by_claimed = bsm.keep([(s["id"], datetime.fromisoformat(s["time"])) for s in snaps], 7, 8, 12)
    assert len(by_claimed & real_kept_before) < 5


def test_a_snapshot_without_its_file_is_left_alone() -> None:
    t = nightly(date(2026, 3, 15), 2)
    snaps = [snap(1), snap(2)]
    decision = bsm.plan(snaps, {snaps[0]["id"]: t[0]}, {"daily": 7, "weekly": 8, "monthly": 12})
    assert decision["keep"] == [snaps[0]["id"]] and decision["forget"] == []


def test_client_names_cannot_leave_the_data_directory() -> None:
    server = bsm.Server({"data_dir": "/srv/restic/repos"}, "/pw")
    for bad in ("", ".", "..", "a/b", "../etc"):
        with pytest.raises(bsm.MaintenanceError):
            server.repo(bad)
    assert str(server.repo("web-1")) == "/srv/restic/repos/web-1"
