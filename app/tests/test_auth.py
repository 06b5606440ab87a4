"""Login, token validation and the bearer challenge."""

from __future__ import annotations

import base64
import json
import time

import bcrypt
import jwt
import pytest
from conftest import PASSWORDS, SECRET, auth_header, login
from fastapi.testclient import TestClient


def _b64(data: dict[str, object]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": "alice",
        "role": "user",
        "iat": now,
        "exp": now + 600,
        "jti": "test-jti",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def assert_unauthorized(response: object) -> None:
    assert response.status_code == 401  # type: ignore[attr-defined]
    challenge = response.headers.get("www-authenticate", "")  # type: ignore[attr-defined]
    assert challenge.startswith("Bearer")


def test_login_ok_returns_hs256_token_with_required_claims(client: TestClient) -> None:
    response = client.post(
        "/api/auth/login", json={"username": "alice", "password": "alice-pass-1"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "HS256"
    claims = jwt.decode(body["access_token"], SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert claims["role"] == "user"
    assert claims["exp"] - claims["iat"] == 900
    assert claims["jti"]
    assert response.headers["cache-control"] == "no-store"


def test_each_login_gets_a_fresh_jti(client: TestClient) -> None:
    first = jwt.decode(login(client, "alice"), SECRET, algorithms=["HS256"])
    second = jwt.decode(login(client, "alice"), SECRET, algorithms=["HS256"])
    assert first["jti"] != second["jti"]


def test_ttl_comes_from_environment(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(PLATFORM_JWT_TTL_SECONDS="60")
    response = client.post("/api/auth/login", json={"username": "bob", "password": "bob-pass-2"})
    assert response.json()["expires_in"] == 60


@pytest.mark.parametrize(
    ("username", "password"),
    [("alice", "wrong"), ("alice", PASSWORDS["bob"]), ("nobody", "whatever"), ("alice", "x" * 200)],
)
def test_bad_credentials_are_401(client: TestClient, username: str, password: str) -> None:
    response = client.post("/api/auth/login", json={"username": username, "password": password})
    assert_unauthorized(response)
    assert "access_token" not in response.text


def test_unknown_user_still_runs_bcrypt(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bytes] = []
    real_checkpw = bcrypt.checkpw

    def counting_checkpw(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting_checkpw)
    response = client.post("/api/auth/login", json={"username": "ghost", "password": "pw"})
    assert response.status_code == 401
    assert len(calls) == 1


def test_me_with_valid_token(client: TestClient) -> None:
    response = client.get("/api/me", headers=auth_header(login(client, "alice")))
    assert response.status_code == 200
    assert response.json() == {"username": "alice", "role": "user"}
    assert response.headers["cache-control"] == "no-store"


def test_me_without_token_is_401_with_challenge(client: TestClient) -> None:
    response = client.get("/api/me")
    assert_unauthorized(response)
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("header", ["Basic YWxpY2U6eA==", "Bearer", "Bearer   ", "Token abc"])
def test_malformed_authorization_header(client: TestClient, header: str) -> None:
    assert_unauthorized(client.get("/api/me", headers={"Authorization": header}))


def test_expired_token_refused(client: TestClient) -> None:
    past = int(time.time()) - 3600
    token = jwt.encode(_claims(iat=past, exp=past + 60), SECRET, algorithm="HS256")
    assert_unauthorized(client.get("/api/me", headers=auth_header(token)))


def test_alg_none_token_refused(client: TestClient) -> None:
    token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}."
    assert_unauthorized(client.get("/api/me", headers=auth_header(token)))


def test_alg_none_admin_claim_refused_on_admin_endpoint(client: TestClient) -> None:
    token = f"{_b64({'alg': 'none'})}.{_b64(_claims(sub='root', role='admin'))}."
    assert_unauthorized(client.get("/api/admin/actions", headers=auth_header(token)))


def test_wrong_key_token_refused(client: TestClient) -> None:
    token = jwt.encode(_claims(), "another-secret-that-is-long-enough-000000", algorithm="HS256")
    assert_unauthorized(client.get("/api/me", headers=auth_header(token)))


def test_other_hmac_algorithm_refused(client: TestClient) -> None:
    token = jwt.encode(_claims(), SECRET * 2, algorithm="HS512")
    assert_unauthorized(client.get("/api/me", headers=auth_header(token)))


@pytest.mark.parametrize("missing", ["sub", "role", "iat", "exp", "jti"])
def test_token_missing_required_claim_refused(client: TestClient, missing: str) -> None:
    claims = _claims()
    del claims[missing]
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    assert_unauthorized(client.get("/api/me", headers=auth_header(token)))


def test_tampered_payload_refused(client: TestClient) -> None:
    header, _, signature = login(client, "alice").split(".")
    forged = _b64(_claims(sub="root", role="admin"))
    token = f"{header}.{forged}.{signature}"
    assert_unauthorized(client.get("/api/admin/actions", headers=auth_header(token)))


def test_role_escalation_in_signed_token_refused(client: TestClient) -> None:
    # Even a correctly signed token must agree with the users file.
    token = jwt.encode(_claims(role="admin"), SECRET, algorithm="HS256")
    assert_unauthorized(client.get("/api/me", headers=auth_header(token)))


def test_token_for_unknown_user_refused(client: TestClient) -> None:
    token = jwt.encode(_claims(sub="mallory"), SECRET, algorithm="HS256")
    assert_unauthorized(client.get("/api/me", headers=auth_header(token)))


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/me"),
        ("GET", "/api/market/status"),
        ("GET", "/api/admin/actions"),
        ("GET", "/api/portfolios/alice"),
        ("GET", "/api/portfolios/alice/main"),
        ("PUT", "/api/portfolios/alice/main"),
        ("POST", "/api/strategy/evaluate"),
    ],
)
def test_every_api_endpoint_requires_token(client: TestClient, method: str, path: str) -> None:
    assert_unauthorized(client.request(method, path, json={}))
