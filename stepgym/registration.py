"""Registration of the built-in envs and a listing API over Gymnasium's registry.

Built-ins register under the ``stepgym/`` namespace with string entry points, so nothing
heavy is imported until ``gym.make``. Third-party envs register with
``gymnasium.register(id="myns/Name-v0", entry_point=...)`` and appear here too.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from stepgym.errors import DependencyNotInstalled, InvalidArgument, UnknownEnvError

__all__ = ["EnvInfo", "BUILTINS", "register_builtins", "list_envs", "make", "resolve_env_id", "is_available"]

NAMESPACE = "stepgym"


@dataclass(frozen=True)
class EnvInfo:
    """What ``stepgym list`` shows about one registered env."""

    id: str
    description: str
    max_steps: int | None
    reward_range: tuple[float, float] | None
    entry_point: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: "single" for Gymnasium envs; multi-agent games list their single-agent views.
    family: str = ""
    #: pip command needed before ``make`` works (optional third-party suites), else "".
    requires: str = ""


# One entry per built-in env. Keep entries sorted by family, then name.
BUILTINS: list[EnvInfo] = [
    EnvInfo(
        id="stepgym/ToolUse-v0",
        description="Answer questions about a generated world with search, lookup and calculator tools",
        max_steps=10,
        reward_range=(0.0, 1.0),
        entry_point="stepgym.envs.tooluse:ToolUseEnv",
        family="tools",
    ),
    EnvInfo(
        id="stepgym/MultiHopQA-v0",
        description="Answer 2-4 hop questions by BM25 search over a generated encyclopedia (HotpotQA-style)",
        max_steps=10,
        reward_range=(0.0, 1.0),
        entry_point="stepgym.envs.multihopqa:MultiHopQAEnv",
        family="tools",
    ),
    EnvInfo(
        id="stepgym/Countdown-v0",
        description="Reach the target from given numbers with + - * /; the expression is verified",
        max_steps=4,
        reward_range=(0.0, 1.0),
        entry_point="stepgym.envs.countdown:CountdownEnv",
        family="puzzles",
    ),
    EnvInfo(
        id="stepgym/FrozenLake-v0",
        description="Cross a generated frozen lake to the goal without falling in a hole (slippery option)",
        max_steps=20,
        reward_range=(0.0, 1.0),
        entry_point="stepgym.envs.frozenlake:FrozenLakeEnv",
        family="puzzles",
    ),
    EnvInfo(
        id="stepgym/Sokoban-v0",
        description="Push every box onto a target in a generated text Sokoban level",
        max_steps=60,
        reward_range=(-0.1, 1.1),
        entry_point="stepgym.envs.sokoban:SokobanEnv",
        family="puzzles",
    ),
    EnvInfo(
        id="stepgym/Wordle-v0",
        description="Guess a hidden five-letter word in six tries from per-letter feedback",
        max_steps=10,
        reward_range=(0.0, 1.0),
        entry_point="stepgym.envs.wordle:WordleEnv",
        family="puzzles",
    ),
    EnvInfo(
        id="stepgym/Household-v0",
        description="ALFWorld-style household tasks (pick/place, clean, heat, cool, examine, pick two)",
        max_steps=40,
        reward_range=(0.0, 1.0),
        entry_point="stepgym.envs.household:HouseholdEnv",
        family="world",
    ),
    EnvInfo(
        id="stepgym/PaperSearch-v0",
        description="Find all papers relevant to a research query with search and citation expansion",
        max_steps=15,
        reward_range=(-1.0, 1.0),
        entry_point="stepgym.envs.papersearch:PaperSearchEnv",
        family="tools",
    ),
    EnvInfo(
        id="stepgym/ConnectFour-v0",
        description="Connect-four as text against a heuristic opponent (PettingZoo AEC version too)",
        max_steps=30,
        reward_range=(0.0, 1.0),
        entry_point="stepgym.envs.boardgames:ConnectFourEnv",
        family="games",
    ),
    EnvInfo(
        id="stepgym/Negotiation-v0",
        description="Split a pool of items with private values against a rule-based negotiator (PettingZoo parallel version too)",
        max_steps=6,
        reward_range=(0.0, 1.0),
        entry_point="stepgym.envs.negotiation:NegotiationEnv",
        family="games",
    ),
    EnvInfo(
        id="stepgym/TicTacToe-v0",
        description="Tic-tac-toe as text against a minimax opponent (PettingZoo AEC version too)",
        max_steps=12,
        reward_range=(0.0, 1.0),
        entry_point="stepgym.envs.boardgames:TicTacToeEnv",
        family="games",
    ),
    EnvInfo(
        id="stepgym/TextWorld-v0",
        description="Text adventures generated with Microsoft TextWorld (optional extra)",
        max_steps=50,
        reward_range=(0.0, 1.0),
        entry_point="stepgym.envs.textworld_adapter:TextWorldEnv",
        family="third-party",
        requires="pip install textworld",
    ),
    EnvInfo(
        id="stepgym/TextArena-v0",
        description="Single-player TextArena games (Wordle-v0 by default; optional extra)",
        max_steps=30,
        reward_range=(-1.0, 1.0),
        entry_point="stepgym.envs.textarena_adapter:TextArenaEnv",
        family="third-party",
        requires="pip install textarena",
    ),
    # -- more built-ins below this line (keep this marker) --
]


def is_available(info: EnvInfo) -> bool:
    """Whether ``make`` can build this env here (its optional extra, if any, imports)."""
    if not info.requires:
        return True
    try:
        importlib.import_module(info.entry_point.split(":")[0])
    except ImportError:
        return False
    return True


def register_builtins() -> None:
    """Register every built-in env (idempotent)."""
    for info in BUILTINS:
        if info.id in gym.registry:
            continue
        gym.register(
            id=info.id,
            entry_point=info.entry_point,
            kwargs=dict(info.kwargs),
            # StepEnv owns the step limit, so `success` is reported on truncation too.
            max_episode_steps=None,
        )


def list_envs(namespace: str | None = None) -> list[EnvInfo]:
    """Every registered env (built-ins and third-party), optionally one namespace only.

    Example:
        >>> import stepgym
        >>> "stepgym/ToolUse-v0" in [e.id for e in stepgym.list_envs("stepgym")]
        True
    """
    builtin = {b.id: b for b in BUILTINS}
    out: list[EnvInfo] = []
    for env_id, spec in sorted(gym.registry.items()):
        if namespace is not None and spec.namespace != namespace:
            continue
        if env_id in builtin:
            out.append(builtin[env_id])
            continue
        ep = spec.entry_point if isinstance(spec.entry_point, str) else getattr(spec.entry_point, "__qualname__", "?")
        out.append(
            EnvInfo(
                id=env_id,
                description="",
                max_steps=spec.max_episode_steps,
                reward_range=None,
                entry_point=str(ep),
                kwargs=dict(spec.kwargs),
                family="gymnasium" if spec.namespace is None else str(spec.namespace),
            )
        )
    return out


def _import_user_module(module: str) -> None:
    """Import the module of a ``module:id`` spec; like ``python -m``, look in the cwd too.

    The ``stepgym`` console script does not put the working directory on ``sys.path``,
    so ``stepgym train --env mypkg.envs:ns/X-v0`` would not find a local ``mypkg``.
    """
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        cwd = os.getcwd()
        top = module.split(".")[0]
        if exc.name not in (module, top) or cwd in sys.path or "" in sys.path:
            raise
        sys.path.append(cwd)
        importlib.import_module(module)


def resolve_env_id(env_id: str) -> str:
    """Import the module of a ``module:ns/Name-v0`` id and check the id is registered.

    Returns the bare id. Raises :class:`UnknownEnvError` with close matches otherwise.
    """
    if not isinstance(env_id, str) or not env_id:
        raise InvalidArgument(f"env id must be a non-empty string like 'stepgym/ToolUse-v0', got {env_id!r}")
    if ":" in env_id:
        module, _, env_id = env_id.partition(":")
        try:
            _import_user_module(module)
        except ImportError as exc:
            raise InvalidArgument(
                f"could not import module {module!r} to register {env_id!r}: {exc}. "
                "Check the module is installed (or on PYTHONPATH) and spelled as in 'module:ns/Name-v0'."
            ) from exc
    if env_id not in gym.registry:
        raise UnknownEnvError(env_id, gym.registry.keys())
    return env_id


def make(env_id: str, **kwargs: Any) -> gym.Env:
    """``gymnasium.make`` with stepgym's errors (did-you-mean, missing extras).

    Accepts Gymnasium's ``module:ns/Name-v0`` form for third-party envs.

    Example:
        >>> import stepgym
        >>> env = stepgym.make("stepgym/ToolUse-v0", difficulty="easy")
        >>> obs, info = env.reset(seed=0)
    """
    env_id = resolve_env_id(env_id)
    for b in BUILTINS:
        if b.id == env_id and b.requires:
            module = b.entry_point.split(":")[0]
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise DependencyNotInstalled(env_id, b.requires) from exc
    return gym.make(env_id, **kwargs)
