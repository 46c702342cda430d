"""Rollouts: prompt building, a generation backend interface, and a rollout collector interface.

Two seams keep scale-out a matter of adding classes, not rewriting this file:

* :class:`Generator` — turns prompt token ids into :class:`~steppo.sampling.Generation`
  (response ids + their log-probs). :class:`LocalGenerator` runs the in-process
  :class:`~steppo.sampling.Sampler`; :class:`~steppo.remote_generator.OpenAIServerGenerator`
  asks an OpenAI-compatible server (vLLM, SGLang, ``stepgym serve``) and returns the same
  objects.
* :class:`RolloutCollector` — runs episodes for a list of task seeds and returns a
  :class:`RolloutBatch` of :class:`~stepgym.core.StepRecord`. :class:`InProcessCollector`
  steps a pool of envs in this process, one batched generation per env step across every
  live episode; a Ray-backed collector would shard the seeds over remote workers that
  each run an ``InProcessCollector``.

The collector drives its own pool of envs (``reset(seed=...)`` per episode) rather than a
Gymnasium autoreset vector env because group algorithms must pick each episode's seed.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from stepgym.agents.evaluate import EvalProgress
from stepgym.core import StepRecord
from stepgym.errors import InvalidArgument
from stepgym.prompts import ChatPromptBuilder, PromptBuilder

__all__ = [
    "SamplingParams",
    "Generator",
    "LocalGenerator",
    "PromptBuilder",
    "ChatPromptBuilder",
    "EpisodeStats",
    "RolloutBatch",
    "RolloutCollector",
    "InProcessCollector",
    "make_env_fn",
]


@dataclass
class SamplingParams:
    """How one step is generated."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    greedy: bool = False
    seed: int | None = None


class Generator(ABC):
    """Generation backend: prompt ids in, exact response ids + log-probs out.

    Subclasses: :class:`LocalGenerator` (in-process model) and
    :class:`~steppo.remote_generator.OpenAIServerGenerator` (an inference server).
    """

    tokenizer: Any
    #: the log-probs returned are those the learner computes for the same tokens (to float32
    #: round-off). A backend whose are not (another precision, another engine, other weights)
    #: sets False, and the trainer then recomputes the old log-probs with its own weights.
    logprobs_exact: bool = True

    @abstractmethod
    def generate(self, prompts: list[list[int]], params: SamplingParams,
                 sessions: list[Any] | None = None) -> list[Any]:
        """One :class:`~steppo.sampling.Generation` per prompt.

        ``sessions`` holds one key per prompt (its episode): a backend may keep per-episode
        state between calls (a KV cache) until :meth:`end_session`; others ignore it.
        """

    def set_seed(self, seed: int) -> None:  # pragma: no cover - backends without RNG ignore it
        """Reseed sampling (called once per iteration so resumed runs sample the same)."""

    def end_session(self, key: Any) -> None:
        """Drop the state kept for one episode (no-op for backends without sessions)."""

    def bootstrap_values(self, prompts: list[list[int]], sessions: list[Any] | None = None) -> list[float] | None:
        """V(s) of prompts whose episode was cut off, if this backend reads values (else None).

        The collector calls it for truncated episodes before ending their session, so a
        backend with a KV cache prefills only the last observation; the trainer computes
        the missing ones itself.
        """
        return None

    def reset_sessions(self) -> None:
        """Drop the state kept for every episode (no-op for backends without sessions)."""

    def sync_weights(self, policy: Any, folder: str) -> bool:
        """Make the backend generate with ``policy``'s current weights; False when it already does.

        The trainer calls it after setup and after each update. An in-process backend shares
        the policy's weights (nothing to do); a server-backed one writes them under ``folder``
        and tells the server to load them
        (:class:`~steppo.remote_generator.OpenAIServerGenerator`).
        """
        return False


