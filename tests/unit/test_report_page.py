"""The audit's security page (tests/host/report_html.py), rendered from a sample evidence file
and read in a real headless browser (Debian's chromium driven by Playwright) at a phone's
width and a desktop's: what a reader sees, and that the page fetches nothing.

No host needed. Screenshots and the rendered sample are kept in reports/sample/.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "host"))
from report_html import CHROMIUM, CHROMIUM_ARGS, VIEWPORTS, contradictions, render, screenshots  # noqa: E402

from policy import claims  # noqa: E402

OUT = REPO / "reports" / "sample"

# What the sample's hosts measured where the published page states a fact (page_values).
MEASURED = {
    "backup.schedule": {"scheduler": "systemd timer backup.timer", "on_calendar": "*-*-* 03:00:00 UTC"},
    "headers.security": {"x_xss_protection": "0", "site": "www.example.org", "status": 200,
                         "headers": {"X-Frame-Options": "DENY", "Content-Security-Policy":
                                     "default-src 'self'; script-src 'self' https://analytics.example.org; "
                                     "object-src 'none'; frame-ancestors 'none'"}},
    "proxy.app_port_private": {"bind_address": "127.0.0.1", "listening": ["127.0.0.1:8000"]},
    "audit.bandit": {"bandit_version": "1.9.4", "scan_date": "2026-11-29", "lines_scanned": 1005, "high": 0,
                     "medium": 0, "low": 0, "scope": "platform_app (live release)",
                     "release": "/opt/platform/releases/1.0.0", "issues": []},
    "infra.platform": {"os": "Ubuntu 24.04 LTS", "kernel": "6.8.0-90-generic", "python": "3.12.3"},
    "tls.certificate": {"renewal_scheduler": "systemd timer certbot.timer", "expires": "2027-01-29",
                        "certificates": [{"name": "www.example.org", "issuer": "CN=E6,O=Let's Encrypt,C=US",
                                          "days_left": 61}]},
}


def sample_evidence() -> dict:
    """Two hosts, every claim, all three statuses, an exception, long values."""
    hosts = {}
    for h, host in enumerate(("web-1", "web-2")):
        entries = {}
        for i, claim_id in enumerate(claims()):
            status = "fail" if (claim_id == "auth.isolation" and h == 0) else "skip" if i % 9 == 4 else "pass"
            record = {"check": f"test_x.py::test_{claim_id.replace('.', '_')}",
                      **MEASURED.get(claim_id, {"value": i, "long": "x" * 150})}
            entries[claim_id] = {
                "id": claim_id, "status": status,
                "reason": {"fail": "test_x.py::test_y: 403 != 404", "skip": "no audit account 'app_user' in the "
                           "inventory (audit_accounts.app_user: username, password)", "pass": ""}[status],
                "exception": "staging host: no off-site server yet (OPS-12)"
                if claim_id == "backup.offsite_append_only" and h == 1 else None,
                "measured": [record] * (6 if claim_id == "headers.security" else 1),
                "checks": [{"check": record["check"], "outcome": {"pass": "passed", "fail": "failed",
                                                                  "skip": "skipped"}[status],
                            "reason": "", "seconds": 0.4}],
                "when": "2026-11-29T17:44:30+00:00",
            }
        hosts[host] = {"exceptions": [{"claim": "backup.offsite_append_only",
                                       "reason": "staging host: no off-site server yet (OPS-12)"}] if h else [],
                       "duration_seconds": 61.5, "checks": {"passed": 80, "failed": 1, "error": 0, "skipped": 3},
                       "claims": entries}
    return {
        "schema": 1, "mode": "audit (read-only)", "started": "2026-11-29T17:44:11+00:00",
        "finished": "2026-11-29T17:45:27+00:00", "duration_seconds": 76.1, "inventory": "inventory/production",
        "policy": {"file": "policy/claims.yml", "sha256": "ab" * 32, "claims": len(claims())},
        "tools": {"python": "3.11.7", "pytest": "9.2.0", "bandit": "1.9.4"},
        "summary": {"hosts": 2, "pass": 0, "fail": 1, "skip": 0,
                    "failing_without_exception": ["web-1: auth.isolation"]},
        "hosts": hosts,
        "not_run": [{"check": "test_headers.py::test_headers_on_bad_gateway", "claims": ["headers.security"],
                     "reason": "stops each site's upstream service to get a 502"}],
        "unclaimed": [],
    }


def test_contradictions_come_from_the_evidence() -> None:
    found = contradictions(sample_evidence(), yaml.safe_load((REPO / "policy" / "claims.yml").read_text()))
    said = {(c["claim"]["id"], c["key"]): c for c in found}
    assert said[("backup.schedule", "scheduler")]["measured"] == ["systemd timer backup.timer"]
    assert said[("headers.security", "x_xss_protection")]["measured"] == ["0"]
    assert said[("proxy.app_port_private", "bind_address")]["measured"] == ["127.0.0.1"]
    assert said[("audit.bandit", "lines_scanned")]["measured"] == ["1005"]
    assert said[("infra.platform", "python")]["measured"] == ["3.12.3"]
    assert said[("tls.certificate", "expires")]["measured"] == ["2027-01-29"]
    # What the page says and the hosts confirm is not listed.
    assert ("infra.platform", "os") not in said and ("audit.bandit", "high") not in said
    assert said[("backup.schedule", "scheduler")]["hosts"] == ["web-1", "web-2"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (scripts/bootstrap.sh installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def page_file() -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    evidence = sample_evidence()
    (OUT / "evidence.json").write_text(json.dumps(evidence, indent=2))
    path = OUT / "index.html"
    path.write_text(render(evidence))
    return path


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_a_reader_sees_the_page(browser, page_file, viewport) -> None:
    width, height = VIEWPORTS[viewport]
    page = browser.new_page(viewport={"width": width, "height": height})
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    url = page_file.resolve().as_uri()
    page.goto(url)
    page.wait_for_load_state("load")
    try:
        # The page's own sections, in its order, and ours.
        headings = page.locator("h2").all_inner_texts()
        sections = [s["title"] for s in yaml.safe_load((REPO / "policy" / "claims.yml").read_text())["sections"]]
        assert [h for h in headings if h in sections] == sections
        assert any("contradicts" in h for h in headings) and "Named exceptions" in headings
        # Every claim of the policy, for each host, with a visible status.
        for claim_id in claims():
            article = page.locator(f'article[id="claim-{claim_id}"]')
            assert article.count() == 1, claim_id
            assert article.locator(".host").count() == 2, claim_id
        statuses = page.locator("article .host > .status").all_inner_texts()
        assert set(statuses) == {"PASS", "FAIL", "SKIP"}
        assert statuses.count("FAIL") == 1
        failing = page.locator('article[id="claim-auth.isolation"] .host[data-host="web-1"]')
        assert failing.locator(".status").inner_text() == "FAIL"
        assert "403 != 404" in failing.inner_text()
        # The exception is named where the claim is, and in its own section.
        exception = page.locator('article[id="claim-backup.offsite_append_only"] .exception')
        assert "OPS-12" in exception.inner_text() and exception.is_visible()
        assert "OPS-12" in page.locator("#exceptions").inner_text()
        # What the page says that the evidence contradicts.
        contra = page.locator("#contradictions").inner_text()
        for said in ("cron", "1; mode=block", "0.0.0.0", "21923", "3.13"):  # noqa: S104 (page text)
            assert said in contra, said
        # The Bandit banner is measured: version, date, lines.
        banner = page.locator("#bandit").inner_text()
        assert "1.9.4" in banner and "2026-11-29" in banner and "1005 lines" in banner
        assert "audit fails" in page.locator("#verdict").inner_text()
        # Readable at this width: nothing wider than the screen.
        overflow = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert overflow[0] <= overflow[1], f"{viewport}: the page is {overflow[0]}px wide on a {overflow[1]}px screen"
        page.screenshot(path=str(OUT / f"screenshot-{viewport}.png"), full_page=False)
    finally:
        page.close()
    assert not errors, errors
    assert requests == [url], f"the page fetched {[r for r in requests if r != url]}"


def test_the_audit_keeps_screenshots(browser, page_file, tmp_path) -> None:
    """What the audit does after each run (reports/<run>/screenshot-*.png). In a thread of its
    own: Playwright's sync API allows one instance per thread, and `browser` holds this one."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        shots = pool.submit(screenshots, page_file, tmp_path).result(timeout=120)
    assert [s.name for s in shots] == [f"screenshot-{v}.png" for v in VIEWPORTS]
    assert all(s.stat().st_size > 10_000 for s in shots)
