"""Negotiation: two agents split a pool of items; each values the items privately.

A "deal or no deal" game (Lewis et al., 2017) played in simultaneous rounds:

* The pool holds 1-4 copies of each item type (books, hats, balls by default). Each agent
  has private integer values per item (0-5); a deal pays each agent the value of its share
  divided by the value of the whole pool to it, so rewards lie in [0, 1].
* Each round both agents act at once: ``propose B H L`` (the counts *you* take; the other
  agent gets the rest) or ``accept`` (take the other agent's standing proposal).
* A deal happens when one agent accepts the other's standing proposal, or when both
  proposals of a round split the pool exactly. No deal after ``max_rounds`` pays 0.

Two ways to play:

* :func:`negotiation_parallel` builds a PettingZoo ``ParallelEnv`` (``agent_0``, ``agent_1``);
  it passes ``pettingzoo.test.parallel_api_test``. PettingZoo is imported only there.
* ``stepgym/Negotiation-v0`` is a single-agent Gymnasium view: the agent is ``agent_0`` and
  plays a rule-based negotiator that concedes over time (accepts an offer worth at least a
  threshold that falls from 90% to 50% of its total; proposes the smallest share that meets
  it).

Example:
    >>> import gymnasium as gym, stepgym
    >>> env = gym.make("stepgym/Negotiation-v0")
    >>> obs, info = env.reset(seed=0)
    >>> done = False
    >>> while not done:
    ...     obs, reward, terminated, truncated, info = env.step(env.unwrapped.expert_action())
    ...     done = terminated or truncated
    >>> info["deal"], reward == info["optimal_value"]
    (True, True)
"""

from __future__ import annotations

import itertools
import re
from fractions import Fraction
from functools import cache
from operator import mul, sub
from typing import Any, ClassVar

from stepgym.core import StepEnv, StepResult, quote_action
from stepgym.envs._answer import normalize_command
from stepgym.errors import InvalidConfig

__all__ = ["NegotiationGame", "NegotiationEnv", "negotiation_parallel", "parse_negotiation_action"]

ITEM_NAMES = ("books", "hats", "balls", "pens", "cups")
AGENTS = ("agent_0", "agent_1")
_NUM = re.compile(r"\d+")


@cache
def _pair_re(items: tuple[str, ...]) -> re.Pattern[str]:
    """``name = N`` or ``N name`` pairs, for the item names only (so "and 3 balls" reads 3 balls)."""
    names = "|".join(sorted({w for item in items for w in (item, item.rstrip("s"))}, key=len, reverse=True))
    return re.compile(rf"\b({names})\s*[=:]?\s*(\d+)|(\d+)\s*({names})\b")


def parse_negotiation_action(text: str, pool: tuple[int, ...], items: tuple[str, ...]) -> tuple[int, ...] | str | None:
    """Parse an action: ``"accept"`` -> ``"accept"``, a proposal -> the counts claimed, else None.

    Proposals: ``propose 2 1 0`` (counts in item order) or with names in any order,
    ``propose books=2 hats=1 balls=0`` / ``propose 2 books, 1 hat``; missing names mean 0.

    Example:
        >>> parse_negotiation_action("<answer>propose 2 books 1 hat</answer>", (3, 1, 2), ("books", "hats", "balls"))
        (2, 1, 0)
        >>> parse_negotiation_action("Accept.", (3, 1, 2), ("books", "hats", "balls"))
        'accept'
    """
    cmd = normalize_command(text)
    if cmd in ("accept", "i accept", "deal", "accept deal", "accept offer", "accept the offer"):
        return "accept"
    if not cmd.startswith(("propose", "offer", "i take", "take", "claim")):
        return None
    body = cmd.split(" ", 1)[1] if " " in cmd else ""
    if body.startswith("take "):
        body = body[5:]
    claims: list[int] | None = None
    pairs = _pair_re(items).findall(body)
    named = {}
    for name, n1, n2, name2 in pairs:
        word = name or name2
        n = n1 or n2
        for i, item in enumerate(items):
            if word in (item, item.rstrip("s")):
                named[i] = int(n) if len(n) < 4 else 10**4
    if named:
        claims = [named.get(i, 0) for i in range(len(items))]
    else:
        nums = _NUM.findall(body)
        if len(nums) == len(items):
            claims = [int(n) if len(n) < 4 else 10**4 for n in nums]
    if claims is None or any(c > p for c, p in zip(claims, pool)):
        return None
    return tuple(claims)


