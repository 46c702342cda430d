"""Reward shaping wrappers that show their work.

Every wrapper here adds one named term to ``info["reward_components"]``, a dict whose
values always sum to the reward the wrapper returns. The first shaping wrapper seeds it
with ``{"env": <the env's reward>}``, so a stack of them reads, for example::

    {"env": 1.0, "step_penalty": -0.03, "success_bonus": 0.5}

and a trainer or a log can tell which part of a return came from the task and which from
shaping. Stacked wrappers of the same kind add up under one name.

============================  =================================  ===========================
wrapper                       term                               when
============================  =================================  ===========================
``StepPenalty(c)``            ``step_penalty = -c``              every step
``InvalidActionPenalty(c)``   ``invalid_action = -c``            ``info["action_valid"]`` is False
``FormatReward(bonus)``       ``format = +bonus`` (or -penalty)  the action is in the format
``SuccessBonus(bonus)``       ``success_bonus = +bonus``         episode ends with ``info["success"]``
``PotentialShaping(phi, g)``  ``potential = g*phi(s') - phi(s)``  every step (phi(terminal) = 0)
``DiscountedTerminalReward``  ``terminal_discount``              last step: r -> g**(T-1) * r
============================  =================================  ===========================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import gymnasium as gym

from stepgym.actions import ParseError
from stepgym.errors import InvalidArgument
from stepgym.wrappers._common import add_reward_component, check_number
from stepgym.wrappers.formats import FORMATS, parse_action

__all__ = [
    "Potential",
    "StepPenalty",
    "InvalidActionPenalty",
    "FormatReward",
    "SuccessBonus",
    "PotentialShaping",
    "DiscountedTerminalReward",
]


class Potential(Protocol):
    """A state potential for :class:`PotentialShaping`: ``phi(observation, info) -> float``."""

    def __call__(self, observation: str, info: dict[str, Any], /) -> float: ...


class _Shaping(gym.Wrapper):
    """Base: compute one term per step and add it to the reward and its components."""

    component: str = ""

    def term(self, action: Any, obs: Any, reward: float, terminated: bool, truncated: bool,
             info: dict[str, Any]) -> float:
        raise NotImplementedError

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        value = self.term(action, obs, float(reward), terminated, truncated, info)
        reward, info = add_reward_component(float(reward), info, self.component, value)
        return obs, reward, terminated, truncated, info


class StepPenalty(_Shaping):
    """Subtract ``c`` on every step, so shorter solutions earn more.

    Example:
        >>> import gymnasium as gym, stepgym
        >>> from stepgym.wrappers import StepPenalty
        >>> env = StepPenalty(gym.make("stepgym/ToolUse-v0"), 0.01)
        >>> _ = env.reset(seed=0)
        >>> _, r, _, _, info = env.step(env.unwrapped.expert_action())
        >>> r, info["reward_components"]
        (-0.01, {'env': 0.0, 'step_penalty': -0.01})
    """

    component = "step_penalty"

    def __init__(self, env: gym.Env, c: float = 0.01) -> None:
        super().__init__(env)
        self.c = check_number("c", c, low=0.0)

    def term(self, action, obs, reward, terminated, truncated, info) -> float:
        return -self.c


class InvalidActionPenalty(_Shaping):
    """Subtract ``c`` when the env says the action was invalid (``info["action_valid"]`` False).

    Example:
        >>> import gymnasium as gym, stepgym
        >>> from stepgym.wrappers import InvalidActionPenalty
        >>> env = InvalidActionPenalty(gym.make("stepgym/ToolUse-v0"), 0.1)
        >>> _ = env.reset(seed=0)
        >>> env.step("gibberish")[1]
        -0.1
    """

    component = "invalid_action"

    def __init__(self, env: gym.Env, c: float = 0.1) -> None:
        super().__init__(env)
        self.c = check_number("c", c, low=0.0)

    def term(self, action, obs, reward, terminated, truncated, info) -> float:
        return -self.c if info.get("action_valid", True) is False else 0.0


class FormatReward(_Shaping):
    """Reward actions written in the expected format (and optionally penalise the rest).

    The check is either ``check(action) -> bool`` or "parses in one of ``formats``"
    (:func:`~stepgym.wrappers.formats.parse_action`), by default the canonical Hermes
    tool call. It looks at the action text only, not at whether the call made sense
    (that is :class:`InvalidActionPenalty`'s job).

    Args:
        env: any text env.
        bonus: added when the action is well formatted.
        penalty: subtracted when it is not (default 0).
        formats: accepted formats (see :data:`~stepgym.wrappers.formats.FORMATS`).
        check: custom predicate; overrides ``formats``.

    Example:
        >>> import gymnasium as gym, stepgym
        >>> from stepgym.wrappers import FormatReward
        >>> env = FormatReward(gym.make("stepgym/ToolUse-v0"), bonus=0.05)
        >>> _ = env.reset(seed=0)
        >>> env.step('<tool_call>{"name": "search", "arguments": {"query": "x"}}</tool_call>')[1]
        0.05
    """

    component = "format"

    def __init__(
        self,
        env: gym.Env,
        bonus: float = 0.1,
        *,
        penalty: float = 0.0,
        formats: Sequence[str] = ("hermes",),
        check: Callable[[str], bool] | None = None,
    ) -> None:
        super().__init__(env)
        self.bonus = check_number("bonus", bonus)
        self.penalty = check_number("penalty", penalty, low=0.0)
        bad = [f for f in formats if f not in FORMATS]
        if bad or not formats:
            raise InvalidArgument(f"formats must be a non-empty subset of {FORMATS}, got {tuple(formats)!r}")
        if check is not None and not callable(check):
            raise InvalidArgument(f"check must be a callable str -> bool, got {check!r}")
        self.formats = tuple(formats)
        self.check = check

    def well_formatted(self, action: Any) -> bool:
        if not isinstance(action, str):
            return False
        if self.check is not None:
            return bool(self.check(action))
        return not isinstance(parse_action(action, self.formats), ParseError)

    def term(self, action, obs, reward, terminated, truncated, info) -> float:
        return self.bonus if self.well_formatted(action) else -self.penalty


class SuccessBonus(_Shaping):
    """Add ``bonus`` on the last step of an episode that ends with ``info["success"]``.

    Example:
        >>> import gymnasium as gym, stepgym
        >>> from stepgym.wrappers import SuccessBonus
        >>> env = SuccessBonus(gym.make("stepgym/ToolUse-v0"), 0.5)
        >>> _ = env.reset(seed=0)
        >>> done = False
        >>> while not done:
        ...     _, r, term, trunc, info = env.step(env.unwrapped.expert_action())
        ...     done = term or trunc
        >>> info["reward_components"]
        {'env': 1.0, 'success_bonus': 0.5}
    """

    component = "success_bonus"

    def __init__(self, env: gym.Env, bonus: float = 1.0) -> None:
        super().__init__(env)
        self.bonus = check_number("bonus", bonus)

    def term(self, action, obs, reward, terminated, truncated, info) -> float:
        return self.bonus if (terminated or truncated) and info.get("success") is True else 0.0


class PotentialShaping(_Shaping):
    """Potential-based shaping ``F(s, s') = gamma * phi(s') - phi(s)`` (Ng, Harada & Russell, 1999).

    **Guarantee.** For any potential ``phi``, adding ``F`` leaves the optimal policies of
    the MDP unchanged: along any trajectory the shaping terms telescope, so the shaped
    discounted return of a policy from ``s_0`` equals its original return minus
    ``phi(s_0)``, a constant that does not depend on the actions. This needs three things,
    all of which this wrapper enforces or documents:

    * the same ``gamma`` as the learner uses for returns (StepPO's default is 1.0);
    * ``phi(terminal) = 0``: on a ``terminated`` step the wrapper uses 0 for ``phi(s')``,
      so the last term is ``-phi(s_T-1)``;
    * on a ``truncated`` step ``s'`` is not terminal and ``phi(s')`` is kept; the
      invariance then holds for learners that bootstrap from ``V(s')`` at truncation
      (StepPO does).

    ``phi`` sees what this wrapper sees: the observation from the env below it and its info
    (put it under context wrappers to score raw observations).

    Args:
        env: any text env.
        phi: ``phi(observation, info) -> float``.
        gamma: discount in (0, 1].

    Example:
        >>> import gymnasium as gym, stepgym
        >>> from stepgym.wrappers import PotentialShaping
        >>> phi = lambda obs, info: 0.1 * ("population" in obs)
        >>> env = PotentialShaping(gym.make("stepgym/ToolUse-v0"), phi, gamma=1.0)
        >>> _ = env.reset(seed=0)
        >>> _, r, *_ = env.step(env.unwrapped.expert_action())
        >>> round(r, 3)  # reset obs mentions "population" too, so phi(s') - phi(s) = 0
        0.0
    """

    component = "potential"

    def __init__(self, env: gym.Env, phi: Potential, gamma: float = 1.0) -> None:
        super().__init__(env)
        if not callable(phi):
            raise InvalidArgument(f"phi must be a callable (observation, info) -> float, got {phi!r}")
        g = check_number("gamma", gamma, low=0.0, high=1.0)
        if g == 0.0:
            raise InvalidArgument("gamma must be in (0, 1], got 0")
        self.phi = phi
        self.gamma = g
        self._phi_s = 0.0

    def _potential(self, obs: Any, info: dict[str, Any]) -> float:
        v = self.phi(obs, info)
        try:
            return float(v)
        except (TypeError, ValueError):
            raise InvalidArgument(f"phi must return a number, got {v!r}") from None

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self._phi_s = self._potential(obs, info)
        return obs, info

    def term(self, action, obs, reward, terminated, truncated, info) -> float:
        phi_next = 0.0 if terminated else self._potential(obs, info)
        value = self.gamma * phi_next - self._phi_s
        self._phi_s = phi_next
        return value


class DiscountedTerminalReward(_Shaping):
    """Discount the reward of an episode's last step by its length: ``r_T -> gamma**(T-1) * r_T``.

    For trainers that use ``gamma = 1`` (StepPO's default), a terminal-only reward does not
    prefer short solutions; this wrapper makes a 2-step answer worth more than a 6-step
    one while a 1-step answer keeps the full reward. The change shows as the
    ``terminal_discount`` component ``(gamma**(T-1) - 1) * r_T``. Only the last step
    (terminated or truncated) is changed.

    Example:
        >>> import gymnasium as gym, stepgym
        >>> from stepgym.wrappers import DiscountedTerminalReward
        >>> env = DiscountedTerminalReward(gym.make("stepgym/ToolUse-v0"), gamma=0.9)
        >>> _ = env.reset(seed=0)
        >>> done = False
        >>> while not done:
        ...     _, r, term, trunc, info = env.step(env.unwrapped.expert_action())
        ...     done = term or trunc
        >>> round(r, 3)  # solved in 2 steps: 0.9 ** 1 * 1.0
        0.9
    """

    component = "terminal_discount"

    def __init__(self, env: gym.Env, gamma: float = 0.99) -> None:
        super().__init__(env)
        g = check_number("gamma", gamma, low=0.0, high=1.0)
        if g == 0.0:
            raise InvalidArgument("gamma must be in (0, 1], got 0")
        self.gamma = g
        self._t = 0

    def reset(self, **kwargs: Any):
        self._t = 0
        return self.env.reset(**kwargs)

    def term(self, action, obs, reward, terminated, truncated, info) -> float:
        self._t += 1
        if not (terminated or truncated):
            return 0.0
        return (self.gamma ** (self._t - 1) - 1.0) * reward
