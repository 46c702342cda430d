"""Registration of the built-in envs and a listing API over Gymnasium's registry.

Built-ins register under the ``stepgym/`` namespace with string entry points, so nothing
heavy is imported until ``gym.make``. Third-party envs register with
``gymnasium.register(id="myns/Name-v0", entry_point=...)`` and appear here too.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from stepgym.errors import DependencyNotInstalled, InvalidArgument, NotTextEnv, StepgymError, UnknownEnvError

__all__ = ["EnvInfo", "BUILTINS", "register_builtins", "list_envs", "make", "resolve_env_id", "is_available",
           "import_user_module",
           "check_trainable"]

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
    #: Needs a running env server (its address as a kwarg); ``list_envs`` lists it only when asked.
    remote: bool = False


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
        id="stepgym/Errands-v0",
        description="Long-horizon errands (10-30 steps): read a note, fetch items and a key, fill a locked container",
        max_steps=24,
        reward_range=(-0.1, 1.1),
        entry_point="stepgym.envs.errands:ErrandsEnv",
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
    EnvInfo(
        id="stepgym/OpenEnv-v0",
        description="Any OpenEnv server as a text env, e.g. one started with `stepgym serve-env` (-k base_url=...)",
        max_steps=None,
        reward_range=None,
        entry_point="stepgym.envs.openenv_client:OpenEnvEnv",
        family="remote",
        remote=True,
    ),
    EnvInfo(
        id="stepgym/OpenEnvPool-v0",
        description="Episodes spread over several OpenEnv servers; a dead server truncates its episode (-k urls=[...])",
        max_steps=None,
        reward_range=None,
        entry_point="stepgym.envs.openenv_client:OpenEnvEnv",
        family="remote",
        remote=True,
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


def list_envs(namespace: str | None = None, *, remote: bool = False) -> list[EnvInfo]:
    """Every registered env (built-ins and third-party), optionally one namespace only.

    Envs that need a running server (``stepgym/OpenEnv-v0``, ``stepgym/OpenEnvPool-v0``)
    are listed only with ``remote=True``: they cannot be built without an address.

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
            if remote or not builtin[env_id].remote:
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


def import_user_module(module: str) -> None:
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
            import_user_module(module)
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


def _one_line(text: object, limit: int = 300) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _entry_point_name(entry_point: Any) -> str:
    if isinstance(entry_point, str):
        return entry_point
    return f"{getattr(entry_point, '__module__', '?')}:{getattr(entry_point, '__qualname__', repr(entry_point))}"


def _constructor_keywords(entry_point: Any) -> tuple[list[str], bool]:
    """(keyword names the env constructor accepts, whether it takes any keyword at all).

    Follows ``**kwargs`` up the class hierarchy (a subclass forwarding to its base, as
    every stepgym env forwards ``max_steps`` to ``StepEnv``).
    """
    from gymnasium.envs.registration import load_env_creator

    try:
        creator = load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point
    except Exception:  # noqa: BLE001 - listing is best effort; the caller has the real error
        return [], True
    funcs: list[Any] = []
    if inspect.isclass(creator):
        funcs = [k.__dict__["__init__"] for k in creator.__mro__
                 if "__init__" in k.__dict__ and k not in (object, gym.Env)]
    else:
        funcs = [creator]
    names: list[str] = []
    for func in funcs:
        try:
            params = list(inspect.signature(func).parameters.values())
        except (TypeError, ValueError):
            return names, True
        if inspect.isclass(creator) and params and params[0].name == "self":
            params = params[1:]
        var_kw = False
        for prm in params:
            if prm.kind is prm.VAR_KEYWORD:
                var_kw = True
            elif prm.kind is not prm.VAR_POSITIONAL and prm.kind is not prm.POSITIONAL_ONLY and prm.name not in names:
                names.append(prm.name)
        if not var_kw:
            return names, False
    return names, True


def _is_text_space(space: Any) -> bool:
    """A ``Text`` space, or a custom space that contains strings (undeclared counts as text)."""
    import warnings

    from gymnasium import spaces

    if space is None or isinstance(space, spaces.Text):
        return True
    if isinstance(space, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary, spaces.Dict,
                          spaces.Tuple, spaces.Sequence, spaces.Graph, spaces.OneOf)):
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bool(space.contains("a"))
    except Exception:  # noqa: BLE001 - a custom space that rejects a str by raising
        return False


def _describe_space(space: Any) -> str:
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        return f"Box(shape={space.shape}, dtype={space.dtype})"
    return _one_line(space, 120)


