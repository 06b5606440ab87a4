"""GET /api/admin/actions: recent action records (admin only)."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status

from platform_app.actionlog import ActionLogUnreadable
from platform_app.api.deps import COMPUTE, AdminDep, ClientIP, ContextDep, spend

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/admin", tags=["admin"])

MAX_LIMIT = 1000


@router.get("/actions")
def recent_actions(
    context: ContextDep,
    principal: AdminDep,
    ip: ClientIP,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> dict[str, Any]:
    # Reading the files costs more than most calls: it counts against the compute budget.
    spend(context, principal, ip, COMPUTE)
    try:
        result: dict[str, Any] = {"actions": context.actions.tail(limit)}
    except ActionLogUnreadable as exc:
        logger.error("action log not readable: %s", exc)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "the action log cannot be read"
        ) from None
    if not context.actions.readable:
        result["note"] = (
            "actions go to a collector (journal or socket) and "
            "PLATFORM_ACTION_LOG_READ_DIR is not set"
        )
    context.actions.log("admin_view", user=principal.username, ip=ip, details={"limit": limit})
    return result
