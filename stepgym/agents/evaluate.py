"""Evaluate an agent on an env: episodes in parallel over a Gymnasium vector env.

``stepgym eval`` is a thin layer over :func:`evaluate`. Episode ``k`` always runs on seed
``seed + k``, whatever the number of parallel envs, so two agents evaluated with the same
seed face the same tasks and their scores compare directly. An episode whose agent raises
(a server error, a prompt too long for the model) ends there as a failure with its error
recorded; the other episodes go on.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from stepgym.agents.base import BaseAgent, as_agent
from stepgym.errors import InvalidArgument

__all__ = [
    "evaluate",
    "EvalResult",
    "EpisodeResult",
    "EvalProgress",
    "wilson_interval",
    "make_vector_env",
    "slot_info",
]

_Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval of a success rate (95% by default); ``(0, 1)`` when ``n == 0``.

    Unlike the normal approximation it stays inside [0, 1] and is sensible for 0/n and n/n.

    Example:
        >>> lo, hi = wilson_interval(8, 10)
        >>> round(lo, 3), round(hi, 3)
        (0.49, 0.943)
    """
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    # The bounds are exactly 0 and 1 at 0/n and n/n; floating point would give 1e-17 off.
    return (0.0 if successes == 0 else lo), (1.0 if successes == n else hi)


@dataclass(slots=True)
class EpisodeResult:
    """One evaluated episode."""

    episode: int
    seed: int
    success: bool
    episode_return: float
    steps: int
    invalid_steps: int
    tokens: float
    #: why the episode ended early (``"APIError: ..."``) when the agent failed; None otherwise.
    error: str | None = None


@dataclass
class EvalResult:
    """All episodes of one agent on one env, with the summary statistics ``stepgym eval`` prints."""

    env_id: str
    agent: str
    episodes: list[EpisodeResult] = field(default_factory=list)
    wall_s: float = 0.0
    #: True when token counts are chars/4 estimates (the agent has no tokenizer).
    tokens_estimated: bool = True

    @property
    def n(self) -> int:
        return len(self.episodes)

    @property
    def successes(self) -> int:
        return sum(e.success for e in self.episodes)

    @property
    def errors(self) -> int:
        """Episodes that ended on an agent error (counted as failures)."""
        return sum(e.error is not None for e in self.episodes)

    @property
    def success_rate(self) -> float:
        return self.successes / self.n if self.n else 0.0

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.n)

    @property
    def mean_return(self) -> float:
        return float(np.mean([e.episode_return for e in self.episodes])) if self.n else 0.0

    @property
    def mean_steps(self) -> float:
        return float(np.mean([e.steps for e in self.episodes])) if self.n else 0.0

    @property
    def total_steps(self) -> int:
        return sum(e.steps for e in self.episodes)

    @property
    def invalid_action_rate(self) -> float:
        steps = self.total_steps
        return sum(e.invalid_steps for e in self.episodes) / steps if steps else 0.0

    @property
    def tokens_per_step(self) -> float:
        steps = self.total_steps
        return sum(e.tokens for e in self.episodes) / steps if steps else 0.0

    def summary(self) -> dict[str, Any]:
        """The summary as a JSON-ready dict (what ``--json`` writes per env and agent)."""
        lo, hi = self.ci95
        return {
            "env": self.env_id,
            "agent": self.agent,
            "episodes": self.n,
            "successes": self.successes,
            "errors": self.errors,
            "success_rate": self.success_rate,
            "success_ci95": [lo, hi],
            "mean_return": self.mean_return,
            "mean_steps": self.mean_steps,
            "invalid_action_rate": self.invalid_action_rate,
            "tokens_per_step": self.tokens_per_step,
            "tokens_estimated": self.tokens_estimated,
            "wall_s": self.wall_s,
        }

    def to_dict(self) -> dict[str, Any]:
        """Summary plus every episode."""
        return self.summary() | {"per_episode": [asdict(e) for e in self.episodes]}


