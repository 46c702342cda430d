"""The negotiation game as a PettingZoo environment module (text observations and actions).

Like PettingZoo's own modules: ``parallel_env()`` is the native parallel env (both agents act
every round), ``raw_env()`` its AEC view (PettingZoo's ``parallel_to_aec_wrapper``) and
``env()`` that view behind PettingZoo's order-enforcing wrapper. All take:

* ``max_cycles`` (default 6): truncate after this many rounds if the game has not ended.
* ``n_items`` (default 3) and ``max_rounds`` (default 6): the game's own rules; the agents
  are told ``max_rounds``, and no deal by then ends the game (terminated, reward 0).
* ``render_mode``: ``"ansi"`` or ``None``.

Example:
    >>> from stepgym.envs.pz import negotiation_v0
    >>> par = negotiation_v0.parallel_env(max_cycles=2)
    >>> obs, infos = par.reset(seed=0)
    >>> out = par.step({"agent_0": "propose 1 1 1", "agent_1": "propose 0 0 0"})
    >>> out = par.step({"agent_0": "propose 1 1 1", "agent_1": "propose 0 0 0"})
    >>> out[3], par.agents
    ({'agent_0': True, 'agent_1': True}, [])
"""

from __future__ import annotations

from typing import Any

from stepgym.envs.negotiation import _parallel_class

__all__ = ["env", "raw_env", "parallel_env"]

#: Default ``max_cycles``: the game's default ``max_rounds``.
MAX_CYCLES = 6


def parallel_env(max_cycles: int = MAX_CYCLES, **kwargs: Any) -> Any:
    """The native parallel env (see the module docs for the arguments)."""
    return _parallel_class()(max_cycles=max_cycles, **kwargs)


def raw_env(max_cycles: int = MAX_CYCLES, **kwargs: Any) -> Any:
    """The AEC view of :func:`parallel_env` (PettingZoo's ``parallel_to_aec_wrapper``)."""
    from pettingzoo.utils.conversions import parallel_to_aec_wrapper

    return parallel_to_aec_wrapper(parallel_env(max_cycles, **kwargs))


def env(max_cycles: int = MAX_CYCLES, **kwargs: Any) -> Any:
    """The AEC view behind PettingZoo's ``OrderEnforcingWrapper``."""
    from pettingzoo.utils import wrappers

    return wrappers.OrderEnforcingWrapper(raw_env(max_cycles, **kwargs))
