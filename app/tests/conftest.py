"""Shared fixtures: a temporary state dir, users file, file action log and test client,
and the stores: files and SQLite, or a real PostgreSQL.

Tests marked ``@both_stores`` run twice: with the stores of one host (``file``: portfolio
files, SQLite limits) and with ``postgresql`` (PLATFORM_DATABASE_URL). The PostgreSQL
cases need a real server, found in this order:

* ``PLATFORM_TEST_DATABASE_URL`` (a libpq URI without password; the password, if any, in
  ``PLATFORM_TEST_DATABASE_PASSWORD`` or libpq's PGPASSWORD/.pgpass): a database of the
  tests' own, whose app tables are dropped before each test;
* libpq's PG* variables (``pg_virtualenv`` sets them, as scripts/app-test.sh runs it) of
  a role that may create roles and databases: the tests make a role that owns a database
  of its own, as the deployed app's role does, and connect as that role with its password.

Without either, the PostgreSQL cases are skipped; with ``PLATFORM_TEST_REQUIRE_DATABASE=1``
they fail instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import bcrypt
import pytest
from fastapi.testclient import TestClient

from platform_app.config import Settings, load_settings
from platform_app.factory import create_app

if TYPE_CHECKING:
    import psycopg

    from platform_app.database import Database

SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
FMP_KEY = "FMPKEY-must-never-leak-7f3a9c"
POLYGON_KEY = "POLYGONKEY-must-never-leak-1b2d4e"
PASSWORDS = {"alice": "alice-pass-1", "bob": "bob-pass-2", "root": "root-pass-3"}
ROLES = {"alice": "user", "bob": "user", "root": "admin"}


# Cost 4 keeps the suite fast. The app refuses it (MIN_COST 12): the in-process tests lower
# Settings.bcrypt_min_cost, which no environment variable can do; a real server gets
# cost-12 hashes (users_document_cost12).
TEST_COST = 4


def _hash(password: str, cost: int = TEST_COST) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()


def make_settings(
    env: dict[str, str], journal_socket: str = "/nonexistent/journal.sock", **overrides: Any
) -> Settings:
    settings = load_settings(env, journal_socket=journal_socket)
    return dataclasses.replace(settings, bcrypt_min_cost=TEST_COST, **overrides)


@pytest.fixture(scope="session")
def users_document() -> dict[str, Any]:
    return {
        "users": {
            name: {"password_hash": _hash(PASSWORDS[name]), "role": ROLES[name]}
            for name in PASSWORDS
        }
    }


@pytest.fixture(scope="session")
def users_document_cost12() -> dict[str, Any]:
    return {
        "users": {
            name: {"password_hash": _hash(PASSWORDS[name], 12), "role": ROLES[name]}
            for name in PASSWORDS
        }
    }


# --- the stores ----------------------------------------------------------------------

STORES = ["file", pytest.param("postgresql", marks=pytest.mark.postgresql)]
both_stores = pytest.mark.parametrize("store_kind", STORES, indirect=True)


def postgresql_only(test: Callable[..., None]) -> Callable[..., None]:
    """For tests of what only the PostgreSQL store has (pools, reconnection, rows)."""
    only = pytest.mark.parametrize("store_kind", ["postgresql"], indirect=True)
    return pytest.mark.postgresql(only(test))  # type: ignore[no-any-return]


APP_ROLE = "platform_app_test"  # role and database made on a pg_virtualenv server
REQUIRE_DATABASE = "PLATFORM_TEST_REQUIRE_DATABASE"


@dataclasses.dataclass(frozen=True)
class PgDatabase:
    url: str
    password: str | None = dataclasses.field(default=None, repr=False)

    def connect(self) -> psycopg.Connection[Any]:
        import psycopg

        password = {} if self.password is None else {"password": self.password}
        return psycopg.connect(self.url, autocommit=True, **password)


def _no_server(reason: str) -> None:
    if os.environ.get(REQUIRE_DATABASE) == "1":
        pytest.fail(f"{REQUIRE_DATABASE}=1, but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[PgDatabase]:
    """The server of the PostgreSQL cases (see the module's docstring for how it is found)."""
    url = os.environ.get("PLATFORM_TEST_DATABASE_URL", "").strip()
    if url:
        yield PgDatabase(url, os.environ.get("PLATFORM_TEST_DATABASE_PASSWORD") or None)
        return
    if not any(os.environ.get(name) for name in ("PGHOST", "PGPORT", "PGDATABASE", "PGSERVICE")):
        _no_server(
            "no PostgreSQL server: set PLATFORM_TEST_DATABASE_URL, or libpq's PG* variables"
            " (scripts/app-test.sh runs the tests under pg_virtualenv)"
        )
    import psycopg
    from psycopg import sql

    role = sql.Identifier(APP_ROLE)
    password = secrets.token_urlsafe(24)
    with psycopg.connect(autocommit=True) as admin:  # as libpq's PG* variables say
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(role))
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(role, password))
        # Owned by the app's role, as deployed: on PostgreSQL 15 and later that is what lets
        # it create its tables in schema public.
        admin.execute(
            sql.SQL(
                "CREATE DATABASE {} OWNER {} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
                " TEMPLATE template0"
            ).format(role, role)
        )
        host, port = admin.info.host, admin.info.port
    host = f"[{host}]" if ":" in host else quote(host, safe="")  # IPv6, socket directory
    yield PgDatabase(f"postgresql://{APP_ROLE}@{host}:{port}/{APP_ROLE}", password)
    with psycopg.connect(autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(role))
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))


