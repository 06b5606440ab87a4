"""Application factory: wires settings, stores and routers into a FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI

from platform_app import __version__
from platform_app.actionlog import (
    ActionLogger,
    ActionReader,
    ActionSink,
    MonthlyFilesReader,
    make_sink,
)
from platform_app.api import admin, auth, market, me, portfolios, strategy
from platform_app.config import Settings
from platform_app.context import AppContext
from platform_app.limits import LimitStore
from platform_app.middleware import SecurityHeadersMiddleware
from platform_app.portfolios import PortfolioStore
from platform_app.tokens import TokenService
from platform_app.users import UserStore
from platform_app.web import router as web_router


def _reader(settings: Settings, sink: ActionSink) -> ActionReader | None:
    """Where admins read records back: the copier's monthly files when the records go to
    a collector (socket or journal), else the sink itself (a file)."""
    if settings.action_log_read_dir is not None and not sink.readable:
        return MonthlyFilesReader(settings.action_log_read_dir)
    return None


def build_context(settings: Settings, sink: ActionSink | None = None) -> AppContext:
    sink = sink if sink is not None else make_sink(settings.action_log)
    limits_db = settings.limits_db or settings.state_dir / "limits.sqlite3"
    limits = LimitStore(limits_db, failure_window=settings.login_policy.failure_window)
    limits.check()
    return AppContext(
        settings=settings,
        users=UserStore.from_file(settings.users_file, settings.bcrypt_min_cost),
        tokens=TokenService(settings.jwt_secret, settings.jwt_ttl_seconds),
        actions=ActionLogger(sink, _reader(settings, sink)),
        portfolios=PortfolioStore(
            settings.state_dir, settings.portfolio_max_count, settings.portfolio_max_bytes
        ),
        limits=limits,
    )


def create_app(settings: Settings, sink: ActionSink | None = None) -> FastAPI:
    app = FastAPI(
        title="Platform",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.context = build_context(settings, sink)
    app.add_middleware(SecurityHeadersMiddleware)
    app.include_router(web_router)
    for module in (auth, me, market, admin, portfolios, strategy):
        app.include_router(module.router)
    return app
