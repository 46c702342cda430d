"""Countdown-v0: reach the target number from the given numbers with + - * / and brackets.

Each instance is generated from a random expression over the drawn numbers, so it is always
solvable. A submitted expression is checked by a small recursive-descent parser (never
``eval``): only numbers, ``+ - * /``, brackets and spaces are accepted, each given number may
be used at most once (exactly once with ``use_all=True``), and arithmetic is exact
(fractions, no floating point).

Example:
    >>> import gymnasium as gym, stepgym
    >>> env = gym.make("stepgym/Countdown-v0")
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(env.unwrapped.expert_action())
    >>> reward, info["success"]
    (1.0, True)
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any, ClassVar

from stepgym.core import StepEnv, StepResult, quote_action
from stepgym.envs._answer import extract_answer
from stepgym.errors import InvalidConfig

__all__ = ["CountdownEnv", "evaluate_expression", "solve_countdown", "ExpressionError"]

_TOKENS = re.compile(r"\d+|\S")
_OPS = {
    "+": "+", "-": "-", "*": "*", "/": "/", "(": "(", ")": ")",
    # what models and people also write for these operators
    "×": "*", "x": "*", "X": "*", "÷": "/", "−": "-", "–": "-",
}
_MAX_TOKENS = 200
_MAX_DEPTH = 30


class ExpressionError(ValueError):
    """A submitted expression that is not a valid arithmetic expression over the numbers."""


def _apply(op: str, a: int | Fraction, b: int | Fraction) -> int | Fraction:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        raise ExpressionError("division by zero")
    if type(a) is int and type(b) is int and a % b == 0:
        return a // b
    return Fraction(a) / b


_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


def evaluate_expression(text: str) -> tuple[int | Fraction, list[int]]:
    """Safely evaluate an arithmetic expression; return its exact value and the numbers it uses.

    Accepts non-negative integers, ``+ - * /`` (also ``× ÷ x −``), brackets and spaces; a
    trailing ``= N`` is ignored. Raises :class:`ExpressionError` on anything else. One
    shunting-yard pass over the tokens: no recursion, so nesting depth cannot blow the stack.

    Example:
        >>> evaluate_expression("(25 - 5) * 4 / 8 = 10")
        (10, [25, 5, 4, 8])
        >>> evaluate_expression("3 / 2")
        (Fraction(3, 2), [3, 2])
    """
    if "=" in text:
        text = text.split("=", 1)[0]
    tokens = _TOKENS.findall(text)
    if not tokens:
        raise ExpressionError("the expression is empty")
    if len(tokens) > _MAX_TOKENS:
        raise ExpressionError(f"the expression has more than {_MAX_TOKENS} tokens")
    values: list[int | Fraction] = []
    ops: list[str] = []
    used: list[int] = []
    expect_operand = True
    prec = _PREC
    for tok in tokens:
        if expect_operand:
            if tok.isdigit():
                if not tok.isascii() or len(tok) > 9:
                    raise ExpressionError(f"{tok[:12]!r} is not one of the given numbers")
                v = int(tok)
                values.append(v)
                used.append(v)
                expect_operand = False
            elif tok == "(":
                ops.append(tok)
                if len(ops) > _MAX_DEPTH:
                    raise ExpressionError("brackets nested too deeply")
            elif _OPS.get(tok) in ("+", "-"):
                raise ExpressionError("signs before numbers are not allowed; use only the given numbers")
            elif tok in _OPS:
                raise ExpressionError(f"unexpected {tok!r}")
            else:
                raise ExpressionError(f"unexpected character {tok!r}; use digits, + - * / and brackets")
            continue
        if tok == ")":
            while ops and ops[-1] != "(":
                b = values.pop()
                values.append(_apply(ops.pop(), values.pop(), b))
            if not ops:
                raise ExpressionError("a ')' has no matching '('")
            ops.pop()
            continue
        op = _OPS.get(tok)
        if op == "(" or tok.isdigit():
            raise ExpressionError(f"unexpected {tok[:12]!r} after a number; put an operator between them")
        if op is None:
            raise ExpressionError(f"unexpected character {tok!r}; use digits, + - * / and brackets")
        p = prec[op]
        while ops and ops[-1] != "(" and prec[ops[-1]] >= p:
            b = values.pop()
            values.append(_apply(ops.pop(), values.pop(), b))
        ops.append(op)
        expect_operand = True
    if expect_operand:
        raise ExpressionError("the expression ends too early")
    while ops:
        op = ops.pop()
        if op == "(":
            raise ExpressionError("a '(' is not closed")
        b = values.pop()
        values.append(_apply(op, values.pop(), b))
    return values[0], used


def solve_countdown(numbers: list[int], target: int, use_all: bool = False) -> str | None:
    """An expression over ``numbers`` (each at most once) equal to ``target``, or ``None``.

    Depth-first search over pairs of the remaining values with exact arithmetic, memoised on
    the sorted multiset of values.

    Example:
        >>> expr = solve_countdown([3, 7, 25, 50], 182)
        >>> evaluate_expression(expr)[0]
        182
    """
    seen: set[tuple[Any, ...]] = set()

    def search(items: list[tuple[Fraction, str]]) -> str | None:
        if not use_all:
            for v, e in items:
                if v == target:
                    return e
        elif len(items) == 1:
            return items[0][1] if items[0][0] == target else None
        if len(items) < 2:
            return None
        key = tuple(sorted(v for v, _ in items))
        if key in seen:
            return None
        seen.add(key)
        for i in range(len(items)):
            for j in range(len(items)):
                if i == j:
                    continue
                (a, ea), (b, eb) = items[i], items[j]
                rest = [items[k] for k in range(len(items)) if k != i and k != j]
                cands = []
                if i < j:
                    cands.append((a + b, f"({ea} + {eb})"))
                    cands.append((a * b, f"{_wrap(ea)} * {_wrap(eb)}"))
                if a > b:
                    cands.append((a - b, f"({ea} - {eb})"))
                if b != 0 and a != 0 and b != 1:
                    cands.append((a / b, f"{_wrap(ea)} / {_wrap(eb)}"))
                for v, e in cands:
                    found = search([*rest, (v, e)])
                    if found is not None:
                        return found
        return None

    found = search([(Fraction(x), str(x)) for x in numbers])
    if found is not None and found.startswith("(") and found.endswith(")") and _balanced_inside(found):
        found = found[1:-1]
    return found


def _wrap(e: str) -> str:
    return e if e.isdigit() or (e.startswith("(") and _balanced_inside(e) and e.endswith(")")) else f"({e})"


def _balanced_inside(e: str) -> bool:
    """True when the first '(' of ``e`` closes at its last character."""
    depth = 0
    for i, ch in enumerate(e):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
            return i == len(e) - 1
    return False


class CountdownEnv(StepEnv):
    """Combine the given numbers with + - * / and brackets to hit the target exactly.

    Args:
        num_numbers: how many numbers are given (2 to 6, default 4).
        max_number: numbers are drawn from 1..max_number (default 100).
        max_target: targets lie in 1..max_target (default 1000).
        use_all: every number must be used exactly once (default False: at most once).
        max_steps: attempts before the episode is truncated (default 4).

    ``reset(options={"numbers": [...], "target": N})`` plays a given instance.

    Example:
        >>> import gymnasium as gym, stepgym
        >>> env = gym.make("stepgym/Countdown-v0")
        >>> obs, info = env.reset(options={"numbers": [3, 7, 25, 50], "target": 181})
        >>> obs, reward, terminated, truncated, info = env.step("<answer>7 * 25 + 3 * 2</answer>")
        >>> info["action_valid"], info["value"]
        (False, None)
    """

    description: ClassVar[str] = "Reach the target from given numbers with + - * /; the expression is verified"
    default_max_steps: ClassVar[int] = 4

    def __init__(
        self, num_numbers: int = 4, max_number: int = 100, max_target: int = 1000, use_all: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        for name, value, lo, hi in (
            ("num_numbers", num_numbers, 2, 6),
            ("max_number", max_number, 2, 10_000),
            ("max_target", max_target, 1, 10**7),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise InvalidConfig(name, value, f"an int from {lo} to {hi}")
        self.num_numbers, self.max_number, self.max_target = num_numbers, max_number, max_target
        self.use_all = bool(use_all)
        self.numbers: list[int] = []
        self.target = 0
        self._solution: str | None = None
        self._task = ""

    def _generate(self) -> None:
        rng = self.np_random
        k = self.num_numbers
        for _attempt in range(10_000):
            nums = (rng.integers(1, self.max_number + 1, size=k)).tolist()
            u = rng.random(4 * k).tolist()
            pool: list[tuple[int, str]] = [(x, str(x)) for x in nums]
            ui = 0
            while len(pool) > 1:
                i = int(u[ui] * len(pool))
                a = pool.pop(i)
                j = int(u[ui + 1] * len(pool))
                b = pool.pop(j)
                op = int(u[ui + 2] * 4)
                ui += 3
                if op == 2 and a[0] * b[0] > self.max_target * self.max_number:
                    op = 0  # keep intermediate values in a human range
                if op == 3 and (b[0] == 0 or a[0] % b[0] or b[0] == 1):
                    op = 1 if a[0] != b[0] else 0
                if op == 1 and a[0] <= b[0]:
                    a, b = b, a
                    if a[0] == b[0]:
                        op = 0
                if op == 0:
                    pool.append((a[0] + b[0], f"({a[1]} + {b[1]})"))
                elif op == 1:
                    pool.append((a[0] - b[0], f"({a[1]} - {b[1]})"))
                elif op == 2:
                    pool.append((a[0] * b[0], f"{_wrap(a[1])} * {_wrap(b[1])}"))
                else:
                    pool.append((a[0] // b[0], f"{_wrap(a[1])} / {_wrap(b[1])}"))
            value, expr = pool[0]
            if 1 <= value <= self.max_target and value not in nums:
                break
        else:
            raise InvalidConfig(
                "max_target", self.max_target, "a range that admits targets (raise max_target or max_number)"
            )
        if expr.startswith("(") and expr.endswith(")") and _balanced_inside(expr):
            expr = expr[1:-1]
        self.numbers, self.target, self._solution = nums, value, expr

    def _reset(self, options: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        opts = options or {}
        if "numbers" in opts or "target" in opts:
            nums, target = opts.get("numbers"), opts.get("target")
            if (
                not isinstance(nums, (list, tuple))
                or not nums
                or not all(isinstance(x, int) and x >= 0 for x in nums)
                or not isinstance(target, int)
            ):
                raise InvalidConfig("options", opts, "{'numbers': [non-negative ints], 'target': int}")
            self.numbers, self.target, self._solution = list(nums), target, None
        else:
            self._generate()
        rule = "every number exactly once" if self.use_all else "each number at most once"
        nums = ", ".join(map(str, self.numbers))
        self._task = f"Numbers: {nums}. Target: {self.target}."
        obs = (
            "Countdown. Write an arithmetic expression that equals the target, using the given numbers "
            f"({rule}), + - * / and brackets. Division may give fractions; the final value must equal the "
            f"target exactly. Answer with the expression, e.g. 25 * 4 + 3 or <answer>25 * 4 + 3</answer>.\n"
            f"{self._task}"
        )
        return obs, {"target": self.target, "numbers": list(self.numbers)}

    def _step(self, action: str) -> StepResult:
        text = extract_answer(action)
        try:
            value, used = evaluate_expression(text)
        except ExpressionError as exc:
            return self._invalid(action, str(exc))
        # Each given number at most once: remove used numbers from a copy of the pool
        # (lists of 2-6 numbers: cheaper than Counter arithmetic).
        pool = list(self.numbers)
        missing = []
        for v in used:
            try:
                pool.remove(v)
            except ValueError:
                missing.append(v)
        if missing:
            missing.sort()
            msg = (
                f"{', '.join(map(str, missing))} "
                + ("is" if len(missing) == 1 else "are")
                + " not available (the given numbers can be used once each)"
            )
            return self._invalid(action, msg)
        if self.use_all and pool:
            return self._invalid(action, f"every number must be used; missing {', '.join(map(str, sorted(pool)))}")
        shown = str(value) if isinstance(value, int) or value.denominator == 1 else f"{value} (= {float(value):.4g})"
        info = {"value": shown}
        if value == self.target:
            return StepResult(f"Correct: {text} = {self.target}.", 1.0, True, True, info=info)
        return StepResult(
            f"{text} = {shown}, not {self.target}. Try again. {self._task}",
            info=info,
        )

    def _invalid(self, action: str, why: str) -> StepResult:
        return StepResult(
            observation=f"Invalid expression {quote_action(action)}: {why}. {self._task}",
            action_valid=False,
            error=why,
            info={"value": None},
        )

    def _on_truncate(self) -> dict[str, Any]:
        return {"solution": self.expert_action()}

    def expert_action(self) -> str:
        """A correct expression: the generating one, else a solver's."""
        if self._solution is None:
            self._solution = solve_countdown(self.numbers, self.target, self.use_all) or " + ".join(
                map(str, self.numbers)
            )
        return self._solution
