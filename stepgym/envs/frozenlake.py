"""FrozenLake-v0: walk across a frozen lake to the goal without falling into a hole.

The text version of Gymnasium's FrozenLake: a random map is generated per seed (always
with a safe path from start to goal), and ``slippery=True`` makes each move go the intended
way with probability 1/3 and to either perpendicular side with 1/3 each, as in Gymnasium.

The expert acts by finite-horizon value iteration over the remaining steps, so it maximises
the probability of reaching the goal before the step limit (100% when not slippery).

Example:
    >>> import gymnasium as gym, stepgym
    >>> env = gym.make("stepgym/FrozenLake-v0", size=4)
    >>> obs, info = env.reset(seed=0)
    >>> done = False
    >>> while not done:
    ...     obs, reward, terminated, truncated, info = env.step(env.unwrapped.expert_action())
    ...     done = terminated or truncated
    >>> info["success"]
    True
"""

from __future__ import annotations

from collections import deque
from typing import Any, ClassVar

from stepgym.core import StepEnv, StepResult, quote_action
from stepgym.envs._answer import normalize_command
from stepgym.errors import InvalidConfig

__all__ = ["FrozenLakeEnv", "generate_map", "optimal_values"]

# Gymnasium's action order: 0 left, 1 down, 2 right, 3 up.
ACTIONS = ("left", "down", "right", "up")
_ALIASES: dict[str, int] = {}
for _i, _name in enumerate(ACTIONS):
    for _form in (_name, _name[0], f"move {_name}", f"go {_name}", f"walk {_name}"):
        _ALIASES[_form] = _i
for _form, _i in (("west", 0), ("south", 1), ("east", 2), ("north", 3)):
    _ALIASES[_form] = _i
    _ALIASES[f"go {_form}"] = _i
    _ALIASES[f"move {_form}"] = _i


def generate_map(size: int, hole_prob: float, rng: Any) -> list[str]:
    """A random ``size`` x ``size`` map (rows of ``S``/``F``/``H``/``G``) with a safe path.

    Start top-left, goal bottom-right, each other cell a hole with ``hole_prob``; redrawn
    until the goal is reachable (as Gymnasium's ``generate_random_map`` does).

    Example:
        >>> import numpy as np
        >>> rows = generate_map(4, 0.2, np.random.default_rng(0))
        >>> rows[0][0], rows[-1][-1], len(rows)
        ('S', 'G', 4)
    """
    n = size * size
    while True:
        holes = (rng.random(n) < hole_prob).tolist()
        holes[0] = holes[n - 1] = False
        seen = {0}
        queue = deque((0,))
        while queue:
            x = queue.popleft()
            r, c = divmod(x, size)
            for y, ok in ((x - 1, c > 0), (x + 1, c < size - 1), (x - size, r > 0), (x + size, r < size - 1)):
                if ok and y not in seen and not holes[y]:
                    seen.add(y)
                    queue.append(y)
        if n - 1 in seen:
            break
    cells = ["H" if h else "F" for h in holes]
    cells[0], cells[n - 1] = "S", "G"
    return ["".join(cells[r * size : (r + 1) * size]) for r in range(size)]


_GAMMA = 1.0 - 1e-7


def _move(x: int, a: int, size: int) -> int:
    r, c = divmod(x, size)
    if a == 0:
        c = max(c - 1, 0)
    elif a == 1:
        r = min(r + 1, size - 1)
    elif a == 2:
        c = min(c + 1, size - 1)
    else:
        r = max(r - 1, 0)
    return r * size + c


def optimal_values(rows: list[str], slippery: bool, horizon: int) -> list[list[list[float]]]:
    """Finite-horizon Q-values: ``q[t][s][a]`` ~ best success probability with ``t`` steps left.

    A discount of ``1 - 1e-7`` per step makes the expert prefer the faster of two equally safe
    moves; values are success probabilities up to that factor.

    Example:
        >>> q = optimal_values(["SF", "FG"], slippery=False, horizon=2)
        >>> round(max(q[2][0]), 6)
        1.0
    """
    size = len(rows)
    cells = "".join(rows)
    n = size * size
    outcomes: list[list[list[tuple[int, float]]]] = []
    for s in range(n):
        per_a = []
        for a in range(4):
            if slippery:
                dist: dict[int, float] = {}
                for b in ((a - 1) % 4, a, (a + 1) % 4):
                    y = _move(s, b, size)
                    dist[y] = dist.get(y, 0.0) + 1.0 / 3.0
                per_a.append(list(dist.items()))
            else:
                per_a.append([(_move(s, a, size), 1.0)])
        outcomes.append(per_a)
    v = [1.0 if ch == "G" else 0.0 for ch in cells]
    q: list[list[list[float]]] = [[[v[s]] * 4 for s in range(n)]]
    for _ in range(horizon):
        qt = []
        for s in range(n):
            if cells[s] in "GH":
                qt.append([v[s]] * 4)
            else:
                # The tiny discount only breaks ties between equally safe moves in favour of
                # the faster one; it changes success probabilities by < 1e-5.
                qt.append([_GAMMA * sum(p * v[y] for y, p in outcomes[s][a]) for a in range(4)])
        q.append(qt)
        v = [max(row) for row in qt]
    return q