def _py(value: Any) -> Any:
    """numpy scalars and arrays to plain Python values (info dicts come back from vector envs as numpy)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def slot_info(infos: dict[str, Any], i: int) -> dict[str, Any]:
    """The info dict of sub-env ``i`` out of a Gymnasium vector env's batched infos.

    Example:
        >>> import numpy as np
        >>> slot_info({"a": np.array([1, 2]), "_a": np.array([False, True])}, 1)
        {'a': 2}
    """
    out: dict[str, Any] = {}
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        mask = infos.get("_" + key)
        if isinstance(value, dict):
            if mask is None or bool(mask[i]):
                out[key] = slot_info(value, i)
            continue
        if mask is not None and not bool(mask[i]):
            continue
        try:
            out[key] = _py(value[i])
        except (TypeError, IndexError, KeyError):
            out[key] = _py(value)
    return out


def make_vector_env(
    env_id: str,
    num_envs: int,
    env_kwargs: dict[str, Any] | None = None,
    wrappers: Sequence[Callable[[Any], Any]] | None = None,
) -> Any:
    """A synchronous vector env of ``num_envs`` copies, through ``stepgym.make_vec``.

    Sync mode, because the expert reads the sub-envs' state (``.envs``), and Gymnasium's
    next-step autoreset; :func:`evaluate` resets finished sub-envs itself with the next
    episode's seed.
    """
    import gymnasium as gym

    from stepgym.registration import make, resolve_env_id

    env_id = resolve_env_id(env_id)
    kwargs = dict(env_kwargs or {})
    try:
        from stepgym.vector import make_vec
    except ImportError:  # an install without the vector module: plain Gymnasium
        make_vec = None
    if make_vec is not None:
        return make_vec(env_id, num_envs, "sync", wrappers=list(wrappers or ()), autoreset_mode="next_step", **kwargs)

    def one() -> Any:
        env = make(env_id, **kwargs)
        for w in wrappers or ():
            env = w(env)
        return env

    return gym.vector.SyncVectorEnv([one for _ in range(num_envs)], autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)


@dataclass(slots=True)
class EvalProgress:
    """Where a running :func:`evaluate` stands, passed to its ``on_step`` callback."""

    done: int
    total: int
    successes: int
    errors: int
    steps: int
    #: tokens generated so far (characters/4 when ``tokens_estimated``).
    tokens: float
    tokens_estimated: bool
    elapsed_s: float
    #: the episodes that ended in this step (``error`` set where the agent failed).
    finished: list[EpisodeResult] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float | None:
        """Generated tokens per second; None when the agent does not count tokens."""
        if self.tokens_estimated or self.elapsed_s <= 0:
            return None
        return self.tokens / self.elapsed_s


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _snapshot(agent: Any) -> dict[int, list[Any]] | None:
    memory = getattr(agent, "memory", None)
    return {k: list(v) for k, v in memory.items()} if isinstance(memory, dict) else None


def _counts(agent: Any, actions: Sequence[str | None], reported: Any = None) -> tuple[list[float], bool]:
    """Tokens per action: the agent's counts, else characters/4 (and True: estimated)."""
    counts = reported if reported is not None else getattr(agent, "last_token_counts", None)
    if getattr(agent, "counts_tokens", False) and counts is not None and len(counts) == len(actions):
        return [float(c) for c in counts], False
    return [len(a or "") / 4 for a in actions], True


