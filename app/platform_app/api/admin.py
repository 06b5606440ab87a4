"""GET /api/admin/actions: recent action records (admin only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from platform_app.api.deps import AdminDep, ClientIP, ContextDep

router = APIRouter(prefix="/api/admin", tags=["admin"])

MAX_LIMIT = 1000


@router.get("/actions")
def recent_actions(
    context: ContextDep,
    principal: AdminDep,
    ip: ClientIP,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> dict[str, Any]:
    sink = context.actions.sink
    result: dict[str, Any] = {"actions": sink.tail(limit) if sink.readable else []}
    if not sink.readable:
        result["note"] = "actions go to the systemd journal; they cannot be read back here"
    context.actions.log("admin_view", user=principal.username, ip=ip, details={"limit": limit})
    return result
