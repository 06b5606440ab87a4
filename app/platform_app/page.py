"""The small HTML landing page, with the optional Umami tracker."""

from __future__ import annotations

from html import escape

from platform_app import __version__

_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Platform</title>
{tracker}</head>
<body>
<main>
<h1>Platform</h1>
<p>Reference application, version {version}.</p>
<p>API: <code>POST /api/auth/login</code>, then send
<code>Authorization: Bearer &lt;token&gt;</code>.</p>
</main>
</body>
</html>
"""


def tracker_tag(script_url: str | None, website_id: str | None) -> str:
    """The Umami script tag, or an empty string unless both settings are present."""
    if not script_url or not website_id:
        return ""
    return (
        f'<script defer src="{escape(script_url, quote=True)}" '
        f'data-website-id="{escape(website_id, quote=True)}"></script>\n'
    )


def render_index(script_url: str | None, website_id: str | None) -> str:
    return _TEMPLATE.format(
        tracker=tracker_tag(script_url, website_id), version=escape(__version__)
    )
