"""Unauthenticated routes: health check and the HTML landing page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from platform_app import __version__
from platform_app.page import render_index

router = APIRouter(tags=["web"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/", response_class=HTMLResponse)
def index(request: Request) -> HTMLResponse:
    settings = request.app.state.context.settings
    return HTMLResponse(render_index(settings.umami_script_url, settings.umami_website_id))
