"""stepgym: Gymnasium-style text environments for LLM agents.

Importing ``stepgym`` registers every built-in env under ``stepgym/``::

    import gymnasium as gym
    import stepgym

    env = gym.make("stepgym/ToolUse-v0", difficulty="easy")
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.unwrapped.expert_action())

Heavy parts (wrappers, agents, the checker, vector envs) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from stepgym.core import StepEnv, StepRecord, StepResult
from stepgym.errors import (
    CheckFailed,
    DependencyNotInstalled,
    InvalidArgument,
    InvalidConfig,
    ResetNeeded,
    StepgymError,
    UnknownEnvError,
)
from stepgym.registration import EnvInfo, list_envs, make, register_builtins
from stepgym.spaces import UnicodeText

__version__ = "0.1.0"

__all__ = [
    # core types
    "StepEnv",
    "StepResult",
    "StepRecord",
    "UnicodeText",
    # registry
    "make",
    "make_vec",
    "list_envs",
    "EnvInfo",
    # checking
    "check_env",
    "run_checks",
    # errors
    "StepgymError",
    "UnknownEnvError",
    "ResetNeeded",
    "DependencyNotInstalled",
    "InvalidConfig",
    "InvalidArgument",
    "CheckFailed",
    # subpackages (lazy)
    "wrappers",
    "agents",
    "tools",
    "envs",
]

# name -> (module, attribute or None for the module itself); imported on first access.
_LAZY: dict[str, tuple[str, str | None]] = {
    "check_env": ("stepgym.checker", "check_env"),
    "run_checks": ("stepgym.checker", "run_checks"),
    "make_vec": ("stepgym.vector", "make_vec"),
    "wrappers": ("stepgym.wrappers", None),
    "agents": ("stepgym.agents", None),
    "tools": ("stepgym.tools", None),
    "envs": ("stepgym.envs", None),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        mod = importlib.import_module(module)
        value = mod if attr is None else getattr(mod, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'stepgym' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


register_builtins()
