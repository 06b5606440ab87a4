"""Portfolios: GET/PUT /api/portfolios/{owner}/{name}, GET /api/portfolios/{owner}."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status

from platform_app.api.deps import WRITE, ClientIP, ContextDep, Principal, UserDep, spend
from platform_app.context import AppContext
from platform_app.portfolios import (
    NAME_RE,
    InvalidName,
    PortfolioLimitReached,
    PortfolioNotFound,
    PortfolioTooLarge,
)
from platform_app.users import USERNAME_RE

router = APIRouter(prefix="/api/portfolios", tags=["portfolios"])


def _authorize(
    context: AppContext, principal: Principal, ip: str | None, owner: str, name: str | None, op: str
) -> None:
    """400 for a malformed name, 403 for anyone else's data. Whether the other owner exists
    is never looked up: an existing and a made-up name get the same answer (no enumeration)."""
    if not USERNAME_RE.fullmatch(owner) or (name is not None and not NAME_RE.fullmatch(name)):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "invalid owner or portfolio name")
    if owner != principal.username:
        details: dict[str, Any] = {"owner": owner, "attempted": op}
        if name is not None:
            details["name"] = name
        context.actions.log("access_denied", user=principal.username, ip=ip, details=details)
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only the owner may access this portfolio")


async def _read_json_body(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body too large (at most {limit} bytes)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"body too large (at most {limit} bytes)")
    try:
        return json.loads(body)
    except ValueError:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "body must be JSON") from None


@router.get("/{owner}")
def list_portfolios(
    owner: str, context: ContextDep, principal: UserDep, ip: ClientIP
) -> dict[str, Any]:
    _authorize(context, principal, ip, owner, None, "list")
    names = context.portfolios.list(owner)
    context.actions.log("portfolio_list", user=principal.username, ip=ip, details={"owner": owner})
    return {"owner": owner, "portfolios": names}


@router.get("/{owner}/{name}")
def read_portfolio(
    owner: str, name: str, context: ContextDep, principal: UserDep, ip: ClientIP
) -> Any:
    _authorize(context, principal, ip, owner, name, "read")
    try:
        document = context.portfolios.read(owner, name)
    except InvalidName:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "invalid portfolio path") from None
    except PortfolioNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such portfolio") from None
    details = {"owner": owner, "name": name}
    context.actions.log("portfolio_read", user=principal.username, ip=ip, details=details)
    return document


@router.put("/{owner}/{name}")
async def write_portfolio(
    owner: str,
    name: str,
    request: Request,
    context: ContextDep,
    principal: UserDep,
    ip: ClientIP,
) -> dict[str, Any]:
    _authorize(context, principal, ip, owner, name, "write")
    spend(context, principal, ip, WRITE)
    document = await _read_json_body(request, context.settings.portfolio_max_bytes)
    try:
        size = context.portfolios.write(owner, name, document)
    except InvalidName:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "invalid portfolio path") from None
    except PortfolioTooLarge as exc:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(exc)) from None
    except PortfolioLimitReached as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    details = {"owner": owner, "name": name, "bytes": size}
    context.actions.log("portfolio_write", user=principal.username, ip=ip, details=details)
    return {"owner": owner, "name": name, "bytes": size}


@router.delete("/{owner}/{name}")
def delete_portfolio(
    owner: str, name: str, context: ContextDep, principal: UserDep, ip: ClientIP
) -> dict[str, Any]:
    _authorize(context, principal, ip, owner, name, "delete")
    spend(context, principal, ip, WRITE)
    try:
        context.portfolios.delete(owner, name)
    except InvalidName:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "invalid portfolio path") from None
    except PortfolioNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such portfolio") from None
    details = {"owner": owner, "name": name}
    context.actions.log("portfolio_delete", user=principal.username, ip=ip, details=details)
    return {"owner": owner, "name": name, "deleted": True}
