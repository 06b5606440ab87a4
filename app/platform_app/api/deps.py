"""Shared FastAPI dependencies: context, client IP, bearer-token authentication."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from platform_app.context import AppContext
from platform_app.limits import Decision, LimiterUnavailable
from platform_app.tokens import InvalidToken

BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}
# Scopes of the per-user limits: compute-intensive calls and writes to disk.
COMPUTE = "compute"
WRITE = "write"


@dataclass(frozen=True)
class Principal:
    username: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def get_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


def client_ip(request: Request) -> str | None:
    """Peer address as uvicorn reports it (X-Forwarded-For only if the proxy is trusted)."""
    return request.client.host if request.client else None


def unauthorized(detail: str = "not authenticated") -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers=BEARER_CHALLENGE)


def current_user(
    request: Request, context: Annotated[AppContext, Depends(get_context)]
) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized()
    try:
        claims = context.tokens.verify(token)
    except InvalidToken:
        raise unauthorized("invalid or expired token") from None
    user = context.users.get(claims.sub)
    if user is None or user.role != claims.role:
        raise unauthorized("invalid or expired token")
    return Principal(username=user.username, role=user.role)


def too_many(decision: Decision, detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        detail,
        headers={"Retry-After": str(decision.retry_after)},
    )


def limiter_unavailable() -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        "rate limiter unavailable",
        headers={"Retry-After": "1"},
    )


def spend(context: AppContext, principal: Principal, ip: str | None, scope: str) -> None:
    """Take one token of the user's budget for ``scope``, or answer 429 with Retry-After."""
    settings = context.settings
    rate = settings.compute_rate if scope == COMPUTE else settings.write_rate
    try:
        decision = context.limits.hit(scope, principal.username, rate)
    except LimiterUnavailable:
        raise limiter_unavailable() from None
    if not decision.allowed:
        details = {"scope": scope, "retry_after": decision.retry_after}
        context.actions.log("rate_limited", user=principal.username, ip=ip, details=details)
        raise too_many(decision, f"too many requests ({scope}: {rate} per user)")


def compute_user(
    request: Request,
    context: Annotated[AppContext, Depends(get_context)],
    principal: Annotated[Principal, Depends(current_user)],
) -> Principal:
    spend(context, principal, client_ip(request), COMPUTE)
    return principal


def require_admin(principal: Annotated[Principal, Depends(current_user)]) -> Principal:
    if not principal.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin role required")
    return principal


ContextDep = Annotated[AppContext, Depends(get_context)]
UserDep = Annotated[Principal, Depends(current_user)]
AdminDep = Annotated[Principal, Depends(require_admin)]
ComputeUserDep = Annotated[Principal, Depends(compute_user)]
ClientIP = Annotated[str | None, Depends(client_ip)]