@pytest.fixture
def database(postgresql_server: PgDatabase) -> PgDatabase:
    """The test database without the app's tables: each test starts from nothing, and the
    app creates them as at its first start."""
    from platform_app.database import TABLES

    with postgresql_server.connect() as conn:
        conn.execute("SET lock_timeout = '10s'")  # a leftover session fails the test, not hangs
        conn.execute(f"DROP TABLE IF EXISTS {', '.join(TABLES)}")
    return postgresql_server


@pytest.fixture
def make_database(database: PgDatabase) -> Iterator[Callable[..., Database]]:
    """Makes Database objects on the test database (each with a pool of its own, as another
    process or host has), tables created; closed at the end of the test."""
    from platform_app.database import Database

    opened: list[Database] = []

    def factory(**kwargs: Any) -> Database:
        db = Database(database.url, database.password, **kwargs)
        db.create_schema()
        opened.append(db)
        return db

    yield factory
    for db in opened:
        db.close()


@pytest.fixture
def store_kind(request: pytest.FixtureRequest) -> str:
    """``file`` unless a test asks for both stores (``@both_stores``)."""
    return str(getattr(request, "param", "file"))


@pytest.fixture
def env(
    tmp_path: Path,
    users_document: dict[str, Any],
    store_kind: str,
    request: pytest.FixtureRequest,
) -> dict[str, str]:
    state = tmp_path / "state"
    state.mkdir()
    users_file = tmp_path / "users.json"
    users_file.write_text(json.dumps(users_document))
    env = {
        "PLATFORM_JWT_SECRET": SECRET,
        "PLATFORM_STATE_DIR": str(state),
        "PLATFORM_USERS_FILE": str(users_file),
        "PLATFORM_ACTION_LOG": f"file:{tmp_path / 'actions.jsonl'}",
        "PLATFORM_LIMITS_DB": str(tmp_path / "limits.sqlite3"),
        "FMP_API_KEY": FMP_KEY,
        "POLYGON_API_KEY": POLYGON_KEY,
    }
    if store_kind == "postgresql":
        database: PgDatabase = request.getfixturevalue("database")
        env["PLATFORM_DATABASE_URL"] = database.url
        if database.password is not None:
            env["PLATFORM_DATABASE_PASSWORD"] = database.password
    return env


@pytest.fixture
def make_client(env: dict[str, str]) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def factory(**overrides: str | None) -> TestClient:
        merged = dict(env)
        for key, value in overrides.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        client = TestClient(create_app(make_settings(merged)))
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()
        client.app.state.context.close()  # type: ignore[attr-defined]


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return make_settings(env)


@pytest.fixture
def action_log(env: dict[str, str]) -> Path:
    return Path(env["PLATFORM_ACTION_LOG"].removeprefix("file:"))


def read_actions(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def login(client: TestClient, username: str) -> str:
    response = client.post(
        "/api/auth/login", json={"username": username, "password": PASSWORDS[username]}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def auth_header(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens(client: TestClient) -> dict[str, str]:
    return {name: login(client, name) for name in PASSWORDS}
