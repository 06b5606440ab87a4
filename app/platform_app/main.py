"""ASGI entry point: ``uvicorn platform_app.main:app``.

Configuration comes from the environment only. On a bad configuration the import
fails with a one-line message on stderr and exit status 78 (EX_CONFIG), which the unit
does not restart (RestartPreventExitStatus=78). A database that cannot be reached at
startup is not a configuration error: exit status 69 (EX_UNAVAILABLE), so systemd tries
again (Restart=on-failure) once PostgreSQL is back.
"""

from __future__ import annotations

import sys

from fastapi import FastAPI

from platform_app.config import ConfigError, load_settings
from platform_app.factory import create_app
from platform_app.limits import LimiterUnavailable
from platform_app.users import UsersFileError

EX_CONFIG = 78
EX_UNAVAILABLE = 69


def build_app() -> FastAPI:
    try:
        return create_app(load_settings())
    except (ConfigError, UsersFileError, LimiterUnavailable) as exc:
        print(f"platform_app: refusing to start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EX_CONFIG) from None
    except ConnectionError as exc:  # database.DatabaseUnavailable (psycopg is optional)
        print(f"platform_app: cannot start now: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EX_UNAVAILABLE) from None


app = build_app()
