"""POST /api/auth/login: exchange username and password for a bearer token."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field

from platform_app.api.deps import BEARER_CHALLENGE, ClientIP, ContextDep
from platform_app.users import USERNAME_RE

router = APIRouter(prefix="/api/auth", tags=["auth"])


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=1024)


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - OAuth token type, not a secret
    expires_in: int


@router.post("/login")
def login(body: LoginRequest, context: ContextDep, ip: ClientIP) -> TokenResponse:
    user = context.users.authenticate(body.username, body.password)
    if user is None:
        # Record the attempted name only when it looks like a username (never a password).
        attempted = body.username if USERNAME_RE.fullmatch(body.username) else None
        context.actions.log("login_failed", user=attempted, ip=ip)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "invalid credentials", headers=BEARER_CHALLENGE
        )
    token = context.tokens.issue(user.username, user.role)
    context.actions.log("login", user=user.username, ip=ip, details={"role": user.role})
    return TokenResponse(access_token=token, expires_in=context.tokens.ttl_seconds)
