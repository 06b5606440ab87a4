"""Shared FastAPI dependencies: context, client IP, bearer-token authentication."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from platform_app.context import AppContext
from platform_app.tokens import InvalidToken

BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}


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


def require_admin(principal: Annotated[Principal, Depends(current_user)]) -> Principal:
    if not principal.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin role required")
    return principal


ContextDep = Annotated[AppContext, Depends(get_context)]
UserDep = Annotated[Principal, Depends(current_user)]
AdminDep = Annotated[Principal, Depends(require_admin)]
ClientIP = Annotated[str | None, Depends(client_ip)]
