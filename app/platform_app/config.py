"""Settings read from environment variables only (never from argv)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from platform_app.limits import DB_NAME, LoginPolicy, Rate
from platform_app.users import MIN_COST

JOURNAL_SOCKET = "/run/systemd/journal/socket"
MIN_SECRET_LENGTH = 32
DEFAULT_TTL_SECONDS = 900
MAX_TTL_SECONDS = 86400
DEFAULT_ACTION_LOG_IDENTIFIER = "platform-actions"
# Per-user limits (docs/app.md "Per-user limits"): name -> (default, minimum, maximum).
INTEGER_SETTINGS: dict[str, tuple[int, int, int]] = {
    "PLATFORM_LIMIT_COMPUTE_PER_MINUTE": (30, 1, 100_000),
    "PLATFORM_LIMIT_COMPUTE_BURST": (10, 1, 10_000),
    "PLATFORM_LIMIT_WRITE_PER_MINUTE": (30, 1, 100_000),
    "PLATFORM_LIMIT_WRITE_BURST": (10, 1, 10_000),
    "PLATFORM_LOGIN_ADDRESS_FREE_FAILURES": (5, 1, 1000),
    "PLATFORM_LOGIN_ACCOUNT_FREE_FAILURES": (20, 1, 10_000),
    "PLATFORM_LOGIN_LOCKOUT_BASE_SECONDS": (2, 1, 3600),
    "PLATFORM_LOGIN_ADDRESS_LOCKOUT_MAX_SECONDS": (900, 1, 86_400),
    "PLATFORM_LOGIN_ACCOUNT_LOCKOUT_MAX_SECONDS": (60, 1, 86_400),
    "PLATFORM_LOGIN_FAILURE_WINDOW_SECONDS": (86_400, 60, 30 * 86_400),
    "PLATFORM_PORTFOLIO_MAX_COUNT": (100, 1, 100_000),
    "PLATFORM_PORTFOLIO_MAX_BYTES": (256 * 1024, 1024, 64 * 1024 * 1024),
    # How long a starting app waits for its database before it exits 69 (see main.py).
    "PLATFORM_DATABASE_STARTUP_WAIT_SECONDS": (20, 0, 300),
}


class ConfigError(Exception):
    """Raised when the environment does not describe a usable configuration."""


@dataclass(frozen=True)
class ActionLogSpec:
    """Where action records go: ``kind`` is ``"journald"``, ``"file"`` or ``"socket"``
    (a unix datagram socket of a collector, ``path``)."""

    kind: str
    path: Path | None = None
    identifier: str = DEFAULT_ACTION_LOG_IDENTIFIER
    socket_path: str = JOURNAL_SOCKET


@dataclass(frozen=True)
class Settings:
    """Validated application settings. Secrets are kept out of ``repr``."""

    jwt_secret: str = field(repr=False)
    jwt_ttl_seconds: int
    state_dir: Path
    users_file: Path
    action_log: ActionLogSpec
    fmp_api_key: str | None = field(default=None, repr=False)
    polygon_api_key: str | None = field(default=None, repr=False)
    umami_script_url: str | None = None
    umami_website_id: str | None = None
    # Directory of the JSONL files written by the action-log copier (read-only for the app).
    action_log_read_dir: Path | None = None
    limits_db: Path | None = None
    compute_rate: Rate = field(default_factory=lambda: Rate(30, 10))
    write_rate: Rate = field(default_factory=lambda: Rate(30, 10))
    login_policy: LoginPolicy = field(default_factory=LoginPolicy)
    portfolio_max_count: int = 100
    portfolio_max_bytes: int = 256 * 1024
    # PostgreSQL for portfolios and limits (shared by app hosts); None: files and SQLite.
    database_url: str | None = None
    database_password: str | None = field(default=None, repr=False)
    database_startup_wait: int = 20
    # Not from the environment: the page promises cost 12; nothing can lower it.
    bcrypt_min_cost: int = MIN_COST


def _optional(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _jwt_secret(env: Mapping[str, str]) -> str:
    secret = env.get("PLATFORM_JWT_SECRET", "")
    if not secret:
        raise ConfigError("PLATFORM_JWT_SECRET is not set")
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"PLATFORM_JWT_SECRET must be at least {MIN_SECRET_LENGTH} characters long"
        )
    return secret


def _ttl(env: Mapping[str, str]) -> int:
    raw = env.get("PLATFORM_JWT_TTL_SECONDS", "").strip()
    if not raw:
        return DEFAULT_TTL_SECONDS
    try:
        ttl = int(raw)
    except ValueError:
        raise ConfigError("PLATFORM_JWT_TTL_SECONDS must be an integer") from None
    if not 1 <= ttl <= MAX_TTL_SECONDS:
        raise ConfigError(f"PLATFORM_JWT_TTL_SECONDS must be between 1 and {MAX_TTL_SECONDS}")
    return ttl


def _state_dir(env: Mapping[str, str]) -> Path:
    raw = _optional(env, "PLATFORM_STATE_DIR")
    if raw is None:
        # systemd's StateDirectory= may list several directories, separated by ':'.
        systemd_dirs = _optional(env, "STATE_DIRECTORY")
        raw = systemd_dirs.split(":")[0] if systemd_dirs else None
    if raw is None:
        raise ConfigError("PLATFORM_STATE_DIR is not set and systemd gave no STATE_DIRECTORY")
    path = Path(raw)
    if not path.is_absolute():
        raise ConfigError("the state directory must be an absolute path")
    if not path.is_dir():
        raise ConfigError(f"the state directory {path} does not exist")
    return path


def _users_file(env: Mapping[str, str]) -> Path:
    raw = _optional(env, "PLATFORM_USERS_FILE")
    if raw is None:
        raise ConfigError("PLATFORM_USERS_FILE is not set")
    return Path(raw)


def _action_log(env: Mapping[str, str], journal_socket: str) -> ActionLogSpec:
    identifier = _optional(env, "PLATFORM_ACTION_LOG_IDENTIFIER") or DEFAULT_ACTION_LOG_IDENTIFIER
    if not identifier.isprintable() or len(identifier) > 64:
        raise ConfigError("PLATFORM_ACTION_LOG_IDENTIFIER must be printable, at most 64 chars")
    raw = _optional(env, "PLATFORM_ACTION_LOG")
    if raw is None:
        if not os.path.exists(journal_socket):
            raise ConfigError(
                "PLATFORM_ACTION_LOG is not set and there is no journald socket; "
                "set PLATFORM_ACTION_LOG=file:/path/to/actions.jsonl"
            )
        raw = "journald"
    if raw == "journald":
        return ActionLogSpec("journald", identifier=identifier, socket_path=journal_socket)
    for kind in ("file", "socket"):
        if raw.startswith(f"{kind}:"):
            path = Path(raw.removeprefix(f"{kind}:"))
            if not path.is_absolute():
                raise ConfigError(f"PLATFORM_ACTION_LOG={kind}: needs an absolute path")
            return ActionLogSpec(kind, path=path, identifier=identifier)
    raise ConfigError(
        "PLATFORM_ACTION_LOG must be 'journald', 'file:/absolute/path' or 'socket:/absolute/path'"
    )


def _integer(env: Mapping[str, str], name: str) -> int:
    default, low, high = INTEGER_SETTINGS[name]
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}")
    return value


def _absolute_dir(env: Mapping[str, str], name: str) -> Path | None:
    raw = _optional(env, name)
    if raw is None:
        return None
    path = Path(raw)
    if not path.is_absolute():
        raise ConfigError(f"{name} must be an absolute path")
    return path


def _limits_db(env: Mapping[str, str], state_dir: Path) -> Path:
    """PLATFORM_LIMITS_DB, else the unit's RuntimeDirectory= (tmpfs), else the state dir."""
    raw = _optional(env, "PLATFORM_LIMITS_DB")
    if raw is None:
        runtime = _optional(env, "RUNTIME_DIRECTORY")
        directory = Path(runtime.split(":")[0]) if runtime else state_dir
        return directory / DB_NAME
    path = Path(raw)
    if not path.is_absolute():
        raise ConfigError("PLATFORM_LIMITS_DB must be an absolute path")
    if not path.parent.is_dir():
        raise ConfigError(f"the directory of PLATFORM_LIMITS_DB ({path.parent}) does not exist")
    return path