class LocalGenerator(Generator):
    """The in-process policy model, through :class:`~steppo.sampling.Sampler`.

    Args:
        sampler: the sampler of the policy being trained.
        values: ``"step"``/``"token"`` to read the shared value head during generation.
        batch_size: at most this many prompts per generation call.
        reuse_cache: keep each episode's KV cache between its steps (see
            :meth:`~steppo.sampling.Sampler.generate`), so a step prefills only the tokens its
            prompt adds to the previous prompt + response.

    Example:
        >>> from stepgym.models import load_model
        >>> from steppo.policy import Policy
        >>> from steppo.sampling import Sampler
        >>> lm, tok = load_model("tiny")
        >>> gen = LocalGenerator(Sampler(Policy(lm, tok)))
        >>> out = gen.generate([[1, 2, 3]], SamplingParams(max_new_tokens=3, seed=0))
        >>> len(out[0].response_ids) <= 3
        True
    """

    def __init__(self, sampler: Any, values: str = "none", batch_size: int = 16, reuse_cache: bool = True):
        import torch

        self.sampler = sampler
        self.reuse_cache = bool(reuse_cache)
        self.tokenizer = sampler.policy.tokenizer
        self.values = values
        self.batch_size = batch_size
        self._gen = torch.Generator(device="cpu")
        self._gen.manual_seed(0)

    @property  # type: ignore[override]
    def logprobs_exact(self) -> bool:
        """True when the policy computes in float32 (bf16 sampling differs from the learner's pass)."""
        import torch

        return self.sampler.policy.compute_dtype == torch.float32

    def set_seed(self, seed: int) -> None:
        self._gen.manual_seed(int(seed))

    def end_session(self, key: Any) -> None:
        self.sampler.end_session(key)

    def reset_sessions(self) -> None:
        self.sampler.reset_sessions()

    def bootstrap_values(self, prompts: list[list[int]], sessions: list[Any] | None = None) -> list[float] | None:
        if self.values == "none":
            return None
        # a one-token greedy step: its value is read at the last prompt token (no RNG used)
        gens = self.sampler.generate(prompts, max_new_tokens=1, greedy=True, values="step",
                                     sessions=sessions if self.reuse_cache else None)
        return [g.step_value for g in gens]

    def generate(self, prompts: list[list[int]], params: SamplingParams,
                 sessions: list[Any] | None = None) -> list[Any]:
        if not self.reuse_cache:
            sessions = None
        if params.seed is not None:
            self.set_seed(params.seed)
        out: list[Any] = []
        # similar lengths batch together: less padding, longer shared prefixes
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        res: dict[int, Any] = {}
        for k in range(0, len(order), self.batch_size):
            idx = order[k:k + self.batch_size]
            gens = self.sampler.generate([prompts[i] for i in idx], max_new_tokens=params.max_new_tokens,
                                         temperature=params.temperature, top_p=params.top_p,
                                         generator=self._gen if self.sampler.policy.device.type == "cpu" else None,
                                         values=self.values, greedy=params.greedy,
                                         sessions=None if sessions is None else [sessions[i] for i in idx])
            res.update(zip(idx, gens))
        out = [res[i] for i in range(len(prompts))]
        return out


@dataclass
class EpisodeStats:
    """Summary of one finished episode."""

    traj_id: int
    group_id: int
    seed: int
    episode_return: float
    length: int
    success: bool
    invalid_actions: int
    terminated: bool
    truncated: bool


@dataclass
class RolloutBatch:
    """Step records of a set of episodes plus their summaries and generation timing."""

    steps: list[StepRecord] = field(default_factory=list)
    episodes: list[EpisodeStats] = field(default_factory=list)
    generated_tokens: int = 0
    generation_s: float = 0.0
    env_s: float = 0.0
    wall_s: float = 0.0

    def metrics(self, prefix: str = "charts") -> dict[str, float]:
        """Episode statistics under stable names (``charts/success_rate`` ...)."""
        n = max(1, len(self.episodes))
        nsteps = max(1, len(self.steps))
        return {
            f"{prefix}/success_rate": sum(e.success for e in self.episodes) / n,
            f"{prefix}/episode_return": sum(e.episode_return for e in self.episodes) / n,
            f"{prefix}/episode_length": sum(e.length for e in self.episodes) / n,
            f"{prefix}/invalid_action_rate": sum(e.invalid_actions for e in self.episodes) / nsteps,
        }


class RolloutCollector(ABC):
    """Collects episodes for given task seeds (one episode per seed entry)."""

    @abstractmethod
    def collect(self, seeds: Sequence[int], group_ids: Sequence[int], params: SamplingParams,
                traj_id_start: int = 0, *, on_progress: Callable[[EvalProgress], None] | None = None,
                ) -> RolloutBatch:
        """Run ``len(seeds)`` episodes (episode k uses ``seeds[k]`` and ``group_ids[k]``).

        ``on_progress`` is told where the collection stands (episodes done, successes,
        tokens/s) as it goes; :func:`stepgym.progress.episode_progress` shows it.
        """

    def close(self) -> None:
        """Release envs / workers."""


