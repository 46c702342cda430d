"""stepgym's multi-agent games as PettingZoo environment modules.

Each module follows the layout of PettingZoo's own (``pettingzoo.butterfly.pistonball_v6``):
``env(**kwargs)`` (the AEC env with PettingZoo's order-enforcing wrapper), ``raw_env(**kwargs)``
(the bare AEC env) and ``parallel_env(**kwargs)``, each taking ``max_cycles`` and the game's
own keyword arguments, so PettingZoo's tests (``max_cycles_test``, ``parallel_api_test``)
and tools that take a module run on them:

* :mod:`stepgym.envs.pz.tictactoe_v0`
* :mod:`stepgym.envs.pz.connect_four_v0`
* :mod:`stepgym.envs.pz.negotiation_v0`

A cycle is one move of every agent. Observations and actions are text
(:class:`~stepgym.spaces.UnicodeText`).
"""

__all__ = ["tictactoe_v0", "connect_four_v0", "negotiation_v0"]
