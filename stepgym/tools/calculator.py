"""A safe arithmetic calculator tool.

Expressions are parsed with :mod:`ast` and evaluated over a whitelist of nodes; nothing
is ever passed to ``eval``. Sizes are bounded before any work is done, so ``9**9**9``
answers with an error in microseconds instead of hanging the process.
"""

from __future__ import annotations

import ast
import math
import re
import operator
from typing import Any

from stepgym.tools.base import ToolOutput

__all__ = ["Calculator", "safe_eval", "CalculatorError", "format_number"]

MAX_EXPR_CHARS = 200
MAX_NODES = 64
MAX_INT_BITS = 256  # about 77 decimal digits
MAX_ABS = 1e77
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


class CalculatorError(ValueError):
    """An expression the calculator refuses; the message is shown to the agent."""


_BIN = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_FUNCS = {"abs": abs, "round": round, "min": min, "max": max, "sqrt": math.sqrt}


def _check(x: Any) -> int | float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise CalculatorError("only numbers are supported")
    if isinstance(x, int):
        if x.bit_length() > MAX_INT_BITS:
            raise CalculatorError("result too large")
    elif not math.isfinite(x) or abs(x) > MAX_ABS:
        raise CalculatorError("result too large or not a finite number")
    return x


def _pow(a: int | float, b: int | float) -> int | float:
    if abs(b) > 1024:
        raise CalculatorError("exponent too large")
    if a not in (0, 1, -1) and abs(b) * math.log2(max(abs(a), 1e-300)) > MAX_INT_BITS:
        raise CalculatorError("result too large")
    if a == 0 and b < 0:
        raise CalculatorError("division by zero")
    r = a**b
    if isinstance(r, complex):
        raise CalculatorError("result is not a real number")
    return r


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant):
        return _check(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        v = _eval(node.operand)
        return _check(-v if isinstance(node.op, ast.USub) else v)
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        a, b = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            return _check(_pow(a, b))
        if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and b == 0:
            raise CalculatorError("division by zero")
        return _check(_BIN[type(node.op)](a, b))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS and not node.keywords:
        args = [_eval(a) for a in node.args]
        try:
            return _check(_FUNCS[node.func.id](*args))
        except (TypeError, ValueError) as exc:
            raise CalculatorError(f"bad arguments to {node.func.id}: {exc}") from None
    raise CalculatorError(
        "unsupported syntax; use numbers, + - * / // % **, parentheses and abs, round, min, max, sqrt"
    )


def safe_eval(expression: str) -> int | float:
    """Evaluate an arithmetic expression safely.

    Raises:
        CalculatorError: for anything that is not bounded arithmetic.

    Example:
        >>> safe_eval("2 * (3 + 4) ** 2")
        98
    """
    if len(expression) > MAX_EXPR_CHARS:
        raise CalculatorError(f"expression longer than {MAX_EXPR_CHARS} characters")
    # "1,000" is a thousands separator; "max(3, 9)" keeps its commas.
    expr = _THOUSANDS_RE.sub("", expression).replace("^", "**").replace("×", "*").strip()
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise CalculatorError("not a valid arithmetic expression") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise CalculatorError("expression too complex")
    return _eval(tree.body)


def format_number(x: int | float) -> str:
    """Numbers as the env prints them: integers exactly, floats to 10 significant digits."""
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    if isinstance(x, float):
        return f"{x:.10g}"
    return str(x)


class Calculator:
    """The ``calculator(expression)`` tool."""

    name = "calculator"
    description = "Evaluate an arithmetic expression (numbers, + - * / // % **, parentheses, abs, round, min, max, sqrt)."
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {"expression": {"type": "string", "description": "e.g. (1990 - 1875) * 2"}},
        "required": ["expression"],
    }

    def __call__(self, expression: str) -> ToolOutput:
        try:
            return ToolOutput(format_number(safe_eval(expression)))
        except CalculatorError as exc:
            return ToolOutput(f"calculator error: {exc}", ok=False)