def make_env_fn(env_id: str, env_kwargs: dict[str, Any] | None = None) -> Callable[[], gym.Env]:
    """An env factory for ``env_id`` (``module:ns/Name-v0`` accepted), failing early on bad ids."""
    import stepgym

    kwargs = dict(env_kwargs or {})
    bare = stepgym.registration.resolve_env_id(env_id)

    def fn() -> gym.Env:
        return stepgym.make(bare, **kwargs)

    return fn


@dataclass
class _Episode:
    """A running episode of :class:`InProcessCollector`: its history, step records and totals."""

    index: int  # position in the collect() call's seed list
    traj_id: int
    group_id: int
    seed: int
    observations: list[str]
    actions: list[str] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    episode_return: float = 0.0
    invalid_actions: int = 0
    #: (prompt ids, prompt text, response ids) of the last step: the next prompt continues them
    previous: tuple[list[int], str, list[int]] | None = None

    def add_step(self, prompt_ids: list[int], prompt_text: str, g: Any, obs: str, reward: float,
                 terminated: bool, truncated: bool, info: dict[str, Any]) -> StepRecord:
        """Record one generated step and the env's answer to it."""
        rec_info: dict[str, Any] = {"action_valid": bool(info.get("action_valid", True)),
                                    "observation": self.observations[-1], "stop_reason": g.stop_reason,
                                    "seed": self.seed}
        if g.step_value is not None:
            rec_info["value"] = g.step_value
            rec_info["token_values"] = g.token_values
        rec = StepRecord(
            prompt_ids=prompt_ids, response_ids=list(g.response_ids), logprobs=list(g.logprobs), reward=reward,
            traj_id=self.traj_id, step_index=len(self.actions), done=terminated or truncated,
            terminated=terminated, truncated=truncated and not terminated, group_id=self.group_id,
            prompt_text=prompt_text, response_text=g.text, info=rec_info,
        )
        self.steps.append(rec)
        self.episode_return += reward
        self.invalid_actions += 0 if rec_info["action_valid"] else 1
        self.observations.append(obs)
        self.actions.append(g.text)
        self.previous = (prompt_ids, prompt_text, list(g.response_ids))
        return rec

    def stats(self, success: bool) -> EpisodeStats:
        last = self.steps[-1]
        return EpisodeStats(traj_id=self.traj_id, group_id=self.group_id, seed=self.seed,
                            episode_return=self.episode_return, length=len(self.actions), success=success,
                            invalid_actions=self.invalid_actions, terminated=last.terminated,
                            truncated=last.truncated)


