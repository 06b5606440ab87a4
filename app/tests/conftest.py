"""Shared fixtures: a temporary state dir, users file, file action log and test client."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from fastapi.testclient import TestClient

from platform_app.config import Settings, load_settings
from platform_app.factory import create_app

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


@pytest.fixture
def env(tmp_path: Path, users_document: dict[str, Any]) -> dict[str, str]:
    state = tmp_path / "state"
    state.mkdir()
    users_file = tmp_path / "users.json"
    users_file.write_text(json.dumps(users_document))
    return {
        "PLATFORM_JWT_SECRET": SECRET,
        "PLATFORM_STATE_DIR": str(state),
        "PLATFORM_USERS_FILE": str(users_file),
        "PLATFORM_ACTION_LOG": f"file:{tmp_path / 'actions.jsonl'}",
        "PLATFORM_LIMITS_DB": str(tmp_path / "limits.sqlite3"),
        "FMP_API_KEY": FMP_KEY,
        "POLYGON_API_KEY": POLYGON_KEY,
    }


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
