"""GET /api/market/status: which market-data providers have a key (never the keys)."""

from __future__ import annotations

from fastapi import APIRouter

from platform_app.api.deps import ContextDep, UserDep

router = APIRouter(prefix="/api/market", tags=["market"])


@router.get("/status")
def market_status(context: ContextDep, principal: UserDep) -> dict[str, dict[str, bool]]:
    settings = context.settings
    return {
        "providers": {
            "fmp": settings.fmp_api_key is not None,
            "polygon": settings.polygon_api_key is not None,
        }
    }
