"""Everything a request handler needs, built once per application."""

from __future__ import annotations

from dataclasses import dataclass

from platform_app.actionlog import ActionLogger
from platform_app.config import Settings
from platform_app.limits import Limits
from platform_app.portfolios import Portfolios
from platform_app.tokens import TokenService
from platform_app.users import UserStore


@dataclass(frozen=True)
class AppContext:
    settings: Settings
    users: UserStore
    tokens: TokenService
    actions: ActionLogger
    portfolios: Portfolios  # files, or PostgreSQL (PLATFORM_DATABASE_URL)
    limits: Limits  # SQLite, or PostgreSQL

    def close(self) -> None:
        """Release the stores' connections (at shutdown)."""
        self.limits.close()
        self.portfolios.close()
