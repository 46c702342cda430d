"""A safe arithmetic calculator tool.

Expressions are tokenised and parsed by a small recursive-descent parser that knows only
numbers, arithmetic operators, parentheses and a few functions; nothing is ever passed to
``eval``. Sizes are bounded before any work is done, so ``9**9**9``
answers with an error in microseconds instead of hanging the process.
"""

from __future__ import annotations

import math
import re
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


_FUNCS = {"abs": abs, "round": round, "min": min, "max": max, "sqrt": math.sqrt}


def _check(x: int | float) -> int | float:
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


_TOKEN_RE = re.compile(r"\s*(?:(\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|(\*\*|//|[-+*/%(),])|([A-Za-z_]\w*))")
_UNSUPPORTED = "unsupported syntax; use numbers, + - * / // % **, parentheses and abs, round, min, max, sqrt"
_MAX_DEPTH = 32


class _Parser:
    """Recursive descent over a token list; Python's precedence (``-2**2 == -4``, ``**`` right-associative)."""

    __slots__ = ("toks", "i", "depth")

    def __init__(self, toks: list[tuple[str, str]]):
        self.toks = toks
        self.i = 0
        self.depth = 0

    def peek(self) -> str | None:
        return self.toks[self.i][1] if self.i < len(self.toks) else None

    def expr(self) -> int | float:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise CalculatorError("expression nested too deeply")
        v = self.term()
        while (op := self.peek()) in ("+", "-"):
            self.i += 1
            w = self.term()
            v = _check(v + w if op == "+" else v - w)
        self.depth -= 1
        return v

    def term(self) -> int | float:
        v = self.unary()
        while (op := self.peek()) in ("*", "/", "//", "%"):
            self.i += 1
            w = self.unary()
            if op == "*":
                v = _check(v * w)
            elif w == 0:
                raise CalculatorError("division by zero")
            else:
                v = _check(v / w if op == "/" else v // w if op == "//" else v % w)
        return v

    def unary(self) -> int | float:
        op = self.peek()
        if op in ("+", "-"):
            self.i += 1
            self.depth += 1
            if self.depth > _MAX_DEPTH:
                raise CalculatorError("expression nested too deeply")
            v = self.unary()
            self.depth -= 1
            return -v if op == "-" else v
        return self.power()

    def power(self) -> int | float:
        v = self.atom()
        if self.peek() == "**":
            self.i += 1
            v = _check(_pow(v, self.unary()))
        return v

    def atom(self) -> int | float:
        if self.i >= len(self.toks):
            raise CalculatorError("the expression ends too early")
        kind, tok = self.toks[self.i]
        self.i += 1
        if kind == "num":
            return _check(float(tok) if ("." in tok or "e" in tok or "E" in tok) else int(tok))
        if tok == "(":
            v = self.expr()
            self.expect(")")
            return v
        if kind == "name":
            fn = _FUNCS.get(tok)
            if fn is None:
                raise CalculatorError(f"unknown name {tok[:20]!r}; {_UNSUPPORTED}")
            self.expect("(")
            args = [self.expr()]
            while self.peek() == ",":
                self.i += 1
                args.append(self.expr())
            self.expect(")")
            try:
                return _check(fn(*args))
            except (TypeError, ValueError) as exc:
                raise CalculatorError(f"bad arguments to {tok}: {exc}") from None
        raise CalculatorError(_UNSUPPORTED)

    def expect(self, tok: str) -> None:
        if self.peek() != tok:
            raise CalculatorError(f"expected {tok!r}; {_UNSUPPORTED}")
        self.i += 1


def safe_eval(expression: str) -> int | float:
    """Evaluate an arithmetic expression safely (a small parser; never ``eval``).

    Raises:
        CalculatorError: for anything that is not bounded arithmetic.

    Example:
        >>> safe_eval("2 * (3 + 4) ** 2")
        98
    """
    if len(expression) > MAX_EXPR_CHARS:
        raise CalculatorError(f"expression longer than {MAX_EXPR_CHARS} characters")
    # "1,000" is a thousands separator; "max(3, 9)" keeps its commas.
    expr = _THOUSANDS_RE.sub("", expression) if "," in expression else expression
    if "^" in expr or "×" in expr:
        expr = expr.replace("^", "**").replace("×", "*")
    expr = expr.strip()
    toks: list[tuple[str, str]] = []
    pos = 0
    for m in _TOKEN_RE.finditer(expr):
        if m.start() != pos:
            break
        pos = m.end()
        num, op, name = m.groups()
        toks.append(("num", num) if num else ("op", op) if op else ("name", name))
    if pos != len(expr.rstrip()) or not toks:
        raise CalculatorError("not a valid arithmetic expression" if toks or not expr else "empty expression")
    if len(toks) > MAX_NODES:
        raise CalculatorError("expression too complex")
    parser = _Parser(toks)
    value = parser.expr()
    if parser.i != len(toks):
        raise CalculatorError(_UNSUPPORTED)
    return value


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
