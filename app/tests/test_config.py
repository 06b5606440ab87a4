"""Environment-only configuration and refusing to start when it is wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from platform_app.config import ConfigError, load_settings
from platform_app.users import UsersFileError, UserStore

APP_DIR = Path(__file__).resolve().parents[1]


def test_defaults(env: dict[str, str]) -> None:
    settings = load_settings(env, journal_socket="/nonexistent")
    assert settings.jwt_ttl_seconds == 900
    assert settings.action_log.kind == "file"
    assert settings.action_log.identifier == "platform-actions"
    assert settings.umami_script_url is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"PLATFORM_JWT_SECRET": None}, "PLATFORM_JWT_SECRET is not set"),
        ({"PLATFORM_JWT_SECRET": "x" * 31}, "at least 32"),
        ({"PLATFORM_JWT_TTL_SECONDS": "ten"}, "integer"),
        ({"PLATFORM_JWT_TTL_SECONDS": "0"}, "between"),
        ({"PLATFORM_STATE_DIR": None}, "STATE_DIRECTORY"),
        ({"PLATFORM_STATE_DIR": "relative/dir"}, "absolute"),
        ({"PLATFORM_STATE_DIR": "/nonexistent/state"}, "does not exist"),
        ({"PLATFORM_USERS_FILE": None}, "PLATFORM_USERS_FILE"),
        ({"PLATFORM_ACTION_LOG": None}, "no journald socket"),
        ({"PLATFORM_ACTION_LOG": "syslog"}, "journald"),
        ({"PLATFORM_ACTION_LOG": "file:relative.jsonl"}, "absolute"),
        ({"PLATFORM_ACTION_LOG": "socket:relative.sock"}, "absolute"),
        ({"UMAMI_SCRIPT_URL": "javascript:alert(1)", "UMAMI_WEBSITE_ID": "x"}, "http"),
    ],
)
def test_invalid_configuration(
    env: dict[str, str], overrides: dict[str, str | None], message: str
) -> None:
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    with pytest.raises(ConfigError, match=message):
        load_settings(env, journal_socket="/nonexistent")


def test_state_directory_from_systemd(env: dict[str, str], tmp_path: Path) -> None:
    state = env.pop("PLATFORM_STATE_DIR")
    env["STATE_DIRECTORY"] = f"{state}:{tmp_path}"
    assert str(load_settings(env, journal_socket="/x").state_dir) == state


def test_journald_is_default_when_socket_exists(env: dict[str, str], tmp_path: Path) -> None:
    env.pop("PLATFORM_ACTION_LOG")
    sock = tmp_path / "sock"
    sock.touch()
    spec = load_settings(env, journal_socket=str(sock)).action_log
    assert spec.kind == "journald" and spec.socket_path == str(sock)


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"users": []},
        {"users": {"../x": {"password_hash": "$2b$04$" + "a" * 53, "role": "user"}}},
        {"users": {"a": {"password_hash": "plain", "role": "user"}}},
        {"users": {"a": {"password_hash": "$2b$04$" + "a" * 53, "role": "root"}}},
    ],
)
def test_bad_users_file(tmp_path: Path, document: object) -> None:
    path = tmp_path / "users.json"
    path.write_text(json.dumps(document))
    with pytest.raises(UsersFileError):
        UserStore.from_file(path)


def _run_app_import(
    env: dict[str, str], code: str = "import platform_app.main"
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PLATFORM_", "STATE_"))}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=APP_DIR,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_app_refuses_to_start_without_secret(env: dict[str, str]) -> None:
    env.pop("PLATFORM_JWT_SECRET")
    result = _run_app_import(env)
    assert result.returncode == 78
    assert "refusing to start: PLATFORM_JWT_SECRET is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_app_refuses_to_start_with_short_secret(env: dict[str, str]) -> None:
    env["PLATFORM_JWT_SECRET"] = "short"
    result = _run_app_import(env)
    assert result.returncode == 78
    assert "at least 32 characters" in result.stderr
    assert "short" not in result.stderr.replace("at least", "")


def _users_file(tmp_path: Path, document: dict) -> str:
    path = tmp_path / "users-real.json"
    path.write_text(json.dumps(document))
    return str(path)


def test_app_imports_with_good_environment(
    env: dict[str, str], tmp_path: Path, users_document_cost12: dict
) -> None:
    env["PLATFORM_USERS_FILE"] = _users_file(tmp_path, users_document_cost12)
    result = _run_app_import(env)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("cost", [4, 10, 11])
def test_app_refuses_a_users_file_with_a_bcrypt_cost_below_12(
    env: dict[str, str], tmp_path: Path, users_document_cost12: dict, cost: int
) -> None:
    """The app itself enforces cost >= 12 (not only the role): exit 78, no traceback."""
    import bcrypt

    document = json.loads(json.dumps(users_document_cost12))
    weak = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=cost)).decode()
    document["users"]["bob"]["password_hash"] = weak
    env["PLATFORM_USERS_FILE"] = _users_file(tmp_path, document)
    result = _run_app_import(env)
    assert result.returncode == 78
    assert f"user bob: bcrypt cost {cost} is below 12" in result.stderr
    assert "Traceback" not in result.stderr and weak not in result.stderr


def test_no_environment_variable_lowers_the_bcrypt_minimum(env: dict[str, str]) -> None:
    env["PLATFORM_BCRYPT_MIN_COST"] = "4"
    assert load_settings(env, journal_socket="/x").bcrypt_min_cost == 12


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PLATFORM_LIMIT_COMPUTE_PER_MINUTE", "0", "between 1 and"),
        ("PLATFORM_LIMIT_COMPUTE_BURST", "many", "integer"),
        ("PLATFORM_LOGIN_ADDRESS_FREE_FAILURES", "0", "between 1 and"),
        ("PLATFORM_PORTFOLIO_MAX_COUNT", "-1", "between 1 and"),
        ("PLATFORM_PORTFOLIO_MAX_BYTES", "10", "between 1024 and"),
        ("PLATFORM_LIMITS_DB", "relative.sqlite3", "absolute"),
        ("PLATFORM_LIMITS_DB", "/nonexistent/dir/limits.sqlite3", "does not exist"),
        ("PLATFORM_ACTION_LOG_READ_DIR", "var/log", "absolute"),
    ],
)
def test_invalid_limit_settings(env: dict[str, str], name: str, value: str, message: str) -> None:
    env[name] = value
    with pytest.raises(ConfigError, match=message):
        load_settings(env, journal_socket="/nonexistent")


def test_limit_settings_and_runtime_directory(env: dict[str, str], tmp_path: Path) -> None:
    env.pop("PLATFORM_LIMITS_DB")
    env["RUNTIME_DIRECTORY"] = f"{tmp_path}:/elsewhere"
    env["PLATFORM_LIMIT_COMPUTE_PER_MINUTE"] = "12"
    env["PLATFORM_LOGIN_ACCOUNT_LOCKOUT_MAX_SECONDS"] = "30"
    settings = load_settings(env, journal_socket="/nonexistent")
    assert settings.limits_db == tmp_path / "limits.sqlite3"
    assert settings.compute_rate.per_minute == 12 and settings.compute_rate.burst == 10
    assert settings.login_policy.account_lockout_max == 30


# --- the database (PLATFORM_DATABASE_URL, PLATFORM_DATABASE_PASSWORD) ----------------------

DB_URL = (
    "postgresql://platform_app@10.89.77.63:5432/platform_app"
    "?sslmode=verify-full&sslrootcert=/etc/ssl/platform-database-ca.pem"
)
DB_PASSWORD = "db-password-must-never-leak-93c1"


def test_without_a_database_the_stores_are_files(env: dict[str, str]) -> None:
    settings = load_settings(env, journal_socket="/x")
    assert settings.database_url is None and settings.database_password is None


@pytest.mark.parametrize(
    "url", [DB_URL, "postgres://app@db/app", "postgresql:///platform_app?host=/run/postgresql"]
)
def test_database_url_and_password(env: dict[str, str], url: str) -> None:
    env["PLATFORM_DATABASE_URL"] = url
    env["PLATFORM_DATABASE_PASSWORD"] = DB_PASSWORD
    settings = load_settings(env, journal_socket="/x")
    assert settings.database_url == url and settings.database_password == DB_PASSWORD
    assert DB_PASSWORD not in repr(settings)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"PLATFORM_DATABASE_URL": f"postgresql://app:{DB_PASSWORD}@db/app"}, "not contain a pass"),
        ({"PLATFORM_DATABASE_URL": f"postgresql://app@db/app?password={DB_PASSWORD}"}, "not"),
        ({"PLATFORM_DATABASE_URL": "postgresql://app:@db/app"}, "PLATFORM_DATABASE_PASSWORD"),
        ({"PLATFORM_DATABASE_URL": f"mysql://app:{DB_PASSWORD}@db/app"}, "postgresql://"),
        ({"PLATFORM_DATABASE_URL": f"host=db user=app password={DB_PASSWORD}"}, "postgresql://"),
        ({"PLATFORM_DATABASE_URL": f"postgresql://app:{DB_PASSWORD}@[::1/app"}, "not a valid URL"),
        ({"PLATFORM_DATABASE_URL": "postgresql://app@db/app?sslmod=verify-full"}, "sslmod"),
        ({"PLATFORM_DATABASE_PASSWORD": DB_PASSWORD}, "PLATFORM_DATABASE_URL is not"),
    ],
)
def test_invalid_database_settings(
    env: dict[str, str], overrides: dict[str, str], message: str
) -> None:
    env.update(overrides)
    with pytest.raises(ConfigError, match=message) as refused:
        load_settings(env, journal_socket="/nonexistent")
    assert DB_PASSWORD not in str(refused.value)


def test_app_with_an_unreachable_database_exits_for_systemd_to_retry(
    env: dict[str, str], tmp_path: Path, users_document_cost12: dict
) -> None:
    """Not a configuration error (78, never restarted): 69, and Restart=on-failure tries
    again until PostgreSQL answers. Nothing listens on port 1; the password never shows."""
    env["PLATFORM_USERS_FILE"] = _users_file(tmp_path, users_document_cost12)
    env["PLATFORM_DATABASE_URL"] = "postgresql://platform_app@127.0.0.1:1/platform_app"
    env["PLATFORM_DATABASE_PASSWORD"] = DB_PASSWORD
    env["PLATFORM_DATABASE_STARTUP_WAIT_SECONDS"] = "0"
    result = _run_app_import(env)
    assert result.returncode == 69, result.stderr
    assert "cannot start now: database platform_app@127.0.0.1:1/platform_app:" in result.stderr
    assert "Traceback" not in result.stderr
    assert DB_PASSWORD not in result.stderr + result.stdout


def test_app_waits_for_its_database_before_giving_up(
    env: dict[str, str], tmp_path: Path, users_document_cost12: dict
) -> None:
    """A database that is not there yet: the app tries again for
    PLATFORM_DATABASE_STARTUP_WAIT_SECONDS (a few quick exits would use up systemd's start
    limit and leave the app down once the database is back), then exits 69."""
    env["PLATFORM_USERS_FILE"] = _users_file(tmp_path, users_document_cost12)
    env["PLATFORM_DATABASE_URL"] = "postgresql://platform_app@127.0.0.1:1/platform_app"
    env["PLATFORM_DATABASE_PASSWORD"] = DB_PASSWORD
    env["PLATFORM_DATABASE_STARTUP_WAIT_SECONDS"] = "3"
    started = time.monotonic()
    result = _run_app_import(env)
    waited = time.monotonic() - started
    assert result.returncode == 69, result.stderr
    assert waited >= 2, f"gave up after {waited:.1f} s"
    assert result.stderr.count("trying again") >= 2, result.stderr
    assert DB_PASSWORD not in result.stderr + result.stdout


def test_the_file_stores_do_not_need_psycopg(
    env: dict[str, str], tmp_path: Path, users_document_cost12: dict
) -> None:
    """A host without a database needs no libpq: psycopg is imported only with one."""
    env["PLATFORM_USERS_FILE"] = _users_file(tmp_path, users_document_cost12)
    code = "import sys, platform_app.main; sys.exit('psycopg' in sys.modules)"
    result = _run_app_import(env, code)
    assert result.returncode == 0, result.stderr
