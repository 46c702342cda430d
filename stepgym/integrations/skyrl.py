"""Any stepgym env as a `SkyRL-gym <https://pypi.org/project/skyrl-gym/>`_ text env.

Needs the optional extra ``skyrl``: ``pip install "stepgym[skyrl]"``.

:class:`StepgymTextEnv` is a ``skyrl_gym.envs.base_text_env.BaseTextEnv``: SkyRL's
generator builds it with ``skyrl_gym.make(env_class, env_config=..., extras=row)``, calls
``init(prompt)`` once and ``step(llm_output)`` until ``done``. Here ``init`` resets the
stepgym env with the row's seed and answers the chat with the reset observation as the
user message; ``step`` passes the model's text to ``env.step`` as the action and answers
``observations=[{"role": "user", "content": obs}]`` (``[]`` once the episode is over, as
SkyRL's own envs do; the last observation is in ``metadata["observation"]``), the env's
step reward, and ``done`` when the env terminates or truncates, or after ``max_turns``
steps when SkyRL sets it. ``metadata`` carries the env's ``info`` keys that every stepgym
env has (``action_valid``, ``error``, ``success`` at the end) and ``terminated`` /
``truncated``.

:func:`register_skyrl_envs` registers stepgym ids with SkyRL-gym (same ids), and
:func:`skyrl_dataset` writes the rows of SkyRL's dataset format (``prompt``, ``env_class``,
``reward_spec``, ``extra_info`` with the seed) for a training run:

    >>> import skyrl_gym
    >>> from stepgym.integrations.skyrl import register_skyrl_envs, skyrl_dataset
    >>> register_skyrl_envs(["stepgym/Countdown-v0"])
    ['stepgym/Countdown-v0']
    >>> row = skyrl_dataset("stepgym/Countdown-v0", num_examples=1)[0]
    >>> env = skyrl_gym.make(row["env_class"], env_config={}, extras=row)
    >>> chat, _ = env.init(row["prompt"])
    >>> out = env.step(env.expert_action())
    >>> out["reward"], out["done"], out["metadata"]["success"]
    (1.0, True, True)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from stepgym.errors import DependencyNotInstalled, InvalidArgument
from stepgym.registration import check_trainable, list_envs, make

PIP = 'pip install "stepgym[skyrl]"'

try:
    import skyrl_gym
    from skyrl_gym.envs.base_text_env import BaseTextEnv, BaseTextEnvStepOutput
except ImportError as exc:  # one line that says what to install
    raise DependencyNotInstalled("stepgym.integrations.skyrl (SkyRL-gym envs)", PIP) from exc

__all__ = ["StepgymTextEnv", "register_skyrl_envs", "skyrl_dataset"]

ENTRY_POINT = "stepgym.integrations.skyrl:StepgymTextEnv"


def _get(mapping: Any, key: str, default: Any = None) -> Any:
    """``mapping[key]`` for dicts and OmegaConf configs alike (SkyRL passes both)."""
    if mapping is None:
        return default
    try:
        return mapping.get(key, default)
    except AttributeError:
        return default


def _kwargs_of(value: Any, where: str) -> dict[str, Any]:
    """Env kwargs given as a dict (or OmegaConf mapping) or as a JSON object string (parquet-friendly)."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"{where} must be a JSON object like '{{\"difficulty\": \"easy\"}}', "
                                  f"got {value!r}") from exc
    if isinstance(value, Mapping) or hasattr(value, "items"):
        return {str(k): v for k, v in value.items()}
    raise InvalidArgument(f"{where} must be a dict of env keyword arguments, got {value!r}")


