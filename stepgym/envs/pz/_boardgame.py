"""The shared builders behind the board-game modules (tictactoe_v0, connect_four_v0)."""

from __future__ import annotations

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
