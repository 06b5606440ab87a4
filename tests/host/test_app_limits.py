"""Policy: "FastAPI middleware adds per-user limits on compute-intensive endpoints" (claim
ratelimit.app), and logins are throttled per account.

Set in roles/app/defaults/main.yml (app_ratelimit_*, app_login_*), enforced by the app
(app/platform_app/limits.py: one store shared by every uvicorn worker), proven here the way
the review attacked: straight to the app's own socket on the host, around nginx and its
per-IP limits, as one user. Each check lifts the limits and lockouts it caused (finally:
python -m platform_app.limits reset), so a second run starts clean.
"""

from __future__ import annotations

import math

import pytest
from appsock import app_settings, reset_command, reset_limits, run_plan
from tiers import APP, app_hosts_behind

from policy import require

# The hosts these checks are about (tests/host/tiers.py).
HOST_GROUPS = APP

# App hosts sharing a database share the user's limits (conftest.py: one_check_per_app_user).
pytestmark = [pytest.mark.claim("ratelimit.app"), pytest.mark.disruptive,
              pytest.mark.usefixtures("one_check_per_app_user")]

EVALUATIONS = 100


@pytest.fixture(scope="module", autouse=True)
def _first_of_a_shared_database(host, hostvars) -> None:
    """App hosts that share one database share each user's limits (docs/tiers.md): these
    checks trip a user's limits and reset them, so they run from the first of those hosts
    only. On two hosts at once, one host's reset lifted the lockout the other was measuring
    (the right password answered 200 after 20 wrong ones)."""
    peers = app_hosts_behind(hostvars)
    if app_settings(host).get("PLATFORM_DATABASE_URL") and peers[0] != hostvars["inventory_hostname"]:
        pytest.skip(f"this host's per-user limits are in the database it shares with {peers[0]}: checked there")


@pytest.fixture(scope="module")
def user(account) -> dict[str, str]:
    """The audit account of a plain user (the lab: alice), whose limits the checks trip."""
    name, password = account("app_user")
    return {"username": name, "password": password}


@pytest.fixture(scope="module")
def second(account) -> dict[str, str]:
    """Another account (the lab: admin), to show that one user's budget is not another's."""
    name, password = account("app_admin")
    return {"username": name, "password": password}


def _workers(host) -> int:
    """uvicorn's worker processes: children of the main process started by multiprocessing's
    spawn_main (its resource tracker, also a child, is not a worker)."""
    pid = host.check_output("systemctl show --property=MainPID --value platform.service")
    children = host.check_output(f"ps -o args= --ppid {pid}").splitlines()
    return sum(1 for args in children if "spawn_main" in args)


def test_strategy_evaluations_are_limited_per_user_across_workers(host, user, second, evidence):
    """The finding: one user sent 100 strategy evaluations straight to the app in 0.15 s,
    all answered 200. Now at most the burst (plus what the elapsed time pays for) is
    answered, across all workers together, and the rest get 429 with Retry-After."""
    req = require("ratelimit.app")
    settings = app_settings(host)
    per_minute = int(settings.get("PLATFORM_LIMIT_COMPUTE_PER_MINUTE", 0))
    burst = int(settings.get("PLATFORM_LIMIT_COMPUTE_BURST", 0))
    workers = _workers(host)
    plan = {
        "login": user,
        "repeat": {"count": EVALUATIONS, "method": "POST", "path": "/api/strategy/evaluate",
                   "body": {"expression": "sqrt(x) * 2 + 1", "variables": {"x": 9}}},
        "concurrency": 8,
    }  # fmt: skip
    try:
        reset_limits(host, user["username"])
        first = run_plan(host, plan)
        other = run_plan(host, {**plan, "login": second, "repeat": {**plan["repeat"], "count": 1}})
    finally:
        reset_limits(host, user["username"])
        reset_limits(host, second["username"])
    statuses = [r[0] for r in first["results"]]
    answered = statuses.count(200)
    limited = [r for r in first["results"] if r[0] == req["status"]]
    # The GCRA bucket: `burst` at once, then one per 60/per_minute seconds.
    bound = burst + math.ceil(first["elapsed"] * per_minute / 60) if per_minute else EVALUATIONS
    evidence(
        "ratelimit.app", endpoint="POST /api/strategy/evaluate", sent=EVALUATIONS,
        answered_200=answered, answered_429=len(limited), elapsed_s=round(first["elapsed"], 2),
        per_minute=per_minute, burst=burst, workers=workers,
        retry_after=sorted({r[1] for r in limited if r[1]}),
    )  # fmt: skip
    assert first["login"] == 200
    assert limited, (
        f"{answered} of {EVALUATIONS} evaluations from one user answered 200 in {first['elapsed']:.2f} s, none refused"
    )
    assert per_minute and burst, f"no per-user compute limit in the app's settings: {settings}"
    assert per_minute <= req["compute_per_minute_max"] and burst <= req["compute_burst_max"]
    assert 1 <= answered <= bound, f"{answered} answered in {first['elapsed']:.2f} s, the limit allows {bound}"
    assert answered + len(limited) == EVALUATIONS, statuses
    if req["retry_after"]:
        assert all(r[1] and r[1].isdigit() and int(r[1]) >= 1 for r in limited), limited[:3]
    if req["shared_across_workers"]:
        # One budget for all workers: with per-process counters, each worker would answer a burst.
        assert workers >= 2 and answered < burst * workers
    if req["per"] == "user":
        # Per user: another user's budget is untouched by this one's.
        assert other["results"][0][0] == 200, other