class InProcessCollector(RolloutCollector):
    """Runs episodes on a pool of ``num_envs`` envs in this process.

    Every env step, the prompts of all live episodes go to the generator in one batched
    call; finished envs pick up the next pending seed.

    Args:
        env_fn: builds one env.
        generator: a :class:`Generator`.
        prompt_builder: a :class:`PromptBuilder` (its tokenizer must be the generator's).
        num_envs: envs stepped side by side.
        should_stop: polled between env steps; when it returns True the collection stops early.
        read_bootstrap: read the critic's V(s_T+1) of truncated episodes while their cache is warm.

    Example:
        >>> from stepgym.models import load_model
        >>> from steppo.policy import Policy
        >>> from steppo.sampling import Sampler
        >>> lm, tok = load_model("tiny")
        >>> col = InProcessCollector(make_env_fn("stepgym/ToolUse-v0", {"difficulty": "easy"}),
        ...     LocalGenerator(Sampler(Policy(lm, tok), stop_strings=("</tool_call>",))), ChatPromptBuilder(tok), 2)
        >>> batch = col.collect([0, 0], [0, 0], SamplingParams(max_new_tokens=8, seed=0))
        >>> len(batch.episodes), batch.steps[0].traj_id
        (2, 0)
    """

    def __init__(self, env_fn: Callable[[], gym.Env], generator: Generator, prompt_builder: PromptBuilder,
                 num_envs: int = 8, *, should_stop: Callable[[], bool] | None = None, read_bootstrap: bool = True):
        if num_envs < 1:
            raise InvalidArgument(f"num_envs must be >= 1, got {num_envs}")
        self.env_fn = env_fn
        self.generator = generator
        self.prompt_builder = prompt_builder
        self.num_envs = num_envs
        self.envs: list[gym.Env] = []
        self.should_stop = should_stop
        self.read_bootstrap = read_bootstrap

    def _env(self, k: int) -> gym.Env:
        while len(self.envs) <= k:
            self.envs.append(self.env_fn())
        return self.envs[k]

    def collect(self, seeds: Sequence[int], group_ids: Sequence[int], params: SamplingParams,
                traj_id_start: int = 0, *, on_progress: Callable[[EvalProgress], None] | None = None,
                ) -> RolloutBatch:
        if len(seeds) != len(group_ids):
            raise InvalidArgument(f"seeds and group_ids differ in length ({len(seeds)} vs {len(group_ids)})")
        t_wall = time.perf_counter()
        batch = RolloutBatch()
        if params.seed is not None:
            self.generator.set_seed(params.seed)
        gen_params = SamplingParams(params.max_new_tokens, params.temperature, params.top_p, params.greedy, None)
        pending = list(reversed(range(len(seeds))))
        episodes: dict[int, _Episode] = {}  # seed index -> episode, finished ones too
        live: dict[int, _Episode] = {}  # env slot -> its running episode

        def start(slot: int) -> None:
            k = pending.pop()
            t0 = time.perf_counter()
            obs, _ = self._env(slot).reset(seed=int(seeds[k]))
            batch.env_s += time.perf_counter() - t0
            live[slot] = episodes[k] = _Episode(k, traj_id_start + k, int(group_ids[k]), int(seeds[k]), [obs])

        self.generator.reset_sessions()
        for slot in range(min(self.num_envs, len(seeds))):
            start(slot)
        while live and not (self.should_stop is not None and self.should_stop()):
            slots = sorted(live)
            prompts = [self.prompt_builder.build(live[s].observations, live[s].actions, live[s].previous)
                       for s in slots]
            t0 = time.perf_counter()
            gens = self.generator.generate([ids for ids, _ in prompts], gen_params,
                                           sessions=[live[s].index for s in slots])
            batch.generation_s += time.perf_counter() - t0
            for s, (ids, text), g in zip(slots, prompts, gens):
                ep = live[s]
                t0 = time.perf_counter()
                obs, reward, terminated, truncated, info = self.envs[s].step(g.text)
                batch.env_s += time.perf_counter() - t0
                batch.generated_tokens += len(g.response_ids)
                rec = ep.add_step(ids, text, g, obs, float(reward), bool(terminated), bool(truncated), info)
                if not rec.done:
                    continue
                if rec.truncated and self.read_bootstrap:
                    t0 = time.perf_counter()
                    self._read_bootstrap(ep, rec)
                    batch.generation_s += time.perf_counter() - t0
                batch.episodes.append(ep.stats(success=bool(info.get("success", False))))
                del live[s]
                self.generator.end_session(ep.index)
                if pending:
                    start(s)
            if on_progress is not None:
                on_progress(EvalProgress(
                    done=len(batch.episodes), total=len(seeds), successes=sum(e.success for e in batch.episodes),
                    errors=0, steps=sum(len(e.steps) for e in episodes.values()),
                    tokens=float(batch.generated_tokens), tokens_estimated=False,
                    elapsed_s=time.perf_counter() - t_wall))
        self.generator.reset_sessions()  # the weights change before the next collection
        # deterministic order: by episode, then step
        for k in sorted(episodes):
            batch.steps.extend(episodes[k].steps)
        batch.episodes.sort(key=lambda e: e.traj_id)
        batch.wall_s = time.perf_counter() - t_wall
        return batch

    def _read_bootstrap(self, ep: _Episode, rec: StepRecord) -> None:
        """Store s_T+1's prompt ids and, when the generator reads values, V(s_T+1) on ``rec``."""
        nxt, _ = self.prompt_builder.build(ep.observations, ep.actions, ep.previous)
        rec.info["bootstrap_prompt_ids"] = nxt
        values = self.generator.bootstrap_values([nxt], sessions=[ep.index])
        if values is not None and values[0] is not None:
            rec.info["bootstrap_value"] = float(values[0])

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []
