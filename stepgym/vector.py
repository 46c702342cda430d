"""Vectorised text envs over Gymnasium's vector API.

``stepgym.make_vec`` builds a :class:`gymnasium.vector.SyncVectorEnv` (all envs in this
process, stepped one after another; best for cheap envs and debugging) or an
:class:`gymnasium.vector.AsyncVectorEnv` (one worker process per env; best when a step
waits on a tool, a sandbox or a simulator). Observations come back as a tuple of ``str``,
actions go in as a sequence of ``str``, and ``infos`` is Gymnasium's dict of arrays with
``_key`` masks (text values are object arrays).

Plain ``gymnasium.make_vec(id, num_envs, vectorization_mode="async")`` works too: its
``AsyncVectorEnv`` defaults to ``shared_memory=True``, and :mod:`stepgym.spaces` registers
shared-memory hooks for :class:`~stepgym.spaces.UnicodeText` (any unicode, up to the
space's ``max_length``), so its observations equal the sync vector env's. ``make_vec`` here
passes ``shared_memory=False`` (observations travel through the pipes), which needs no
buffer of ``max_length`` code points per env.

Autoreset (Gymnasium 1.x semantics, ``autoreset_mode``):

* ``"next_step"`` (default): when sub-env ``i`` ends on step ``t``, that step returns its
  last observation, reward and ``terminated``/``truncated``; on step ``t+1`` sub-env ``i``
  is reset instead of stepped, the action given for it is **ignored**, and it returns the
  new episode's first observation with reward 0 and both flags False. A rollout loop must
  therefore not record the action of a sub-env whose previous step ended its episode.
* ``"same_step"``: the reset happens within step ``t``: the returned observation is the
  new episode's first one and the last observation is in ``infos["final_obs"]`` (final
  info in ``infos["final_info"]``).
* ``"disabled"``: nothing is reset automatically; call
  ``envs.reset(options={"reset_mask": mask})`` for the envs that ended.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import gymnasium as gym
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv

from stepgym.errors import InvalidArgument
from stepgym.registration import make as _make_env

__all__ = ["make_vec", "AUTORESET_MODES"]

#: Accepted ``autoreset_mode`` names and the Gymnasium modes they select.
AUTORESET_MODES: dict[str, AutoresetMode] = {
    "next_step": AutoresetMode.NEXT_STEP,
    "same_step": AutoresetMode.SAME_STEP,
    "disabled": AutoresetMode.DISABLED,
}


def _make_one(env_id: str, wrappers: tuple[Callable[[gym.Env], gym.Env], ...], env_kwargs: dict[str, Any]) -> gym.Env:
    # Module-level (not a closure) so worker processes can unpickle it under any start method.
    env = _make_env(env_id, **env_kwargs)
    for w in wrappers:
        env = w(env)
    return env


def make_vec(
    id: str,
    num_envs: int = 1,
    mode: str = "sync",
    *,
    wrappers: Sequence[Callable[[gym.Env], gym.Env]] | None = None,
    autoreset_mode: str = "next_step",
    context: str | None = None,
    **env_kwargs: Any,
) -> VectorEnv:
    """``num_envs`` copies of a registered text env behind Gymnasium's vector API.

    Args:
        id: a registered env id (``"stepgym/ToolUse-v0"``, or ``"module:ns/Name-v0"``).
        num_envs: how many sub-envs.
        mode: ``"sync"`` (one process) or ``"async"`` (a worker process per env;
            observations come back through the pipes, ``shared_memory=False``).
        wrappers: callables ``env -> env`` applied to each sub-env in order (innermost
            first), e.g. ``functools.partial(ContextWindow, max_steps=4)``. In async mode
            they must be picklable (``partial`` of a class is; a ``lambda`` is not under
            the ``spawn`` start method).
        autoreset_mode: ``"next_step"``, ``"same_step"`` or ``"disabled"`` (see the module
            docs for what each does).
        context: multiprocessing start method for async mode (default: the platform's).
        **env_kwargs: passed to every sub-env's constructor (e.g. ``difficulty="hard"``).

    Example:
        >>> import stepgym
        >>> envs = stepgym.make_vec("stepgym/ToolUse-v0", 2, difficulty="easy")
        >>> obs, infos = envs.reset(seed=0)
        >>> len(obs), type(obs[0]).__name__
        (2, 'str')
        >>> obs, rewards, terminated, truncated, infos = envs.step(["Action: lookup[Belxo, population]"] * 2)
        >>> envs.close()
    """
    if not isinstance(num_envs, int) or isinstance(num_envs, bool) or num_envs < 1:
        raise InvalidArgument(f"num_envs must be a positive int, got {num_envs!r}")
    if mode not in ("sync", "async"):
        raise InvalidArgument(f"mode must be 'sync' or 'async', got {mode!r}")
    if autoreset_mode not in AUTORESET_MODES:
        raise InvalidArgument(f"autoreset_mode must be one of {sorted(AUTORESET_MODES)}, got {autoreset_mode!r}")
    wrappers = tuple(wrappers or ())
    bad = [w for w in wrappers if not callable(w)]
    if bad:
        raise InvalidArgument(f"wrappers must be callables env -> env, got {bad[0]!r}")
    # Build one env here first: a bad id or kwarg fails now, in this process, with
    # stepgym's message, rather than as a traceback from a worker.
    probe = _make_one(id, wrappers, env_kwargs)
    probe.close()
    fns = [partial(_make_one, id, wrappers, dict(env_kwargs)) for _ in range(num_envs)]
    reset_mode = AUTORESET_MODES[autoreset_mode]
    if mode == "sync":
        return SyncVectorEnv(fns, autoreset_mode=reset_mode)
    return AsyncVectorEnv(fns, shared_memory=False, context=context, autoreset_mode=reset_mode)
