"""Connect-four as a PettingZoo environment module (text observations and actions).

``env()``, ``raw_env()`` and ``parallel_env()`` take ``max_cycles`` (default 28: four times
the board's move count), ``max_invalid``, ``invalid_action`` and ``render_mode``, described in
:mod:`stepgym.envs.pz._boardgame`.

Example:
    >>> from stepgym.envs.pz import connect_four_v0
    >>> env = connect_four_v0.env(max_cycles=10)
    >>> env.reset(seed=0)
    >>> env.step("4")
    >>> env.agent_selection
    'player_1'
    >>> par = connect_four_v0.parallel_env()
    >>> obs, infos = par.reset(seed=0)
    >>> sorted(obs)
    ['player_0', 'player_1']
"""

from __future__ import annotations

from stepgym.envs.pz._boardgame import game_module

__all__ = ["env", "raw_env", "parallel_env"]

#: Default ``max_cycles``: four times the board's move count.
MAX_CYCLES = 28

env, raw_env, parallel_env = game_module("connect_four", MAX_CYCLES)