class StepgymTextEnv(BaseTextEnv):
    """A SkyRL-gym ``BaseTextEnv`` that plays one episode of a stepgym env.

    Args:
        env_config: SkyRL's per-env-class config (``environment.skyrl_gym.<env_class>``);
            may hold ``env_id`` and ``env_kwargs`` for every episode of the class.
        extras: the dataset row (SkyRL passes every column but ``prompt`` and
            ``env_class``, plus ``max_turns``): ``extra_info.seed`` is the episode's seed,
            ``extra_info.env_kwargs`` (dict or JSON string) adds env kwargs, ``max_turns``
            ends the episode early.
        env_id: the stepgym env id (set by :func:`register_skyrl_envs`); else taken from
            ``env_config`` or ``extras["extra_info"]``.

    The seed defaults to 0 when the row has none.
    """

    def __init__(self, env_config: Any = None, extras: Mapping[str, Any] | None = None, *,
                 env_id: str | None = None) -> None:
        super().__init__()
        extras = extras or {}
        extra_info = _get(extras, "extra_info") or {}
        env_id = env_id or _get(env_config, "env_id") or _get(extra_info, "env_id")
        if not env_id:
            raise InvalidArgument("no stepgym env id: register it with register_skyrl_envs() (the SkyRL env "
                                  "class is then the stepgym id), or set env_config.env_id")
        self.env_kwargs = {**_kwargs_of(_get(env_config, "env_kwargs"), "env_config.env_kwargs"),
                           **_kwargs_of(_get(extra_info, "env_kwargs"), "extra_info.env_kwargs")}
        self.seed = int(_get(extra_info, "seed", _get(extras, "seed", 0)) or 0)
        max_turns = _get(extras, "max_turns")
        self.max_turns = int(max_turns) if max_turns else 0  # 0: the env's own step limit ends the episode
        self.env_id = env_id
        self.env = make(env_id, **self.env_kwargs)
        self.observation: str | None = None
        self.done = False
        self.total_reward = 0.0
        self.success = False
        self.invalid_actions = 0

    def init(self, prompt: list[dict[str, str]] | None = None) -> tuple[list[dict[str, str]], dict[str, Any]]:
        """Reset the env; the chat is ``prompt``'s system messages, then the reset observation as the user turn."""
        obs, info = self.env.reset(seed=self.seed)
        self.observation = obs
        self.turns = 0
        self.done = False
        self.total_reward = 0.0
        self.success = False
        self.invalid_actions = 0
        system = [dict(m) for m in (prompt or []) if _get(m, "role") == "system"]
        return [*system, {"role": "user", "content": obs}], {"seed": self.seed, "env_id": self.env_id}

    def step(self, action: str) -> BaseTextEnvStepOutput:
        """One env step with the model's whole output as the action."""
        if self.observation is None or self.done:
            why = "init() was not called" if self.observation is None else "the episode is over"
            return BaseTextEnvStepOutput(
                observations=[], reward=0.0, done=True,
                metadata={"action_valid": False, "error": f"{why}; make a new env for the next episode",
                          "terminated": False, "truncated": False, "success": self.success},
            )
        obs, reward, terminated, truncated, info = self.env.step(action if isinstance(action, str) else str(action))
        self.turns += 1
        reward = float(reward)
        self.total_reward += reward
        valid = bool(info.get("action_valid", True))
        self.invalid_actions += not valid
        cut = bool(self.max_turns) and self.turns >= self.max_turns
        self.done = bool(terminated or truncated or cut)
        self.observation = obs
        if self.done:
            self.success = bool(info.get("success", False))
        metadata = {
            "action_valid": valid,
            "error": info.get("error"),
            "terminated": bool(terminated),
            "truncated": bool(truncated) or (cut and not terminated),
            "observation": obs,
        }
        if self.done:
            metadata["success"] = self.success
        return BaseTextEnvStepOutput(
            observations=[] if self.done else [{"role": "user", "content": obs}],
            reward=reward,
            done=self.done,
            metadata=metadata,
        )

    def expert_action(self) -> str:
        """The stepgym env's expert action for the current state (for tests and demos)."""
        return self.env.unwrapped.expert_action()

    def get_metrics(self) -> dict[str, Any]:
        """The episode's ``return``, ``success``, ``steps`` and ``invalid_actions``."""
        return {"return": self.total_reward, "success": float(self.success), "steps": self.turns,
                "invalid_actions": self.invalid_actions}

    def close(self) -> None:
        """Close the stepgym env."""
        self.env.close()


def register_skyrl_envs(env_ids: Iterable[str] | None = None) -> list[str]:
    """Register stepgym env ids with SkyRL-gym, under the same ids; returns the ids registered.

    ``None`` registers every built-in stepgym env whose optional extra is installed. Ids
    already registered (by an earlier call) are left as they are; each id is checked
    first (:func:`~stepgym.registration.check_trainable`), so a typo fails here with a
    did-you-mean rather than in SkyRL's generator.

    Example:
        >>> import skyrl_gym
        >>> register_skyrl_envs(["stepgym/Wordle-v0"])
        ['stepgym/Wordle-v0']
        >>> "stepgym/Wordle-v0" in skyrl_gym.registry
        True
    """
    if env_ids is None:
        from stepgym.registration import is_available

        ids = [info.id for info in list_envs("stepgym") if is_available(info)]
    else:
        ids = [env_ids] if isinstance(env_ids, str) else list(env_ids)
    done = []
    for env_id in ids:
        if env_id not in skyrl_gym.registry:
            if env_ids is not None:
                check_trainable(env_id)
            skyrl_gym.register(id=env_id, entry_point=ENTRY_POINT, kwargs={"env_id": env_id})
        done.append(env_id)
    return done


def skyrl_dataset(env_id: str, num_examples: int, seed: int = 0, system_prompt: str | None = None,
                  **env_kwargs: Any) -> list[dict[str, Any]]:
    """Rows in SkyRL's dataset format, one episode each (seeds ``seed, seed + 1, ...``).

    Each row: ``data_source`` ("stepgym"), ``prompt`` (the reset observation as a user
    message, after ``system_prompt``), ``env_class`` (the id, as :func:`register_skyrl_envs`
    registers it), ``reward_spec`` (``{"method": "env", "ground_truth": ""}``: the env
    scores itself) and ``extra_info`` (``seed``, ``env_kwargs`` as a JSON string so the
    rows go into parquet). ``datasets.Dataset.from_list(rows).to_parquet(path)`` writes
    the file SkyRL trains on.

    Example:
        >>> rows = skyrl_dataset("stepgym/Countdown-v0", num_examples=2, seed=5)
        >>> [r["extra_info"]["seed"] for r in rows], rows[0]["env_class"]
        ([5, 6], 'stepgym/Countdown-v0')
    """
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
        raise InvalidArgument(f"num_examples must be an int >= 1, got {num_examples!r}")
    env_id = check_trainable(env_id, env_kwargs, seed=seed)
    env = make(env_id, **env_kwargs)
    rows = []
    try:
        for s in range(seed, seed + num_examples):
            obs, _ = env.reset(seed=s)
            system = [{"role": "system", "content": system_prompt}] if system_prompt else []
            rows.append({
                "data_source": "stepgym",
                "prompt": [*system, {"role": "user", "content": obs}],
                "env_class": env_id,
                "reward_spec": {"method": "env", "ground_truth": ""},
                "extra_info": {"seed": s, "env_kwargs": json.dumps(env_kwargs)},
            })
    finally:
        env.close()
    return rows
