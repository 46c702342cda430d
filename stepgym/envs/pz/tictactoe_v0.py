"""Tic-tac-toe as a PettingZoo environment module (text observations and actions).

Like PettingZoo's own modules: ``env()`` is the AEC env behind PettingZoo's order-enforcing
wrapper, ``raw_env()`` the bare AEC env, ``parallel_env()`` the parallel view (one step is
one round: ``player_0`` moves, then ``player_1``). All take:

* ``max_cycles`` (default 36): after this many cycles (one move of each agent) every agent
  is truncated.
* ``max_invalid`` (default ``None``): forfeit (-1) after this many invalid actions in a row;
  ``None`` never forfeits.
* ``invalid_action`` (AEC only; default ``"pass"``): an invalid action loses the move and
  the turn passes, so every step is one turn and ``max_cycles`` counts cycles. ``"retry"``
  keeps the turn with the same agent, as :func:`stepgym.envs.boardgames.tictactoe_aec`
  does (then ``max_cycles`` bounds actions, two per cycle).
* ``render_mode``: ``"ansi"``, ``"human"`` or ``None``.

A win is +1 for the winner and -1 for the loser; ``env.unwrapped.expert_action()`` is a
strong move for the agent to act.

Example:
    >>> from stepgym.envs.pz import tictactoe_v0
    >>> env = tictactoe_v0.env(max_cycles=10)
    >>> env.reset(seed=0)
    >>> env.step("5")
    >>> env.agent_selection
    'player_1'
    >>> par = tictactoe_v0.parallel_env()
    >>> obs, infos = par.reset(seed=0)
    >>> sorted(obs)
    ['player_0', 'player_1']
"""

from __future__ import annotations

from typing import Any

from stepgym.envs.pz import _boardgame

__all__ = ["env", "raw_env", "parallel_env"]

GAME = "tictactoe"
#: Default ``max_cycles``: four times the board's move count.
MAX_CYCLES = 36


def raw_env(max_cycles: int = MAX_CYCLES, **kwargs: Any) -> Any:
    """The bare AEC env (see the module docs for the arguments)."""
    return _boardgame.raw_env(GAME, max_cycles, **kwargs)


def env(max_cycles: int = MAX_CYCLES, **kwargs: Any) -> Any:
    """The AEC env behind PettingZoo's ``OrderEnforcingWrapper``."""
    return _boardgame.env(GAME, max_cycles, **kwargs)


def parallel_env(max_cycles: int = MAX_CYCLES, **kwargs: Any) -> Any:
    """The parallel view: one step is one round (see the module docs)."""
    return _boardgame.parallel_env(GAME, max_cycles, **kwargs)
