"""Application factory: wires settings, stores and routers into a FastAPI app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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
from platform_app.limits import Limits, LimitStore
from platform_app.middleware import SecurityHeadersMiddleware
from platform_app.portfolios import Portfolios, PortfolioStore
from platform_app.tokens import TokenService
from platform_app.users import UserStore
from platform_app.web import router as web_router


def _reader(settings: Settings, sink: ActionSink) -> ActionReader | None:
    """Where admins read records back: the copier's monthly files when the records go to
    a collector (socket or journal), else the sink itself (a file)."""
    if settings.action_log_read_dir is not None and not sink.readable:
        return MonthlyFilesReader(settings.action_log_read_dir)
    return None


def _stores(settings: Settings) -> tuple[Portfolios, Limits]:
    """Files and SQLite on this host, or the app's PostgreSQL database when one is
    configured (several app hosts: one set of portfolios and limits for all of them)."""
    if settings.database_url is None:
        limits_db = settings.limits_db or settings.state_dir / "limits.sqlite3"
        limits = LimitStore(limits_db, failure_window=settings.login_policy.failure_window)
        limits.check()
        portfolios = PortfolioStore(
            settings.state_dir, settings.portfolio_max_count, settings.portfolio_max_bytes
        )
        return portfolios, limits
    # Imported only here: psycopg needs libpq, which a host without a database may lack.
    from platform_app.database import Database
    from platform_app.limits_pg import PgLimitStore
    from platform_app.portfolios_pg import PgPortfolioStore

    database = Database(settings.database_url, settings.database_password)
    database.create_schema(wait=settings.database_startup_wait)
    return (
        PgPortfolioStore(database, settings.portfolio_max_count, settings.portfolio_max_bytes),
        PgLimitStore(database, failure_window=settings.login_policy.failure_window),
    )


def build_context(settings: Settings, sink: ActionSink | None = None) -> AppContext:
    sink = sink if sink is not None else make_sink(settings.action_log)
    portfolios, limits = _stores(settings)
    return AppContext(
        settings=settings,
        users=UserStore.from_file(settings.users_file, settings.bcrypt_min_cost),
        tokens=TokenService(settings.jwt_secret, settings.jwt_ttl_seconds),
        actions=ActionLogger(sink, _reader(settings, sink)),
        portfolios=portfolios,
        limits=limits,
    )


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    app.state.context.close()  # the database's connections end cleanly at shutdown


def create_app(settings: Settings, sink: ActionSink | None = None) -> FastAPI:
    app = FastAPI(
        title="Platform",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=_lifespan,
    )
    app.state.context = build_context(settings, sink)
    app.add_middleware(SecurityHeadersMiddleware)
    app.include_router(web_router)
    for module in (auth, me, market, admin, portfolios, strategy):
        app.include_router(module.router)
    return app
