"""Health check and HTML landing page (with or without the Umami tracker)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from platform_app import __version__


def test_healthz_needs_no_auth_and_reports_version(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": __version__}
    assert __version__ == "1.2.1"


def test_index_without_tracker(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<title>Platform</title>" in response.text
    assert "<script" not in response.text
    assert "data-website-id" not in response.text


def test_index_with_only_one_umami_setting_has_no_tracker(make_client: Any) -> None:
    only_url = make_client(UMAMI_SCRIPT_URL="https://analytics.lab.test/script.js")
    assert "<script" not in only_url.get("/").text
    only_id = make_client(UMAMI_WEBSITE_ID="abc")
    assert "<script" not in only_id.get("/").text


def test_index_with_tracker(make_client: Any) -> None:
    client = make_client(
        UMAMI_SCRIPT_URL="https://analytics.lab.test/script.js",
        UMAMI_WEBSITE_ID="5f1c1a52-3d1b-4c8e-9a55-0c7d8d1e2f3a",
    )
    html = client.get("/").text
    expected = (
        '<script defer src="https://analytics.lab.test/script.js" '
        'data-website-id="5f1c1a52-3d1b-4c8e-9a55-0c7d8d1e2f3a"></script>'
    )
    assert expected in html
    assert html.count("<script") == 1
    assert html.index(expected) < html.index("</head>")


def test_tracker_attributes_are_escaped(make_client: Any) -> None:
    client = make_client(
        UMAMI_SCRIPT_URL='https://analytics.lab.test/s.js?a=1&b="><script>alert(1)</script>',
        UMAMI_WEBSITE_ID='id"onload="alert(2)',
    )
    html = client.get("/").text
    assert html.count("<script") == 1
    assert "&amp;b=&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'data-website-id="id&quot;onload=&quot;alert(2)"' in html


def test_index_is_not_marked_no_store_but_api_is(client: TestClient) -> None:
    assert "no-store" not in client.get("/").headers.get("cache-control", "")
    assert client.get("/api/nonexistent").headers["cache-control"] == "no-store"
    assert client.get("/").headers["x-content-type-options"] == "nosniff"