def _act(
    agent: Any, observations: list[str], infos: list[dict[str, Any]], slots: list[int], on_error: str
) -> tuple[list[str | None], list[float], bool, dict[int, str]]:
    """``(actions, tokens, estimated, errors)`` for one step of the running episodes.

    ``actions[j]`` is None where entry ``j`` failed and ``errors[j]`` says why. An agent
    error of a batch of several episodes is pinned to its episode: from the exception's
    ``actions``/``errors`` when it carries them (the OpenAI agent's
    :class:`~stepgym.agents.openai.BatchAPIError`), else by asking again one episode at a
    time, with the agent's chat memory as it was before the failed call.
    """
    from stepgym.agents.simple import UserQuit

    snapshot = _snapshot(agent) if on_error == "record" and len(slots) > 1 else None
    try:
        acts = agent.act_batch(observations, infos, slots=slots)
    except (UserQuit, InvalidArgument):
        raise
    except Exception as exc:
        if on_error != "record":
            raise
        partial, errs = getattr(exc, "actions", None), getattr(exc, "errors", None)
        if isinstance(partial, list) and len(partial) == len(slots) and isinstance(errs, dict):
            got: list[str | None] = [a if isinstance(a, str) else None for a in partial]
            tokens, estimated = _counts(agent, got, getattr(exc, "token_counts", None))
            return got, tokens, estimated, {j: _describe(errs.get(j, exc)) for j, a in enumerate(got) if a is None}
        if len(slots) == 1:
            return [None], [0.0], False, {0: _describe(exc)}
        if snapshot is not None:
            agent.memory.clear()
            agent.memory.update(snapshot)
        got, tokens, errors, estimated = [], [], {}, False
        for j, (o, info, slot) in enumerate(zip(observations, infos, slots, strict=True)):
            one, n, est, err = _act(agent, [o], [info], [slot], on_error)
            got.append(one[0])
            tokens.append(n[0])
            estimated |= est
            if err:
                errors[j] = err[0]
        return got, tokens, estimated, errors
    acts = list(acts)
    if len(acts) != len(slots):
        raise InvalidArgument(f"{agent.name} returned {len(acts)} actions for {len(slots)} observations")
    tokens, estimated = _counts(agent, acts)
    return acts, tokens, estimated, {}


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def evaluate(
    env_id: str,
    agent: Any,
    *,
    episodes: int = 10,
    seed: int = 0,
    num_envs: int = 8,
    env_kwargs: dict[str, Any] | None = None,
    record_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[int], None] | None = None,
    wrappers: Sequence[Callable[[Any], Any]] | None = None,
    on_error: str = "record",
    on_step: Callable[[EvalProgress], None] | None = None,
) -> EvalResult:
    """Run ``episodes`` episodes of ``agent`` on ``env_id`` and collect the statistics.

    Args:
        env_id: a registered id, or ``module:ns/Name-v0`` to import a third-party module first.
        agent: an agent from :func:`~stepgym.agents.make_agent`, any object with
            ``act``/``act_batch``, or a plain ``str -> str`` callable.
        episodes: number of episodes; episode ``k`` uses seed ``seed + k``.
        seed: seed of episode 0.
        num_envs: episodes run side by side (one ``act_batch`` call per step for all of them).
        env_kwargs: keyword arguments for the env constructor.
        record_dir: if set, every step is written to ``DIR/<agent>__<env>.jsonl`` in the
            format of :class:`~stepgym.wrappers.RecordTrajectories` (``stepgym replay`` shows
            it); an episode's lines are written when it ends.
        progress: called with the number of finished episodes after each one.
        wrappers: callables ``env -> env`` applied to each sub-env (innermost first), e.g.
            ``functools.partial(HistoryPrompt)`` so the observation carries the history.
        on_error: ``"record"`` (default): an episode whose agent raises ends as a failure
            with ``error`` set (``EvalResult.errors`` counts them) and the others go on;
            ``"raise"``: the first agent error ends the evaluation.
        on_step: called with an :class:`EvalProgress` after every step (live progress).

    Example:
        >>> from stepgym.agents import make_agent
        >>> res = evaluate("stepgym/ToolUse-v0", make_agent("expert"), episodes=4, num_envs=2)
        >>> res.success_rate
        1.0
    """
    if not isinstance(episodes, int) or episodes < 1:
        raise InvalidArgument(f"episodes must be a positive int, got {episodes!r}")
    if not isinstance(num_envs, int) or num_envs < 1:
        raise InvalidArgument(f"num_envs must be a positive int, got {num_envs!r}")
    if on_error not in ("record", "raise"):
        raise InvalidArgument(f"on_error must be 'record' or 'raise', got {on_error!r}")
    agent = as_agent(agent)
    from stepgym.agents.simple import HumanAgent

    if isinstance(agent, HumanAgent):
        num_envs = 1  # one person plays one episode at a time
    n = min(num_envs, episodes)
    start = time.perf_counter()
    vec = make_vector_env(env_id, n, env_kwargs, wrappers)
    if hasattr(agent, "envs"):
        agent.envs = list(vec.envs)  # the expert (and random fallback, human hints) read the sub-envs
    record = None
    if record_dir is not None:
        os.makedirs(record_dir, exist_ok=True)
        path = os.path.join(
            os.fspath(record_dir), f"{_safe_name(agent.name)}__{_safe_name(env_id.split(':')[-1])}.jsonl"
        )
        record = open(path, "w", encoding="utf-8")
    result = EvalResult(env_id=env_id.split(":")[-1], agent=agent.name)
    estimated = False
    try:
        obs_t, infos = vec.reset(seed=[seed + i for i in range(n)])
        observations = list(obs_t)
        slot_infos = [slot_info(infos, i) for i in range(n)]
        agent.reset()
        slot_ep = list(range(n))
        next_ep = n
        active = [True] * n
        acc = [_Acc() for _ in range(n)]
        steps_done, tokens_done = 0, 0.0

        def finish(i: int, success: bool, error: str | None) -> None:
            nonlocal next_ep
            ep, a = slot_ep[i], acc[i]
            result.episodes.append(
                EpisodeResult(ep, seed + ep, success, a.ret, a.steps, a.invalid, a.tokens, error)
            )
            if record is not None and a.lines:
                record.write("".join(a.lines))
                record.flush()
            acc[i] = _Acc()
            agent.reset(i)
            if progress is not None:
                progress(len(result.episodes))
            if next_ep < episodes:
                slot_ep[i], seeds[i], mask[i] = next_ep, seed + next_ep, True
                next_ep += 1
            else:
                active[i] = False

        while any(active):
            before = len(result.episodes)
            idx = [i for i in range(n) if active[i]]
            acts, counts, est, failed = _act(
                agent, [observations[i] for i in idx], [slot_infos[i] for i in idx], idx, on_error
            )
            estimated |= est
            mask = np.zeros(n, dtype=np.bool_)
            seeds: list[int | None] = [None] * n
            for j, error in sorted(failed.items()):
                finish(idx[j], False, error)
            live = [(j, i) for j, i in enumerate(idx) if acts[j] is not None]
            # idle slots (no episodes left, or their episode just failed) step with a no-op;
            # their results are ignored
            actions = [""] * n
            for j, i in live:
                actions[i] = acts[j]
            if live:
                obs_t, rewards, terms, truncs, step_infos = vec.step(tuple(actions))
                new_obs = list(obs_t)
            else:
                new_obs, step_infos = list(observations), {}
            for j, i in live:
                info = slot_info(step_infos, i)
                a = acc[i]
                a.ret += float(rewards[i])
                a.steps += 1
                a.invalid += info.get("action_valid") is False
                a.tokens += float(counts[j])
                if record is not None:
                    a.lines.append(
                        _record_line(
                            {
                                "run": agent.name,
                                "episode": slot_ep[i],
                                "step": a.steps - 1,
                                "env_id": result.env_id,
                                "seed": seed + slot_ep[i],
                                "prompt": observations[i],
                                "action": acts[j],
                                "observation": _final_obs(new_obs[i], step_infos, i),
                                "reward": float(rewards[i]),
                                "terminated": bool(terms[i]),
                                "truncated": bool(truncs[i]),
                                "info": {k: v for k, v in info.items() if k != "messages"},
                            }
                        )
                    )
                slot_infos[i] = info
                steps_done += 1
                tokens_done += float(counts[j])
                if terms[i] or truncs[i]:
                    finish(i, bool(info.get("success", False)), None)
            observations = new_obs
            if mask.any():
                obs_t, reset_infos = vec.reset(seed=seeds, options={"reset_mask": mask})
                for i in np.flatnonzero(mask):
                    observations[i] = obs_t[i]
                    slot_infos[i] = slot_info(reset_infos, int(i))
            if on_step is not None:
                on_step(
                    EvalProgress(
                        done=len(result.episodes),
                        total=episodes,
                        successes=result.successes,
                        errors=result.errors,
                        steps=steps_done,
                        tokens=tokens_done,
                        tokens_estimated=estimated,
                        elapsed_s=time.perf_counter() - start,
                        finished=result.episodes[before:],
                    )
                )
    finally:
        vec.close()
        if record is not None:
            record.close()
    result.episodes.sort(key=lambda e: e.episode)
    result.wall_s = time.perf_counter() - start
    result.tokens_estimated = estimated
    return result


@dataclass
class _Acc:
    ret: float = 0.0
    steps: int = 0
    invalid: int = 0
    tokens: float = 0.0
    lines: list[str] = field(default_factory=list)


def _record_line(row: dict[str, Any]) -> str:
    # ensure_ascii escapes lone surrogates a model may emit, so every line is valid UTF-8 JSON.
    return json.dumps(row, ensure_ascii=True, default=str) + "\n"


def _final_obs(obs: str, infos: dict[str, Any], i: int) -> str:
    """The observation the step returned (same-step autoreset keeps it in ``final_obs``)."""
    final = infos.get("final_obs")
    mask = infos.get("_final_obs")
    if final is not None and mask is not None and bool(mask[i]):
        return str(final[i])
    return str(obs)


def agent_label(agent: BaseAgent) -> str:
    """The agent's name for tables."""
    return getattr(agent, "name", type(agent).__name__)
