"""POST /api/auth/login: exchange username and password for a bearer token."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field

from platform_app.api.deps import (
    BEARER_CHALLENGE,
    ClientIP,
    ContextDep,
    limiter_unavailable,
    too_many,
)
from platform_app.limits import LimiterUnavailable
from platform_app.users import USERNAME_RE

router = APIRouter(prefix="/api/auth", tags=["auth"])


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=1024)


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - OAuth token type, not a secret
    expires_in: int


# Direct connections to the app's socket carry no client address (only the proxy and root
# can connect): they share one throttle key.
NO_ADDRESS = "local"


@router.post("/login")
def login(body: LoginRequest, context: ContextDep, ip: ClientIP) -> TokenResponse:
    # Record the attempted name only when it looks like a username (never a password).
    attempted = body.username if USERNAME_RE.fullmatch(body.username) else None
    address = ip or NO_ADDRESS
    # Unknown names are throttled like real ones: a 429 reveals nothing about who exists.
    try:
        decision = context.limits.login_attempt(
            body.username, address, context.settings.login_policy
        )
    except LimiterUnavailable:
        raise limiter_unavailable() from None
    if not decision.allowed:
        details = {"retry_after": decision.retry_after}
        context.actions.log("login_throttled", user=attempted, ip=ip, details=details)
        raise too_many(decision, "too many failed logins; try again later")
    user = context.users.authenticate(body.username, body.password)
    if user is None:
        context.actions.log("login_failed", user=attempted, ip=ip)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "invalid credentials", headers=BEARER_CHALLENGE
        )
    try:
        context.limits.login_succeeded(body.username, address)
    except LimiterUnavailable:
        raise limiter_unavailable() from None
    token = context.tokens.issue(user.username, user.role)
    context.actions.log("login", user=user.username, ip=ip, details={"role": user.role})
    return TokenResponse(access_token=token, expires_in=context.tokens.ttl_seconds)