class FrozenLakeEnv(StepEnv):
    """Cross a generated frozen lake from S to G without stepping into a hole (H).

    Args:
        size: the map is ``size`` x ``size`` (3 to 12, default 4).
        hole_prob: chance that a cell other than S and G is a hole (0 to 0.5, default 0.2).
        slippery: moves slip to a perpendicular direction with probability 2/3 (default False).
        max_steps: step limit (default 20 for deterministic lakes, 100 for slippery ones).

    ``reset(options={"map": ["SFFF", "FHFH", "FFFH", "HFFG"]})`` plays a given map.

    Example:
        >>> import gymnasium as gym, stepgym
        >>> env = gym.make("stepgym/FrozenLake-v0", slippery=True)
        >>> obs, info = env.reset(seed=3)
        >>> obs, reward, terminated, truncated, info = env.step("<answer>right</answer>")
        >>> info["action_valid"]
        True
    """

    description: ClassVar[str] = "Cross a generated frozen lake to the goal without falling in a hole (slippery option)"
    default_max_steps: ClassVar[int] = 20

    def __init__(self, size: int = 4, hole_prob: float = 0.2, slippery: bool = False, **kwargs: Any) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or not 3 <= size <= 12:
            raise InvalidConfig("size", size, "an int from 3 to 12")
        if not isinstance(hole_prob, (int, float)) or not 0.0 <= hole_prob <= 0.5:
            raise InvalidConfig("hole_prob", hole_prob, "a float from 0 to 0.5")
        if kwargs.get("max_steps") is None:
            kwargs["max_steps"] = 100 if slippery else max(self.default_max_steps, 4 * size)
        super().__init__(**kwargs)
        self.size = size
        self.hole_prob = float(hole_prob)
        self.slippery = bool(slippery)
        self._rows: list[str] = []
        self._cells = ""
        self._pos = 0
        self._base: list[str] = []
        self._q: list[list[list[float]]] | None = None
        self._rules = (
            "FrozenLake. Walk from S to the goal G across the frozen lake. Legend: @ you, F frozen "
            "(safe), H hole (you fall in and lose), G goal. "
            + (
                "The ice is slippery: you move in the chosen direction only 1/3 of the time, and to either "
                "side of it otherwise. "
                if slippery
                else ""
            )
            + "Answer with one move: left, down, right or up (or <answer>left</answer>)."
        )

    def _board(self) -> str:
        chars = self._base[:]
        p = self._pos
        chars[p + p // self.size] = "@"
        return "".join(chars)

    def _reset(self, options: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        given = (options or {}).get("map")
        if given is not None:
            rows = [given] if isinstance(given, str) else list(given)
            if isinstance(given, str):
                rows = given.split()
            if (
                not rows
                or any(len(r) != len(rows) for r in rows)
                or any(set(r) - set("SFHG") for r in rows)
                or "".join(rows).count("S") != 1
                or "G" not in "".join(rows)
            ):
                raise InvalidConfig("options['map']", given, "a square list of rows of S/F/H/G with one S and a G")
            self._rows = rows
            self.size = len(rows)
        else:
            self._rows = generate_map(self.size, self.hole_prob, self.np_random)
        self._cells = "".join(self._rows)
        self._pos = self._cells.index("S")
        base: list[str] = []
        for r, row in enumerate(self._rows):
            if r:
                base.append("\n")
            base.extend(row)
        self._base = base
        self._q = None
        return self._rules + "\n\n" + self._board() + f"\nSteps left: {self.max_steps}.", {"position": self._pos}

    def _step(self, action: str) -> StepResult:
        a = _ALIASES.get(normalize_command(action))
        if a is None:
            return StepResult(
                observation=f"Invalid move {quote_action(action)}. Answer with one of: left, down, right, up.\n\n"
                + self._board(),
                action_valid=False,
                error="unknown move; expected left, down, right or up",
                info={"position": self._pos},
            )
        moved = a
        if self.slippery:
            moved = (a + int(self.np_random.integers(-1, 2))) % 4
        self._pos = _move(self._pos, moved, self.size)
        cell = self._cells[self._pos]
        info: dict[str, Any] = {"position": self._pos, "moved": ACTIONS[moved]}
        slip = f"You slipped and moved {ACTIONS[moved]}.\n" if moved != a else ""
        if cell == "G":
            return StepResult(slip + self._board() + "\nYou reached the goal.", 1.0, True, True, info=info)
        if cell == "H":
            return StepResult(slip + self._board() + "\nYou fell into a hole.", 0.0, True, False, info=info)
        return StepResult(slip + self._board() + f"\nSteps left: {self.max_steps - self._t}.", info=info)

    def expert_action(self) -> str:
        """The move that maximises the chance of reaching G within the remaining steps."""
        left = self.max_steps - self._t
        if self._q is None or len(self._q) <= left:
            self._q = optimal_values(self._rows, self.slippery, max(left, 1))
        qs = self._q[max(left, 1)][self._pos]
        best = max(range(4), key=lambda a: (qs[a], -a))
        return ACTIONS[best]