def _login_policy(env: Mapping[str, str]) -> LoginPolicy:
    return LoginPolicy(
        address_free_failures=_integer(env, "PLATFORM_LOGIN_ADDRESS_FREE_FAILURES"),
        account_free_failures=_integer(env, "PLATFORM_LOGIN_ACCOUNT_FREE_FAILURES"),
        lockout_base=float(_integer(env, "PLATFORM_LOGIN_LOCKOUT_BASE_SECONDS")),
        address_lockout_max=float(_integer(env, "PLATFORM_LOGIN_ADDRESS_LOCKOUT_MAX_SECONDS")),
        account_lockout_max=float(_integer(env, "PLATFORM_LOGIN_ACCOUNT_LOCKOUT_MAX_SECONDS")),
        failure_window=float(_integer(env, "PLATFORM_LOGIN_FAILURE_WINDOW_SECONDS")),
    )


def database_settings(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """PLATFORM_DATABASE_URL (a libpq URI naming the database, its user and TLS settings)
    and PLATFORM_DATABASE_PASSWORD. The password stays out of the URL so that the URL can
    appear in messages; no message here ever quotes either of them."""
    url = _optional(env, "PLATFORM_DATABASE_URL")
    password = env.get("PLATFORM_DATABASE_PASSWORD") or None
    if url is None:
        if password is not None:
            raise ConfigError("PLATFORM_DATABASE_PASSWORD is set but PLATFORM_DATABASE_URL is not")
        return None, None
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("PLATFORM_DATABASE_URL must be a postgresql:// URL (a libpq URI)")
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError:
        raise ConfigError("PLATFORM_DATABASE_URL is not a valid URL") from None
    if has_password or "password" in parse_qs(parts.query, keep_blank_values=True):
        raise ConfigError(
            "PLATFORM_DATABASE_URL must not contain a password: set PLATFORM_DATABASE_PASSWORD"
        )
    # libpq's own parser (psycopg is imported only when a database is configured).
    import psycopg.conninfo

    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise ConfigError(f"PLATFORM_DATABASE_URL: {str(exc).strip()}") from None
    return url, password


def _umami(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    url = _optional(env, "UMAMI_SCRIPT_URL")
    website_id = _optional(env, "UMAMI_WEBSITE_ID")
    if url is None or website_id is None:
        return None, None
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ConfigError("UMAMI_SCRIPT_URL must be an absolute http(s) URL")
    return url, website_id


def load_settings(
    env: Mapping[str, str] | None = None, *, journal_socket: str = JOURNAL_SOCKET
) -> Settings:
    """Build :class:`Settings` from ``env`` (defaults to ``os.environ``)."""
    env = os.environ if env is None else env
    umami_url, umami_id = _umami(env)
    state_dir = _state_dir(env)
    database_url, database_password = database_settings(env)
    return Settings(
        jwt_secret=_jwt_secret(env),
        jwt_ttl_seconds=_ttl(env),
        state_dir=state_dir,
        users_file=_users_file(env),
        action_log=_action_log(env, journal_socket),
        fmp_api_key=_optional(env, "FMP_API_KEY"),
        polygon_api_key=_optional(env, "POLYGON_API_KEY"),
        umami_script_url=umami_url,
        umami_website_id=umami_id,
        action_log_read_dir=_absolute_dir(env, "PLATFORM_ACTION_LOG_READ_DIR"),
        limits_db=_limits_db(env, state_dir),
        compute_rate=Rate(
            _integer(env, "PLATFORM_LIMIT_COMPUTE_PER_MINUTE"),
            _integer(env, "PLATFORM_LIMIT_COMPUTE_BURST"),
        ),
        write_rate=Rate(
            _integer(env, "PLATFORM_LIMIT_WRITE_PER_MINUTE"),
            _integer(env, "PLATFORM_LIMIT_WRITE_BURST"),
        ),
        login_policy=_login_policy(env),
        portfolio_max_count=_integer(env, "PLATFORM_PORTFOLIO_MAX_COUNT"),
        portfolio_max_bytes=_integer(env, "PLATFORM_PORTFOLIO_MAX_BYTES"),
        database_url=database_url,
        database_password=database_password,
        database_startup_wait=_integer(env, "PLATFORM_DATABASE_STARTUP_WAIT_SECONDS"),
    )
