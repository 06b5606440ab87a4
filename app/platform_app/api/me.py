"""GET /api/me: who the bearer token belongs to."""

from __future__ import annotations

from fastapi import APIRouter

from platform_app.api.deps import UserDep

router = APIRouter(prefix="/api", tags=["account"])


@router.get("/me")
def me(principal: UserDep) -> dict[str, str]:
    return {"username": principal.username, "role": principal.role}