def check_trainable(env_id: str, env_kwargs: dict[str, Any] | None = None, *, seed: int = 0,
                    expert: bool = False) -> str:
    """Check an LLM trainer can drive ``env_id``: build it once, reset it, close it.

    Resolves the id (``module:ns/Name-v0`` imports ``module``), builds the env with
    ``env_kwargs``, checks its declared observation/action spaces are text, resets it with
    ``seed`` and checks the observation is a ``str``. With ``expert=True`` also checks the
    env has an ``expert_action()`` (behaviour-cloning warm starts need one).

    Returns the bare env id. Every failure is a one-line :class:`StepgymError` that says how
    to fix it: :class:`UnknownEnvError` (typo; did-you-mean), :class:`InvalidArgument` (module
    does not import, keyword the constructor does not take, value the env rejects, no
    expert), :class:`DependencyNotInstalled` (optional extra missing), :class:`NotTextEnv`
    (observations or actions are not text).

    Example:
        >>> from stepgym.registration import check_trainable
        >>> check_trainable("stepgym/Countdown-v0")
        'stepgym/Countdown-v0'
    """
    env_id = resolve_env_id(env_id)
    if env_kwargs is None:
        env_kwargs = {}
    if not isinstance(env_kwargs, dict) or not all(isinstance(k, str) for k in env_kwargs):
        raise InvalidArgument("env kwargs must be a JSON object of keyword arguments like "
                              f"{{\"difficulty\": \"easy\"}}, got {env_kwargs!r}")
    spec = gym.spec(env_id)
    given = f" with env kwargs {_one_line(_kwargs_repr(env_kwargs), 200)}" if env_kwargs else ""
    try:
        env = make(env_id, **env_kwargs)
    except DependencyNotInstalled:
        raise
    except TypeError as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, TypeError) else exc
        msg = str(cause)
        bad = re.search(r"unexpected keyword argument '([^']+)'", msg)
        names, open_kw = _constructor_keywords(spec.entry_point)
        unknown = [] if open_kw else [k for k in env_kwargs if k not in names]
        if bad and bad.group(1) not in unknown:
            unknown.insert(0, bad.group(1))
        if not unknown and re.search(r"takes (no arguments|\d+ positional argument)", msg) and env_kwargs:
            unknown = sorted(env_kwargs)
        if unknown:
            takes = (f"takes {', '.join(names)}" if names else "takes no keyword arguments")
            what, it = ("the env kwarg", "it") if len(unknown) == 1 else ("the env kwargs", "them")
            raise InvalidArgument(
                f"{env_id} does not accept {what} {', '.join(repr(u) for u in unknown)}: its constructor "
                f"({_entry_point_name(spec.entry_point)}) {takes}. Remove {it} from the env kwargs"
                f"{' (or pass only those)' if names else ''}."
            ) from exc
        if not env_kwargs:
            raise
        raise InvalidArgument(f"could not build {env_id}{given}: TypeError: {_one_line(msg)}. "
                              "Fix the values in the env kwargs.") from exc
    except Exception as exc:  # noqa: BLE001 - a bad value, or an env that cannot be built at all
        if not env_kwargs and not isinstance(exc, (ValueError, LookupError, AssertionError, StepgymError,
                                                   gym.error.Error)):
            raise
        fix = "Fix the values in the env kwargs" if env_kwargs else "Check the env builds with `stepgym check`"
        raise InvalidArgument(f"could not build {env_id}{given}: {type(exc).__name__}: {_one_line(exc)}. "
                              f"{fix}.") from exc
    try:
        _check_text_env(env, env_id, given, seed, expert)
    finally:
        try:
            env.close()
        except Exception:  # noqa: BLE001 - closing a probe env must not hide the check's outcome
            pass
    return env_id


def _kwargs_repr(obj: Any) -> str:
    """``obj`` as JSON when it can be, else its ``repr``."""
    import json

    try:
        return json.dumps(obj)
    except (TypeError, ValueError):
        return repr(obj)


def _text_fix(env_id: str) -> str:
    return ("LLM training needs text observations and actions (str). Fix: wrap the env in a gymnasium.Wrapper "
            "that renders each observation as text and parses text actions, with gymnasium.spaces.Text "
            f"observation/action spaces, register the wrapped env and train that id instead of {env_id}.")


def _check_text_env(env: gym.Env, env_id: str, given: str, seed: int, expert: bool) -> None:
    for which in ("observation_space", "action_space"):
        try:
            space = getattr(env, which)
        except AttributeError:
            space = None
        if not _is_text_space(space):
            raise NotTextEnv(f"{env_id} has a non-text {which} {_describe_space(space)}. {_text_fix(env_id)}")
    try:
        out = env.reset(seed=seed)
    except Exception as exc:  # noqa: BLE001
        if not given and not isinstance(exc, (ValueError, LookupError, AssertionError, StepgymError)):
            raise
        fix = "Fix the values in the env kwargs" if given else "Check the env with `stepgym check`"
        raise InvalidArgument(f"{env_id}{given} failed on reset(seed={seed}): {type(exc).__name__}: "
                              f"{_one_line(exc)}. {fix}.") from exc
    if not (isinstance(out, tuple) and len(out) == 2):
        raise InvalidArgument(f"{env_id}: reset() must return (observation, info) as in Gymnasium, "
                              f"got {_one_line(repr(out), 120)}")
    obs = out[0]
    if not isinstance(obs, str):
        raise NotTextEnv(f"{env_id} returns observations of type {type(obs).__name__}, not str. {_text_fix(env_id)}")
    if expert:
        try:
            env.unwrapped.expert_action()
        except Exception as exc:  # noqa: BLE001 - only a missing expert is this check's business
            if not isinstance(exc, (AttributeError, NotImplementedError)):
                return
            raise InvalidArgument(
                f"{env_id} has no expert_action(), which behaviour cloning (stepgym sft, train --sft-episodes) needs. "
                "Train without a warm start (--sft-episodes 0), start from a policy (--init DIR), "
                "or add an expert_action() method to the env."
            ) from exc
