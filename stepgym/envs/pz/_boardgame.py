"""The shared builders behind the board-game modules (tictactoe_v0, connect_four_v0).

Like PettingZoo's own modules, each game module has ``env()`` (the AEC env behind PettingZoo's
order-enforcing wrapper), ``raw_env()`` (the bare AEC env) and ``parallel_env()`` (the parallel
view: one step is one round, ``player_0`` moves, then ``player_1``). All take:

* ``max_cycles``: after this many cycles (one move of each agent) every agent is truncated.
* ``max_invalid`` (default ``None``): forfeit (-1) after this many invalid actions in a row;
  ``None`` never forfeits.
* ``invalid_action`` (AEC only; default ``"pass"``): an invalid action loses the move and
  the turn passes, so every step is one turn and ``max_cycles`` counts cycles. ``"retry"``
  keeps the turn with the same agent, as the ``*_aec`` builders of
  :mod:`stepgym.envs.boardgames` do (then ``max_cycles`` bounds actions, two per cycle).
* ``render_mode``: ``"ansi"``, ``"human"`` or ``None``.

A win is +1 for the winner and -1 for the loser; ``env.unwrapped.expert_action()`` is a
strong move for the agent to act.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stepgym.envs.boardgames import _aec_class, _parallel_class
from stepgym.errors import InvalidConfig


def _turns(max_cycles: Any) -> int:
    if not isinstance(max_cycles, int) or isinstance(max_cycles, bool) or max_cycles < 1:
        raise InvalidConfig("max_cycles", max_cycles, "a positive int")
    return 2 * max_cycles  # two agents: a cycle is one move each


def raw_env(game: str, max_cycles: int, *, max_invalid: int | None = None, invalid_action: str = "pass",
            render_mode: str | None = None) -> Any:
    return _aec_class()(game=game, max_turns=_turns(max_cycles), max_invalid=max_invalid,
                        invalid_action=invalid_action, render_mode=render_mode)


def env(game: str, max_cycles: int, **kwargs: Any) -> Any:
    from pettingzoo.utils import wrappers

    return wrappers.OrderEnforcingWrapper(raw_env(game, max_cycles, **kwargs))


def parallel_env(game: str, max_cycles: int, *, max_invalid: int | None = None,
                 render_mode: str | None = None) -> Any:
    return _parallel_class()(game=game, max_turns=_turns(max_cycles), max_invalid=max_invalid,
                             render_mode=render_mode)


def game_module(game: str, default_max_cycles: int) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    """``(env, raw_env, parallel_env)`` of ``game``, with ``max_cycles`` defaulting to ``default_max_cycles``."""

    def game_raw_env(max_cycles: int = default_max_cycles, **kwargs: Any) -> Any:
        """The bare AEC env (see :mod:`stepgym.envs.pz._boardgame` for the arguments)."""
        return raw_env(game, max_cycles, **kwargs)

    def game_env(max_cycles: int = default_max_cycles, **kwargs: Any) -> Any:
        """The AEC env behind PettingZoo's ``OrderEnforcingWrapper``."""
        return env(game, max_cycles, **kwargs)

    def game_parallel_env(max_cycles: int = default_max_cycles, **kwargs: Any) -> Any:
        """The parallel view: one step is one round."""
        return parallel_env(game, max_cycles, **kwargs)

    return game_env, game_raw_env, game_parallel_env
