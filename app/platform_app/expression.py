"""Whitelisting evaluator for arithmetic factor expressions (built on ``ast``; no eval).

Accepted: numbers, the caller's variables, ``+ - * / **``, unary ``+``/``-``,
comparisons (also chained), parentheses and the functions in :data:`FUNCTIONS`.
Everything is computed in floating point, so huge integers can never be built.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable, Mapping

MAX_EXPRESSION_LENGTH = 500
MAX_NODES = 200
MAX_EXPONENT = 100.0
MAX_VARIABLES = 100
VARIABLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")

Number = float | bool


class ExpressionError(ValueError):
    """The expression is not allowed or cannot be evaluated."""


def _log(x: float, base: float = math.e) -> float:
    return math.log(x, base)


FUNCTIONS: dict[str, tuple[Callable[..., float], int, int]] = {
    # name: (function, min args, max args)
    "abs": (abs, 1, 1),
    "min": (min, 1, 32),
    "max": (max, 1, 32),
    "log": (_log, 1, 2),
    "sqrt": (math.sqrt, 1, 1),
    "exp": (math.exp, 1, 1),
}

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}

_COMPARE: dict[type[ast.cmpop], Callable[[float, float], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


def _power(base: float, exponent: float) -> float:
    if abs(exponent) > MAX_EXPONENT:
        raise ExpressionError(f"exponent larger than {MAX_EXPONENT:g}")
    result = base**exponent
    if isinstance(result, complex):
        raise ExpressionError("complex result")
    return result


class _Evaluator:
    def __init__(self, variables: Mapping[str, float]) -> None:
        self.variables = variables

    def number(self, node: ast.expr) -> float:
        result = float(self.value(node))
        if not math.isfinite(result):
            raise ExpressionError("intermediate result is not finite")
        return result

    def value(self, node: ast.expr) -> Number:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise ExpressionError("only numeric literals are allowed")
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id not in self.variables:
                raise ExpressionError(f"unknown variable {node.id!r}")
            return float(self.variables[node.id])
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            operand = self.number(node.operand)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            return self.binary(node)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        raise ExpressionError(f"{type(node).__name__} is not allowed")

    def binary(self, node: ast.BinOp) -> float:
        if isinstance(node.op, ast.Pow):
            return _power(self.number(node.left), self.number(node.right))
        function = _BINARY.get(type(node.op))
        if function is None:
            raise ExpressionError(f"operator {type(node.op).__name__} is not allowed")
        return function(self.number(node.left), self.number(node.right))

    def compare(self, node: ast.Compare) -> bool:
        left = self.number(node.left)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            function = _COMPARE.get(type(op))
            if function is None:
                raise ExpressionError(f"comparison {type(op).__name__} is not allowed")
            right = self.number(comparator)
            if not function(left, right):
                return False
            left = right
        return True

    def call(self, node: ast.Call) -> float:
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            raise ExpressionError("only min, max, abs, log, sqrt and exp may be called")
        if node.keywords or any(isinstance(arg, ast.Starred) for arg in node.args):
            raise ExpressionError("keyword and starred arguments are not allowed")
        function, low, high = FUNCTIONS[node.func.id]
        if not low <= len(node.args) <= high:
            raise ExpressionError(f"{node.func.id} takes {low} to {high} arguments")
        return float(function(*(self.number(arg) for arg in node.args)))


def parse(expression: str) -> ast.Expression:
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_EXPRESSION_LENGTH} characters")
    try:
        tree = ast.parse(expression, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ExpressionError("expression is not valid syntax") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ExpressionError("expression is too complex")
    return tree


def check_variables(variables: Mapping[str, float]) -> None:
    if len(variables) > MAX_VARIABLES:
        raise ExpressionError(f"more than {MAX_VARIABLES} variables")
    for name, value in variables.items():
        if not VARIABLE_RE.fullmatch(name) or name in FUNCTIONS:
            raise ExpressionError(f"invalid variable name {name!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ExpressionError(f"variable {name!r} must be a number")
        try:
            finite = math.isfinite(value)
        except OverflowError:
            finite = False
        if not finite:
            raise ExpressionError(f"variable {name!r} must be finite")


def evaluate(expression: str, variables: Mapping[str, float] | None = None) -> Number:
    """Evaluate ``expression``; raises :class:`ExpressionError` on anything not whitelisted."""
    variables = dict(variables or {})
    check_variables(variables)
    tree = parse(expression)
    try:
        result = _Evaluator(variables).value(tree.body)
    except ZeroDivisionError:
        raise ExpressionError("division by zero") from None
    except (OverflowError, RecursionError):
        raise ExpressionError("numeric overflow") from None
    except ValueError as exc:
        if isinstance(exc, ExpressionError):
            raise
        raise ExpressionError("math domain error") from None
    if not isinstance(result, bool) and not math.isfinite(result):
        raise ExpressionError("result is not finite")
    return result