def test_wrong_passwords_lock_the_account_on_that_address_only(host, user, evidence):
    """The finding: 20 wrong passwords for one user were all answered, then the right one
    let in. Now the guesser's address is locked out; the real user elsewhere is not."""
    req = require("ratelimit.app")
    settings = app_settings(host)
    guesser = {"X-Forwarded-For": "198.51.100.77"}
    right = dict(user)
    wrong = {"username": user["username"], "password": "not-the-password"}
    try:
        reset_limits(host, user["username"])
        guesses = run_plan(host, {
            "requests": [{"method": "POST", "path": "/api/auth/login", "body": wrong, "headers": guesser}] * 20
            + [{"method": "POST", "path": "/api/auth/login", "body": right, "headers": guesser}],
        })  # fmt: skip
        elsewhere = run_plan(host, {"requests": [{
            "method": "POST", "path": "/api/auth/login", "body": right,
            "headers": {"X-Forwarded-For": "203.0.113.78"}}]})  # fmt: skip
    finally:
        reset_limits(host, user["username"])
    statuses = [r[0] for r in guesses["results"]]
    answered = statuses[:20].count(401)
    retry_after = [int(r[1]) for r in guesses["results"] if r[0] == 429 and r[1]]
    evidence(
        "ratelimit.app", login_attempts=20, wrong_passwords_answered=answered,
        right_password_after=statuses[20], retry_after_s=sorted(set(retry_after)),
        same_user_other_address=elsewhere["results"][0][0],
        address_free_failures=settings.get("PLATFORM_LOGIN_ADDRESS_FREE_FAILURES"),
    )  # fmt: skip
    assert req["login_throttled"] and statuses[20] == req["status"], (
        f"the right password after 20 wrong ones: {statuses[20]}"
    )
    assert answered <= req["login_free_failures_max"], statuses
    assert set(statuses[answered:]) == {req["status"]}, statuses
    assert len(retry_after) == len(statuses) - answered, guesses["results"]
    # The real user, from their own address, is not locked out by the guesser.
    assert elsewhere["results"][0][0] == 200, elsewhere


def test_guesses_from_many_addresses_lock_the_account_briefly(host, user, evidence):
    """A guesser spread over many addresses meets the account-wide tier; it locks the real
    user out for at most the policy's maximum (the trade-off, docs/app.md)."""
    req = require("ratelimit.app")
    settings = app_settings(host)
    account_free = int(settings.get("PLATFORM_LOGIN_ACCOUNT_FREE_FAILURES", 20))
    wrong = {"username": user["username"], "password": "not-the-password"}
    right = dict(user)
    spread = [
        {"method": "POST", "path": "/api/auth/login", "body": wrong,
         "headers": {"X-Forwarded-For": f"198.51.{100 + i // 250}.{1 + i % 250}"}}
        for i in range(account_free + 1)
    ]  # fmt: skip
    try:
        reset_limits(host, user["username"])
        result = run_plan(host, {"requests": [*spread, {
            "method": "POST", "path": "/api/auth/login", "body": right,
            "headers": {"X-Forwarded-For": "203.0.113.79"}}]})  # fmt: skip
    finally:
        reset_limits(host, user["username"])
    real_user = result["results"][-1]
    statuses = [r[0] for r in result["results"][:-1]]
    evidence(
        "ratelimit.app", spread_addresses=len(spread), answered=statuses.count(401),
        real_user_status=real_user[0], real_user_retry_after=real_user[1],
        account_lockout_max_s=settings.get("PLATFORM_LOGIN_ACCOUNT_LOCKOUT_MAX_SECONDS"),
    )  # fmt: skip
    assert 429 in statuses, f"{len(spread)} guesses from {len(spread)} addresses all answered"
    assert statuses.count(401) <= account_free
    assert real_user[0] == 429 and real_user[1]
    assert int(real_user[1]) <= req["account_lockout_seconds_max"]
    lockout_max = int(settings["PLATFORM_LOGIN_ACCOUNT_LOCKOUT_MAX_SECONDS"])
    assert lockout_max <= req["account_lockout_seconds_max"]


def test_limits_are_lifted_by_the_reset_tool(host, user):
    """The operator's way out (docs/app.md): after a reset, the locked user logs in again."""
    wrong = {"username": user["username"], "password": "not-the-password"}
    right = dict(user)
    name = user["username"]
    address = {"X-Forwarded-For": "198.51.100.80"}
    attempt = {"method": "POST", "path": "/api/auth/login", "headers": address}
    assert reset_command(host, name), "no limit store on the host (/run/platform-limits)"
    try:
        reset_limits(host, name)
        locked = run_plan(host, {"requests": [{**attempt, "body": wrong}] * 8 + [{**attempt, "body": right}]})
        assert locked["results"][-1][0] == 429
        reset_limits(host, name)
        again = run_plan(host, {"requests": [{**attempt, "body": right}]})
        assert again["results"][0][0] == 200
    finally:
        reset_limits(host, name)
