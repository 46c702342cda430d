"""Helpers shared by the wrappers (not public API)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from gymnasium.spaces import Text

from stepgym.errors import InvalidArgument

#: Upper bound used when an env does not say how long its texts or episodes get.
UNBOUNDED = 2**31 - 1


def add_reward_component(reward: float, info: dict[str, Any], name: str, value: float) -> tuple[float, dict[str, Any]]:
    """Add ``value`` under ``name`` to ``info["reward_components"]``; return the new reward and info.

    The components always sum to the returned reward: the first shaping wrapper seeds them
    with ``{"env": reward}``; a component that does not explain the inner reward (a
    third-party wrapper changed it) is kept as ``"other"``. The same name twice (two
    stacked penalties) accumulates.
    """
    info = dict(info)
    comps = dict(info.get("reward_components") or {})
    if not comps:
        comps = {"env": float(reward)}
    else:
        residual = float(reward) - sum(comps.values())
        if abs(residual) > 1e-9:
            comps["other"] = comps.get("other", 0.0) + residual
    comps[name] = comps.get(name, 0.0) + float(value)
    info["reward_components"] = comps
    # Summing the dict itself keeps sum(components) == reward exactly, not just closely.
    return float(sum(comps.values())), info


def text_bound(space: gym.Space | None, default: int = UNBOUNDED) -> int:
    """The ``max_length`` of a text space, else ``default``."""
    return int(space.max_length) if isinstance(space, Text) else default


def episode_bound(env: gym.Env) -> int | None:
    """Steps per episode when the env says (``unwrapped.max_steps`` or the spec), else ``None``."""
    n = getattr(env.unwrapped, "max_steps", None)
    if isinstance(n, int) and n > 0:
        return n
    spec = getattr(env, "spec", None)
    n = getattr(spec, "max_episode_steps", None) if spec is not None else None
    return n if isinstance(n, int) and n > 0 else None


def find_wrapper(env: gym.Env, cls: type) -> gym.Wrapper | None:
    """The outermost wrapper of type ``cls`` in ``env``'s chain, or ``None``."""
    e: Any = env
    while isinstance(e, gym.Wrapper):
        if isinstance(e, cls):
            return e
        e = e.env
    return None


def check_number(name: str, value: Any, *, low: float | None = None, high: float | None = None) -> float:
    """``value`` as a float within bounds, else :class:`InvalidArgument`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(f"{name} must be a number, got {value!r}")
    v = float(value)
    if v != v or (low is not None and v < low) or (high is not None and v > high):
        rng = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise InvalidArgument(f"{name} must be a number in {rng}, got {value!r}")
    return v
