"""The whitelisting strategy-expression evaluator and its endpoint."""

from __future__ import annotations

import math

import pytest
from conftest import auth_header
from fastapi.testclient import TestClient

from platform_app.expression import MAX_EXPRESSION_LENGTH, ExpressionError, evaluate

VARS = {"pe": 12.5, "roe": 0.18, "momentum": -0.04, "price": 100}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2 * 3", 7.0),
        ("(1 + 2) * 3", 9.0),
        ("2 ** 10", 1024.0),
        ("-pe + 2", -10.5),
        ("+roe", 0.18),
        ("roe / pe", 0.18 / 12.5),
        ("max(roe, momentum, 0)", 0.18),
        ("min(1, 2)", 1.0),
        ("abs(momentum)", 0.04),
        ("log(price, 10)", 2.0),
        ("log(1)", 0.0),
        ("sqrt(16) + exp(0)", 5.0),
        ("pe < 15", True),
        ("0 < roe <= 0.2", True),
        ("pe == 12.5", True),
        ("pe != 12.5", False),
        ("(pe < 15) * 2", 2.0),
    ],
)
def test_valid_expressions(expression: str, expected: float | bool) -> None:
    result = evaluate(expression, VARS)
    if isinstance(expected, bool):
        assert result is expected
    else:
        assert math.isclose(result, expected, rel_tol=1e-12, abs_tol=1e-12)


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os')",
        "__import__('os').system('id')",
        "pe.__class__",
        "(1).__class__.__bases__",
        "().__class__.__base__.__subclasses__()",
        "lambda: 1",
        "(lambda x: x)(1)",
        "[x for x in (1, 2)]",
        "{'a': 1}",
        "'string'",
        "b'bytes'",
        "True",
        "None",
        "1j",
        "eval('1')",
        "exec('1')",
        "open('/etc/passwd')",
        "getattr(pe, 'real')",
        "globals()",
        "pe if roe else 1",
        "pe and roe",
        "not pe",
        "pe[0]",
        "pe % 2",
        "pe // 2",
        "pe << 2",
        "pe | 1",
        "~1",
        "pe in (1, 2)",
        "pe is pe",
        "x := 1",
        "(x := 1)",
        "max(*[1, 2])",
        "max(pe, key=abs)",
        "f'{pe}'",
        "unknown_var + 1",
        "1 +",
        "import os",
        "pe; 1",
        "",
    ],
)
def test_forbidden_expressions(expression: str) -> None:
    with pytest.raises(ExpressionError):
        evaluate(expression, VARS)


@pytest.mark.parametrize(
    "expression",
    ["2 ** 101", "10 ** 1000", "9 ** 9 ** 9", "2 ** -1000", "1e308 * 10", "exp(1000)",
     "(10 ** 100) ** 100", "1" + "0" * 400, "1e999"],
)  # fmt: skip
def test_huge_numbers_are_refused(expression: str) -> None:
    with pytest.raises(ExpressionError):
        evaluate(expression)


@pytest.mark.parametrize("expression", ["1 / 0", "log(0)", "sqrt(-1)", "(-8) ** 0.5", "0 ** -1"])
def test_math_errors_are_expression_errors(expression: str) -> None:
    with pytest.raises(ExpressionError):
        evaluate(expression)


def test_length_and_complexity_caps() -> None:
    with pytest.raises(ExpressionError, match="longer than"):
        evaluate("1+" * MAX_EXPRESSION_LENGTH + "1")
    with pytest.raises(ExpressionError):
        evaluate("-" * 300 + "1")
    with pytest.raises(ExpressionError, match="complex"):
        evaluate("+".join(["1"] * 150))


@pytest.mark.parametrize(
    "variables",
    [{"__class__": 1.0}, {"_x": 1.0}, {"max": 1.0}, {"a-b": 1.0}, {"x": float("nan")},
     {"x": float("inf")}, {"x": True}, {"x": "1"}],
)  # fmt: skip
def test_bad_variables(variables: dict[str, object]) -> None:
    with pytest.raises(ExpressionError):
        evaluate("1", variables)  # type: ignore[arg-type]


def test_endpoint_evaluates(client: TestClient, tokens: dict[str, str]) -> None:
    response = client.post(
        "/api/strategy/evaluate",
        json={"expression": "roe * 100 - pe", "variables": {"roe": 0.2, "pe": 10}},
        headers=auth_header(tokens["alice"]),
    )
    assert response.status_code == 200
    assert response.json() == {"result": 10.0}
    assert response.headers["cache-control"] == "no-store"
    comparison = client.post(
        "/api/strategy/evaluate",
        json={"expression": "pe < 15", "variables": {"pe": 10}},
        headers=auth_header(tokens["alice"]),
    )
    assert comparison.json() == {"result": True}


@pytest.mark.parametrize(
    "expression",
    ["__import__('os')", "pe.__class__", "lambda: 1", "2 ** 1000000", "x" * 1000, "open('x')"],
)
def test_endpoint_rejects_with_400(
    client: TestClient, tokens: dict[str, str], expression: str
) -> None:
    response = client.post(
        "/api/strategy/evaluate",
        json={"expression": expression, "variables": {"pe": 1}},
        headers=auth_header(tokens["alice"]),
    )
    assert response.status_code == 400
    assert "detail" in response.json()
