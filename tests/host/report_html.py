"""The security page, regenerated from an audit's evidence (evidence.json + policy/claims.yml).

One self-contained HTML file: inline CSS, no script, no font, image or link that would make
a browser fetch anything. It follows the published page's sections and, for each claim,
shows per host PASS / FAIL / SKIP with what was measured, the named exception if the
inventory records one, and at the top the Bandit banner (measured, not typed) and the list
of what the published page says that the evidence contradicts.

    python3 tests/host/report_html.py reports/latest/evidence.json > page.html
"""

from __future__ import annotations

import html
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CLAIMS = Path(__file__).resolve().parents[2] / "policy" / "claims.yml"
STATUS_TEXT = {"pass": "PASS", "fail": "FAIL", "skip": "SKIP"}

CSS = """
:root{--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;--bg:#fff;--soft:#f6f8fa;
--pass:#1a7f37;--pass-bg:#dafbe1;--fail:#cf222e;--fail-bg:#ffebe9;--skip:#7d4e00;--skip-bg:#fff8c5}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;overflow-wrap:anywhere;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:var(--fg);background:var(--bg)}
main{max-width:60rem;margin:0 auto;padding:1rem}
h1{font-size:1.6rem;margin:.5rem 0}
h2{font-size:1.25rem;margin:2rem 0 .75rem;padding-bottom:.25rem;border-bottom:2px solid var(--line)}
h3{font-size:1.05rem;margin:0 0 .25rem}
p,li,dd,dt,td,th,summary,code{overflow-wrap:anywhere;word-break:break-word}
code{font:.85em/1.4 ui-monospace,"DejaVu Sans Mono",monospace;background:var(--soft);padding:0 .2em;border-radius:3px}
.muted{color:var(--muted);font-size:.9rem}
.banner{border:2px solid var(--line);border-radius:8px;padding:.75rem 1rem;margin:1rem 0}
.banner.pass{border-color:var(--pass);background:var(--pass-bg)}
.banner.fail{border-color:var(--fail);background:var(--fail-bg)}
.banner.skip{border-color:var(--skip);background:var(--skip-bg)}
.status{display:inline-block;min-width:3.4em;text-align:center;font-weight:700;font-size:.8rem;
letter-spacing:.04em;padding:.05em .4em;border-radius:4px;margin-right:.4em}
.status.pass{color:var(--pass);background:var(--pass-bg);border:1px solid var(--pass)}
.status.fail{color:var(--fail);background:var(--fail-bg);border:1px solid var(--fail)}
.status.skip{color:var(--skip);background:var(--skip-bg);border:1px solid var(--skip)}
table{border-collapse:collapse;width:100%;table-layout:fixed;font-size:.95rem}
th,td{border:1px solid var(--line);padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:var(--soft)}
.claim{border:1px solid var(--line);border-radius:8px;padding:.75rem 1rem;margin:.75rem 0}
.claim .origin{font-size:.75rem;font-weight:600;color:var(--muted);border:1px solid var(--line);
border-radius:10px;padding:0 .5em;margin-left:.3em;vertical-align:middle}
.says{margin:.25rem 0 .5rem}
.host{border-top:1px dashed var(--line);padding:.5rem 0 .25rem}
.host:first-of-type{border-top:0}
.reason{margin:.2rem 0}
.exception{border-left:4px solid var(--skip);background:var(--skip-bg);padding:.25rem .5rem;margin:.3rem 0}
dl.measured{margin:.25rem 0 0;display:grid;grid-template-columns:minmax(0,12rem) minmax(0,1fr);
gap:.1rem .75rem;font-size:.9rem}
dl.measured dt{color:var(--muted)}
dl.measured dd{margin:0}
.record{margin:.35rem 0 0;padding-left:.5rem;border-left:3px solid var(--soft)}
.note{font-size:.9rem;color:var(--muted);margin:.5rem 0 0}
details{margin:.4rem 0 0;font-size:.9rem}
ul.plain{padding-left:1.2rem}
.contradiction{margin:.5rem 0}
footer{margin:2rem 0 1rem;font-size:.85rem;color:var(--muted)}
@media (max-width:40rem){main{padding:.6rem}dl.measured{grid-template-columns:minmax(0,1fr)}
dl.measured dd{margin-bottom:.3rem}h1{font-size:1.35rem}}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "none"
    return str(value)


def _value(value: Any) -> str:
    """A measured value as compact text: lists joined, mappings as key=value."""
    if isinstance(value, dict):
        return "; ".join(f"{k}={_value(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        if all(not isinstance(v, dict | list) for v in value):
            return ", ".join(_scalar(v) for v in value) or "(none)"
        return " | ".join(_value(v) for v in value)
    return _scalar(value)


SHOWN_RECORDS = 4


def _record(record: dict[str, Any]) -> str:
    items = [(k, v) for k, v in record.items() if k != "check"]
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(_value(v))}</dd>" for k, v in items)
    return (f'<div class="record"><span class="muted">{_e(record.get("check", ""))}</span>'
            f'<dl class="measured">{rows}</dl></div>')


def _measured(records: list[dict[str, Any]]) -> str:
    """The first records in full; the rest one click away (a phone screen stays readable)."""
    shown = "".join(_record(r) for r in records[:SHOWN_RECORDS])
    rest = records[SHOWN_RECORDS:]
    if rest:
        shown += (f'<details class="more"><summary>{len(rest)} more measurements</summary>'
                  f'{"".join(_record(r) for r in rest)}</details>')
    return shown


def _badge(status: str) -> str:
    return f'<span class="status {_e(status)}">{STATUS_TEXT.get(status, status.upper())}</span>'


def _load_claims(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _same(measured: Any, page: Any) -> bool:
    m, p = str(measured), str(page)
    return m == p or m.startswith(p + ".")


def contradictions(evidence: dict[str, Any], policy: dict[str, Any]) -> list[dict[str, Any]]:
    """What the page states (page_values) against what the checks measured, per host."""
    grouped: dict[tuple[str, str, str], dict[str, Any]] = {}
    for section in policy["sections"]:
        for claim in section["claims"]:
            for key, page_value in (claim.get("page_values") or {}).items():
                for host, data in evidence.get("hosts", {}).items():
                    entry = data["claims"].get(claim["id"], {})
                    seen = [r[key] for r in entry.get("measured", []) if key in r]
                    if not seen:
                        continue
                    distinct = sorted({_value(v) for v in seen})
                    if all(_same(v, page_value) for v in distinct):
                        continue
                    slot = grouped.setdefault(
                        (claim["id"], key, " / ".join(distinct)),
                        {"claim": claim, "key": key, "page": page_value, "measured": distinct, "hosts": []},
                    )
                    slot["hosts"].append(host)
    return list(grouped.values())


def _bandit_banner(evidence: dict[str, Any]) -> str:
    rows, statuses = [], []
    for host, data in evidence.get("hosts", {}).items():
        entry = data["claims"].get("audit.bandit")
        if not entry:
            continue
        statuses.append(entry["status"])
        scans = [r for r in entry.get("measured", []) if "lines_scanned" in r]
        if scans:
            s = scans[-1]
            rows.append(
                f"<li><b>{_e(host)}</b>: {_badge(entry['status'])} {_e(s.get('high'))} High, "
                f"{_e(s.get('medium'))} Medium, {_e(s.get('low'))} Low severity issues in "
                f"{_e(s.get('lines_scanned'))} lines of <code>{_e(s.get('scope', 'app code'))}</code> "
                f"(release {_e(s.get('release', '?'))}), Bandit v{_e(s.get('bandit_version'))} on "
                f"{_e(s.get('scan_date'))}</li>"
            )
        else:
            rows.append(f"<li><b>{_e(host)}</b>: {_badge(entry['status'])} not measured: {_e(entry['reason'])}</li>")
    overall = "fail" if "fail" in statuses else "pass" if statuses and set(statuses) == {"pass"} else "skip"
    title = {"pass": "Automated Security Audit Passed", "fail": "Automated Security Audit FAILED",
             "skip": "Automated Security Audit incomplete"}[overall]
    return (f'<section class="banner {overall}" id="bandit"><b>{title}</b> — the app code of the live '
            f"release, fetched from each host and scanned on the controller with the pinned Bandit:"
            f'<ul class="plain">{"".join(rows) or "<li>no host measured</li>"}</ul></section>')


def _summary(evidence: dict[str, Any]) -> str:
    rows = []
    for host, data in evidence.get("hosts", {}).items():
        counts: dict[str, int] = defaultdict(int)
        for claim in data["claims"].values():
            counts[claim["status"]] += 1
        rows.append(f"<tr><th scope=row>{_e(host)}</th><td>{_badge('pass')}{counts['pass']}</td>"
                    f"<td>{_badge('fail')}{counts['fail']}</td><td>{_badge('skip')}{counts['skip']}</td>"
                    f"<td>{_e(data['duration_seconds'])} s</td></tr>")
    return ('<table id="summary"><thead><tr><th>host</th><th>pass</th><th>fail</th><th>skip</th>'
            f'<th>checks took</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def _claim(claim: dict[str, Any], evidence: dict[str, Any]) -> str:
    hosts = []
    for host, data in evidence.get("hosts", {}).items():
        entry = data["claims"].get(claim["id"])
        if entry is None:
            continue
        parts = [f'<div class="host" data-host="{_e(host)}" data-status="{_e(entry["status"])}">'
                 f"{_badge(entry['status'])}<b>{_e(host)}</b>"]
        if entry.get("exception"):
            parts.append(f'<p class="exception"><b>Named exception</b> (inventory): {_e(entry["exception"])}</p>')
        if entry.get("reason"):
            parts.append(f'<p class="reason muted">{_e(entry["reason"])}</p>')
        parts.append(_measured(entry.get("measured", [])))
        if entry.get("checks"):
            items = "".join(f"<li>{_e(c['outcome'])}: <code>{_e(c['check'])}</code> ({_e(c['seconds'])} s)"
                            + (f" — {_e(c['reason'])}" if c.get("reason") else "") + "</li>"
                            for c in entry["checks"])
            parts.append(f'<details><summary>{len(entry["checks"])} checks, {_e(entry.get("when") or "")}'
                         f'</summary><ul class="plain">{items}</ul></details>')
        parts.append("</div>")
        hosts.append("".join(parts))
    note = f'<p class="note"><b>Note:</b> {_e(claim["note"])}</p>' if claim.get("note") else ""
    return (f'<article class="claim" id="claim-{_e(claim["id"])}"><h3>{_e(claim["title"])}'
            f'<span class="origin">{"page" if claim.get("origin") == "page" else "ours"}</span></h3>'
            f'<p class="says">{_e(claim["says"])} <code>{_e(claim["id"])}</code></p>'
            f'{"".join(hosts)}{note}</article>')


def render(evidence: dict[str, Any], claims_file: Path = DEFAULT_CLAIMS) -> str:
    policy = _load_claims(claims_file)
    found = contradictions(evidence, policy)
    by_claim: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in found:
        by_claim[c["claim"]["id"]].append(c)
    contra = "".join(
        f'<li class="contradiction"><b>{_e(items[0]["claim"]["title"])}</b> (<code>{_e(cid)}</code>):<ul>'
        + "".join(f"<li>the page says <b>{_e(c['key'])} = {_e(_value(c['page']))}</b>; measured on "
                  f"{_e(', '.join(c['hosts']))}: <b>{_e(' / '.join(c['measured']))}</b></li>" for c in items)
        + "</ul>"
        + (f'<span class="muted">{_e(items[0]["claim"]["note"])}</span>' if items[0]["claim"].get("note") else "")
        + "</li>"
        for cid, items in by_claim.items()
    ) or "<li>Nothing the page states was contradicted by the evidence of this run.</li>"
    exceptions = "".join(
        f"<li><b>{_e(host)}</b>: <code>{_e(e['claim'])}</code> — {_e(e['reason'])}</li>"
        for host, data in evidence.get("hosts", {}).items() for e in data.get("exceptions", [])
    ) or "<li>None: every claim is required on every host.</li>"
    sections = "".join(
        f'<section id="{_e(s["id"])}"><h2>{_e(s["title"])}</h2>'
        + "".join(_claim(c, evidence) for c in s["claims"]) + "</section>"
        for s in policy["sections"]
    )
    not_run = "".join(
        f"<li><code>{_e(n['check'])}</code> ({_e(', '.join(n['claims']) or 'no claim')}): {_e(n['reason'])}</li>"
        for n in evidence.get("not_run", [])
    )
    unclaimed = "".join(f"<li><code>{_e(c)}</code></li>" for c in evidence.get("unclaimed", []))
    if unclaimed:
        unclaimed = ('<h3>Checks that ran but cite no claim</h3><p class="muted">Not counted for any claim '
                     f'above (tests/unit/test_policy.py wants a claim on each).</p><ul class="plain">{unclaimed}</ul>')
    summary = evidence.get("summary", {})
    tools = ", ".join(f"{k} {v}" for k, v in evidence.get("tools", {}).items() if v)
    failing = summary.get("failing_without_exception", [])
    verdict = (f"{len(failing)} claim failure(s) without an exception: the audit fails."
               if failing else "No claim fails without a named exception.")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>{_e(policy['page']['title'])}: evidence of {_e(evidence.get('finished', ''))}</title>
<style>{CSS}</style></head>
<body><main>
<header><h1>{_e(policy['page']['title'])}</h1>
<p class="muted">Regenerated from evidence: {_e(evidence.get('mode', ''))}, {_e(evidence.get('started', ''))}
to {_e(evidence.get('finished', ''))} ({_e(evidence.get('duration_seconds', ''))} s), inventory
<code>{_e(evidence.get('inventory', ''))}</code>, policy <code>{_e(evidence.get('policy', {}).get('file', ''))}</code>
sha256 <code>{_e(evidence.get('policy', {}).get('sha256', ''))}</code>.</p>
<p id="verdict"><b>{_e(verdict)}</b></p>
{_summary(evidence)}
{_bandit_banner(evidence)}
</header>
<section id="contradictions"><h2>What the published page says that the evidence contradicts</h2>
<ul class="plain">{contra}</ul></section>
<section id="exceptions"><h2>Named exceptions</h2><ul class="plain">{exceptions}</ul></section>
{sections}
<section id="not-run"><h2>Checks this audit did not run</h2>
<p class="muted">They stop services, ban addresses, change settings, run backups or rerun Ansible:
<code>make verify</code> and CI run them on lab hosts.</p>
<ul class="plain">{not_run or "<li>None: every check ran.</li>"}</ul>{unclaimed}</section>
<footer>Tools: {_e(tools)}.</footer>
</main></body></html>
"""


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWPORTS = {"phone": (390, 844), "desktop": (1280, 900)}


def screenshots(page: Path, out_dir: Path) -> list[Path]:
    """screenshot-phone.png and screenshot-desktop.png of the page, taken by Debian's chromium
    through Playwright; [] when either is missing (the report is complete without them)."""
    if not Path(CHROMIUM).exists():
        return []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return []
    shots = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for name, (width, height) in VIEWPORTS.items():
                tab = browser.new_page(viewport={"width": width, "height": height})
                tab.goto(page.resolve().as_uri())
                shots.append(out_dir / f"screenshot-{name}.png")
                tab.screenshot(path=str(shots[-1]))
                tab.close()
        finally:
            browser.close()
    return shots


if __name__ == "__main__":
    sys.stdout.write(render(json.loads(Path(sys.argv[1]).read_text())))
