"""POST /api/strategy/evaluate: evaluate a whitelisted arithmetic factor expression."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field

from platform_app.api.deps import ClientIP, ComputeUserDep, ContextDep
from platform_app.expression import (
    MAX_EXPRESSION_LENGTH,
    MAX_VARIABLES,
    ExpressionError,
    evaluate,
)

router = APIRouter(prefix="/api/strategy", tags=["strategy"])


class EvaluateRequest(BaseModel):
    # The evaluator enforces the real length cap (400); this only bounds the body.
    expression: str = Field(min_length=1, max_length=MAX_EXPRESSION_LENGTH * 20)
    variables: dict[str, float] = Field(default_factory=dict, max_length=MAX_VARIABLES)


class EvaluateResponse(BaseModel):
    result: float | bool


@router.post("/evaluate")
def evaluate_expression(
    body: EvaluateRequest, context: ContextDep, principal: ComputeUserDep, ip: ClientIP
) -> EvaluateResponse:
    try:
        result = evaluate(body.expression, body.variables)
    except ExpressionError as exc:
        context.actions.log(
            "strategy_rejected", user=principal.username, ip=ip, details={"reason": str(exc)}
        )
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    return EvaluateResponse(result=result)