class NegotiationGame:
    """The state and rules of one negotiation, shared by the parallel env and the single-agent view."""

    def __init__(self, pool: tuple[int, ...], values: tuple[tuple[int, ...], tuple[int, ...]], max_rounds: int,
                 items: tuple[str, ...]) -> None:
        self.pool = pool
        self.values = values
        self.items = items
        self.max_rounds = max_rounds
        self.round = 0
        self.standing: list[tuple[int, ...] | None] = [None, None]
        self.deal: tuple[tuple[int, ...], tuple[int, ...]] | None = None
        self.done = False
        self.last: list[str] = ["", ""]
        self.errors: list[str | None] = [None, None]
        self.totals = tuple(sum(v * c for v, c in zip(vals, pool)) for vals in values)

    def value(self, i: int, share: tuple[int, ...]) -> int:
        return sum(map(mul, self.values[i], share))

    def rest(self, claim: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(map(sub, self.pool, claim))

    def describe(self, share: tuple[int, ...]) -> str:
        return ", ".join(f"{n} {name}" for n, name in zip(share, self.items))

    def play_round(self, actions: tuple[str, str]) -> None:
        """Apply both agents' actions of one round (text), simultaneously."""
        parsed: list[tuple[int, ...] | str | None] = []
        for i in (0, 1):
            a = actions[i]
            p = parse_negotiation_action(a, self.pool, self.items) if isinstance(a, str) else None
            if p == "accept" and self.standing[1 - i] is None:
                self.errors[i] = "there is no standing proposal from the other agent to accept"
                p = None
            elif p is None:
                got = quote_action(a) if isinstance(a, str) else type(a).__name__
                self.errors[i] = (
                    f"expected 'propose' followed by {len(self.items)} counts no larger than the pool "
                    f"({' '.join(map(str, self.pool))}), or 'accept'; got {got}"
                )
            else:
                self.errors[i] = None
            parsed.append(p)
        acc = [p == "accept" for p in parsed]
        deal = None
        if acc[0] and acc[1]:
            # Each accepts the other's standing offer: a deal only if those two offers agree.
            s0, s1 = self.standing
            if s0 is not None and s1 is not None and self.rest(s1) == s0:
                deal = (s0, s1)
        elif acc[0] or acc[1]:
            i = 0 if acc[0] else 1
            claim = self.standing[1 - i]
            if claim is None:  # invariant, not user input
                raise RuntimeError('internal error: claim is not None')
            shares = [self.rest(claim), claim] if i == 0 else [claim, self.rest(claim)]
            deal = (shares[0], shares[1])
        elif isinstance(parsed[0], tuple) and isinstance(parsed[1], tuple) and self.rest(parsed[0]) == parsed[1]:
            deal = (parsed[0], parsed[1])
        for i in (0, 1):
            p = parsed[i]
            if isinstance(p, tuple):
                self.standing[i] = p
                self.last[i] = f"proposed to take {self.describe(p)}"
            elif p == "accept":
                self.last[i] = "accepted"
            else:
                self.last[i] = "made an invalid move"
        self.round += 1
        if deal is not None:
            self.deal = deal
            self.done = True
        elif self.round >= self.max_rounds:
            self.done = True

    def reward(self, i: int) -> float:
        if self.deal is None or not self.totals[i]:
            return 0.0
        return self.value(i, self.deal[i]) / self.totals[i]

    def observe(self, i: int) -> str:
        other = 1 - i
        vals = ", ".join(f"{name} {v}" for name, v in zip(self.items, self.values[i]))
        lines = [
            f"Negotiation. You are {AGENTS[i]}. Pool: {self.describe(self.pool)}.",
            f"Your private value per item: {vals} (whole pool: {self.totals[i]}). The other agent's values differ "
            "and are hidden.",
        ]
        if self.round:
            lines.append(f"Last round you {self.last[i]}; the other agent {self.last[other]}.")
        if self.errors[i]:
            lines.append(f"Your last action was invalid: {self.errors[i]}.")
        if self.done:
            if self.deal is not None:
                mine = self.deal[i]
                lines.append(
                    f"Deal: you get {self.describe(mine)}, worth {self.value(i, mine)} of {self.totals[i]} to you."
                )
            else:
                lines.append("No deal was reached; both agents get nothing.")
            return "\n".join(lines)
        own = self.standing[i]
        if own is not None:
            lines.append(
                f"Your standing proposal: you take {self.describe(own)} (worth {self.value(i, own)} to you); "
                "the other agent may accept it next round."
            )
        s = self.standing[other]
        if s is not None:
            mine = self.rest(s)
            lines.append(
                f"The other agent's standing proposal leaves you {self.describe(mine)} "
                f"(worth {self.value(i, mine)} to you); 'accept' takes it."
            )
        lines.append(
            f"Round {self.round + 1} of {self.max_rounds}. "
            f"Answer 'propose {' '.join(['N'] * len(self.items))}' with the "
            f"counts YOU take ({', '.join(self.items)}), or 'accept'."
        )
        return "\n".join(lines)


def _draw_game(rng: Any, n_items: int, max_rounds: int) -> NegotiationGame:
    while True:
        pool = tuple(rng.integers(1, 5, size=n_items).tolist())
        v0 = tuple(rng.integers(0, 6, size=n_items).tolist())
        v1 = tuple(rng.integers(0, 6, size=n_items).tolist())
        # both agents must want at least two kinds of item, and want different things
        if sum(x > 0 for x in v0) >= 2 and sum(x > 0 for x in v1) >= 2 and v0 != v1:
            return NegotiationGame(pool, (v0, v1), max_rounds, ITEM_NAMES[:n_items])


def _validate(n_items: Any, max_rounds: Any) -> None:
    if not isinstance(n_items, int) or isinstance(n_items, bool) or not 2 <= n_items <= len(ITEM_NAMES):
        raise InvalidConfig("n_items", n_items, f"an int from 2 to {len(ITEM_NAMES)}")
    if not isinstance(max_rounds, int) or isinstance(max_rounds, bool) or not 2 <= max_rounds <= 50:
        raise InvalidConfig("max_rounds", max_rounds, "an int from 2 to 50")


class RuleBasedNegotiator:
    """The built-in opponent: concedes linearly from 90% to 50% of its total value.

    In round ``r`` (0-based) its threshold is ``0.9 - 0.4 * r / (max_rounds - 1)`` of its total.
    It accepts the other's standing proposal when that leaves it at least the threshold;
    otherwise it proposes the share that meets the threshold with the fewest items (ties:
    the least value above the threshold, then item order).
    """

    def __init__(self, game: NegotiationGame, me: int = 1) -> None:
        self.game = game
        self.me = me
        # Integer thresholds over a common denominator: exact, and far cheaper than Fractions.
        self._den = 10 * (game.max_rounds - 1)
        self._thresholds = [(9 * (game.max_rounds - 1) - 4 * r) * game.totals[me] for r in range(game.max_rounds)]
        shares = itertools.product(*(range(p + 1) for p in game.pool))
        # Fewest items first, then least value: leaves the most to the other side.
        ranked = sorted((sum(s), game.value(me, s), s) for s in shares)
        # The proposal of each round is fixed by the threshold: precomputed so a step is a lookup.
        self._proposals = []
        for t in self._thresholds:
            share = next((s for _, v, s in ranked if v * self._den >= t), game.pool)
            self._proposals.append("propose " + " ".join(map(str, share)))

    def threshold(self, r: int) -> Fraction:
        g = self.game
        return (Fraction(9, 10) - Fraction(4, 10) * Fraction(r, g.max_rounds - 1)) * g.totals[self.me]

    def act(self) -> str:
        g = self.game
        r = min(g.round, g.max_rounds - 1)
        s = g.standing[1 - self.me]
        if s is not None and g.value(self.me, g.rest(s)) * self._den >= self._thresholds[r]:
            return "accept"
        return self._proposals[r]


class NegotiationEnv(StepEnv):
    """Single-agent view: negotiate as ``agent_0`` against :class:`RuleBasedNegotiator`.

    Reward at the end: the value of your share over the value of the whole pool to you (0 if
    no deal). ``info["success"]`` is True when a deal is reached; ``info["value"]`` is the
    reward and ``info["optimal_value"]`` the best reward achievable against this opponent
    (the expert reaches it).

    Args:
        n_items: number of item types (2 to 5, default 3).
        max_rounds: rounds before the game ends without a deal (default 6); also the step limit.

    Example:
        >>> import gymnasium as gym, stepgym
        >>> env = gym.make("stepgym/Negotiation-v0")
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step("propose 0 0 0")
        >>> info["action_valid"]
        True
    """

    description: ClassVar[str] = "Split a pool of items with private values against a rule-based negotiator"
    default_max_steps: ClassVar[int] = 6

    def __init__(self, n_items: int = 3, max_rounds: int = 6, **kwargs: Any) -> None:
        _validate(n_items, max_rounds)
        if kwargs.get("max_steps") is None:
            kwargs["max_steps"] = max_rounds
        super().__init__(**kwargs)
        self.n_items, self.max_rounds = n_items, max_rounds
        self.game: NegotiationGame | None = None
        self.bot: RuleBasedNegotiator | None = None
        self._target: tuple[int, ...] = ()
        self._optimal = 0.0

    def _reset(self, options: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        self.game = _draw_game(self.np_random, self.n_items, self.max_rounds)
        self.bot = RuleBasedNegotiator(self.game, me=1)
        self._target = ()
        return self.game.observe(0), {"values": self.game.values[0], "pool": self.game.pool}

    def _optimum(self) -> tuple[tuple[int, ...], float]:
        """The best share the bot will still accept in the last round, and its reward."""
        g, bot = self.game, self.bot
        if g is None or bot is None:  # invariant, not user input
            raise RuntimeError('internal error: g is not None and bot is not None')
        t = bot.threshold(g.max_rounds - 1)
        best = max(
            (s for s in itertools.product(*(range(p + 1) for p in g.pool)) if g.value(1, g.rest(s)) >= t),
            key=lambda s: (g.value(0, s), -sum(s)),
        )
        return best, (g.value(0, best) / g.totals[0] if g.totals[0] else 0.0)

    def _step(self, action: str) -> StepResult:
        g, bot = self.game, self.bot
        if g is None or bot is None:  # invariant, not user input
            raise RuntimeError('internal error: g is not None and bot is not None')
        g.play_round((action, bot.act()))
        info: dict[str, Any] = {"deal": g.deal is not None}
        if g.errors[0]:
            info["round"] = g.round
        if g.done:
            if not self._target:
                self._target, self._optimal = self._optimum()
            reward = g.reward(0)
            info.update(value=reward, optimal_value=self._optimal)
            return StepResult(
                g.observe(0), reward, True, g.deal is not None,
                action_valid=g.errors[0] is None, error=g.errors[0], info=info,
            )
        return StepResult(g.observe(0), action_valid=g.errors[0] is None, error=g.errors[0], info=info)

    def _on_truncate(self) -> dict[str, Any]:
        return {"deal": False, "value": 0.0}

    def expert_action(self) -> str:
        """Propose the best share the opponent will accept before the last round ends."""
        if not self._target:
            self._target, self._optimal = self._optimum()
        return "propose " + " ".join(map(str, self._target))


@cache
def _parallel_class() -> type:
    from gymnasium.utils import seeding
    from pettingzoo import ParallelEnv

    from stepgym.spaces import UnicodeText

    class NegotiationParallelEnv(ParallelEnv):
        """Two-agent negotiation under PettingZoo's parallel API (text observations and actions).

        ``max_rounds`` is a rule of the game (the agents are told; no deal by then ends it,
        ``terminated``). ``max_cycles`` (PettingZoo's name) truncates the episode after that
        many rounds when the game has not ended (``truncated``); ``None`` never does.
        """

        metadata: ClassVar[dict[str, Any]] = {"name": "stepgym_negotiation_v0", "render_modes": ["ansi"],
                                              "is_parallelizable": True}

        def __init__(self, n_items: int = 3, max_rounds: int = 6, render_mode: str | None = None,
                     max_cycles: int | None = None) -> None:
            _validate(n_items, max_rounds)
            if max_cycles is not None and (not isinstance(max_cycles, int) or isinstance(max_cycles, bool)
                                           or max_cycles < 1):
                raise InvalidConfig("max_cycles", max_cycles, "a positive int or None")
            self.max_cycles = max_cycles
            self.n_items, self.max_rounds = n_items, max_rounds
            self.possible_agents = list(AGENTS)
            self.agents: list[str] = []
            self.render_mode = render_mode
            self._obs_space = UnicodeText(4096)
            self._act_space = UnicodeText(1024)
            self._rng, _ = seeding.np_random(None)
            self.game: NegotiationGame | None = None

        def observation_space(self, agent: str) -> UnicodeText:
            return self._obs_space

        def action_space(self, agent: str) -> UnicodeText:
            return self._act_space

        def reset(
            self, seed: int | None = None, options: dict[str, Any] | None = None
        ) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
            if seed is not None:
                self._rng, _ = seeding.np_random(seed)
                self._obs_space.seed(seed)
                self._act_space.seed(seed + 1)
            self.game = _draw_game(self._rng, self.n_items, self.max_rounds)
            self.agents = list(AGENTS)
            obs = {a: self.game.observe(i) for i, a in enumerate(AGENTS)}
            infos = {
                a: {"action_valid": True, "error": None, "values": self.game.values[i]} for i, a in enumerate(AGENTS)
            }
            return obs, infos

        def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
            g = self.game
            if g is None or not self.agents:
                from stepgym.errors import ResetNeeded

                raise ResetNeeded("step() called before reset() or after the game ended; call reset()")
            g.play_round((actions.get(AGENTS[0], ""), actions.get(AGENTS[1], "")))
            live = list(self.agents)
            obs = {a: g.observe(i) for i, a in enumerate(AGENTS) if a in live}
            rewards = {a: g.reward(i) if g.done else 0.0 for i, a in enumerate(AGENTS) if a in live}
            terms = {a: g.done for a in live}
            cut = not g.done and self.max_cycles is not None and g.round >= self.max_cycles
            truncs = {a: cut for a in live}
            infos = {
                a: {"action_valid": g.errors[i] is None, "error": g.errors[i], "deal": g.deal is not None}
                for i, a in enumerate(AGENTS)
                if a in live
            }
            if g.done or cut:
                for a in AGENTS:
                    infos[a]["success"] = g.deal is not None
                self.agents = []
            return obs, rewards, terms, truncs, infos

        def render(self) -> str | None:
            return None if self.game is None else self.game.observe(0)

        def close(self) -> None:
            pass

    # A module-level name (resolved lazily by __getattr__ below) so that instances pickle.
    NegotiationParallelEnv.__qualname__ = "NegotiationParallelEnv"
    NegotiationParallelEnv.__module__ = __name__
    globals()["NegotiationParallelEnv"] = NegotiationParallelEnv
    return NegotiationParallelEnv


def __getattr__(name: str) -> Any:
    if name == "NegotiationParallelEnv":
        return _parallel_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def negotiation_parallel(**kwargs: Any) -> Any:
    """The negotiation game as a PettingZoo ``ParallelEnv`` (agents ``agent_0``, ``agent_1``).

    Example:
        >>> env = negotiation_parallel()
        >>> obs, infos = env.reset(seed=0)
        >>> obs, rewards, terms, truncs, infos = env.step({"agent_0": "propose 0 0 0", "agent_1": "accept"})
        >>> infos["agent_1"]["action_valid"]   # nothing to accept in round 1
        False
    """
    return _parallel_class()(**kwargs)
