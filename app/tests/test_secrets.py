"""Market-data keys are reported as configured but never revealed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import FMP_KEY, POLYGON_KEY, SECRET, auth_header
from fastapi.testclient import TestClient


def test_market_status_reports_configured_providers(
    client: TestClient, tokens: dict[str, str]
) -> None:
    response = client.get("/api/market/status", headers=auth_header(tokens["alice"]))
    assert response.status_code == 200
    assert response.json() == {"providers": {"fmp": True, "polygon": True}}
    assert response.headers["cache-control"] == "no-store"


def test_market_status_without_keys(make_client: Any) -> None:
    client = make_client(FMP_API_KEY=None, POLYGON_API_KEY="")
    token = client.post(
        "/api/auth/login", json={"username": "bob", "password": "bob-pass-2"}
    ).json()["access_token"]
    response = client.get("/api/market/status", headers=auth_header(token))
    assert response.json() == {"providers": {"fmp": False, "polygon": False}}


def test_market_status_requires_auth(client: TestClient) -> None:
    assert client.get("/api/market/status").status_code == 401


def test_keys_and_secret_never_appear_in_any_response_or_log(
    make_client: Any, action_log: Path
) -> None:
    client = make_client(
        UMAMI_SCRIPT_URL="https://analytics.lab.test/script.js", UMAMI_WEBSITE_ID="site"
    )
    bodies: list[str] = []

    def record(response: Any) -> Any:
        bodies.append(response.text)
        bodies.append(str(dict(response.headers)))
        return response

    token = record(
        client.post("/api/auth/login", json={"username": "root", "password": "root-pass-3"})
    ).json()["access_token"]
    headers = auth_header(token)
    record(client.post("/api/auth/login", json={"username": "root", "password": "bad"}))
    for path in ["/", "/healthz", "/api/me", "/api/market/status", "/api/admin/actions",
                 "/api/portfolios/root", "/api/portfolios/root/none", "/api/nope",
                 "/docs", "/openapi.json", "/redoc"]:  # fmt: skip
        record(client.get(path, headers=headers))
        record(client.get(path))
    record(client.put("/api/portfolios/root/p", json={"k": 1}, headers=headers))
    record(client.post("/api/strategy/evaluate", json={"expression": "FMP_API_KEY"},
                       headers=headers))  # fmt: skip
    record(client.post("/api/strategy/evaluate", json={"expression": "x"}, headers=headers))
    everything = "\n".join(bodies) + action_log.read_text()
    for secret in (FMP_KEY, POLYGON_KEY, SECRET):
        assert secret not in everything


def test_settings_repr_hides_secrets(settings: Any) -> None:
    text = repr(settings)
    for secret in (FMP_KEY, POLYGON_KEY, SECRET):
        assert secret not in text
