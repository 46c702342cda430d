"""Adapters that let other RL frameworks drive stepgym envs (see docs/integrations.md).

Each adapter lives in its own module and imports its framework there, so ``import stepgym``
never loads them; importing an adapter without its framework raises
:class:`~stepgym.errors.DependencyNotInstalled` with the pip command.

* :mod:`stepgym.integrations.verifiers_env` — ``load_environment(env_id=...)``: a
  verifiers ``MultiTurnEnv`` (``vf-eval``, prime-rl) over any stepgym env id
  (``pip install "stepgym[verifiers]"``).
* :mod:`stepgym.integrations.skyrl` — ``StepgymTextEnv``: a SkyRL-gym ``BaseTextEnv`` over
  any stepgym env id, registered with ``register_skyrl_envs()`` (``pip install "stepgym[skyrl]"``).
"""
