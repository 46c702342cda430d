"""Rollout workers on Ray: :class:`RayCollector` shards an iteration's episodes over actors.

Each actor (:class:`RolloutWorker`) owns its envs and a replica of the policy, and runs an
:class:`~steppo.rollout.InProcessCollector` over its shard. Per :meth:`RayCollector.collect`
call the driver puts the trainable weights into Ray's object store once (``ray.put``); every
worker loads them before it collects. Generation therefore happens where the envs are, and
only step records (token ids, log-probs, values) travel back.

* **Shards** are contiguous runs of whole groups (a group: consecutive episodes with the same
  seed and group id), balanced by episode count (:func:`shard_episodes`), so a task's group
  is always collected by one worker.
* **Merge**: worker ``i`` collects its shard with ``traj_id_start + offset_i``, so trajectory
  ids, step order and episode order are those of one ``InProcessCollector`` over all seeds
  (:func:`merge_batches`).
* **Sampling**: worker ``i`` seeds its sampler with ``worker_seed(params.seed, i)``. Results
  are deterministic for a given number of workers, but differ from an in-process run (other
  RNG streams, other generation batches); with one worker and the in-process seed set to
  ``worker_seed(seed, 0)`` the batches are equal.
* **Worker death**: a shard whose actor dies (:class:`ray.exceptions.RayActorError`) is run
  again, whole, on a fresh actor with the same seed; the dead actor's partial work never
  reaches the driver, so nothing is counted twice.

Ray is an optional dependency (the ``ray`` extra); importing this module does not import it.

Example (not run by doctest: it starts a cluster):

    >>> col = RayCollector(functools.partial(collector_from_config, cfg), 2,
    ...                    weights_fn=lambda: trainable_state(policy))          # doctest: +SKIP
    >>> batch = col.collect(seeds, group_ids, SamplingParams(seed=0))            # doctest: +SKIP
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from stepgym.agents.evaluate import EvalProgress
from stepgym.errors import InvalidArgument, StepgymError
from steppo.rollout import InProcessCollector, RolloutBatch, RolloutCollector, SamplingParams

__all__ = [
    "RayCollector",
    "RolloutWorker",
    "collector_from_config",
    "merge_batches",
    "shard_episodes",
    "trainable_state",
    "worker_seed",
]

#: the sampler's running token counters a worker reports back
COUNTERS = ("reused_tokens", "prefilled_tokens", "drafted_tokens", "accepted_tokens")


def shard_episodes(seeds: Sequence[int], group_ids: Sequence[int], n: int) -> list[range]:
    """Split episode indices into at most ``n`` contiguous, non-empty shards of whole groups.

    A group is a maximal run of consecutive episodes with equal ``(seed, group_id)``. A group
    starting at episode ``c`` (of ``M``) goes to shard ``c * n // M``: shards are balanced by
    episode count as far as whole groups allow.

    Example:
        >>> shard_episodes([5, 5, 7, 7, 9, 9], [0, 0, 1, 1, 2, 2], 2)
        [range(0, 4), range(4, 6)]
        >>> shard_episodes([1, 2, 3], [-1, -1, -1], 5)
        [range(0, 1), range(1, 2), range(2, 3)]
    """
    if len(seeds) != len(group_ids):
        raise InvalidArgument(f"seeds and group_ids differ in length ({len(seeds)} vs {len(group_ids)})")
    if n < 1:
        raise InvalidArgument(f"the number of shards must be >= 1, got {n}")
    m = len(seeds)
    starts = [k for k in range(m) if k == 0 or (seeds[k], group_ids[k]) != (seeds[k - 1], group_ids[k - 1])]
    bounds: list[int] = []  # first episode of each shard
    last = -1
    for c in starts:
        shard = min(n - 1, c * n // m)
        if shard != last:
            bounds.append(c)
            last = shard
    return [range(a, b) for a, b in zip(bounds, [*bounds[1:], m])]


def worker_seed(seed: int | None, index: int) -> int | None:
    """The sampling seed of worker ``index`` for an iteration's sampling seed (None stays None).

    Example:
        >>> worker_seed(7, 0) == worker_seed(7, 0) != worker_seed(7, 1)
        True
    """
    if seed is None:
        return None
    return int(np.random.default_rng([int(seed), int(index), 0x5EED]).integers(2**31))


def merge_batches(batches: Sequence[RolloutBatch]) -> RolloutBatch:
    """One batch from the shards' batches, given in shard (= episode) order.

    Steps keep their order (by episode, then step), episodes are sorted by trajectory id as
    :class:`~steppo.rollout.InProcessCollector` sorts them, times and token counts add up
    (``generation_s`` and ``env_s`` are summed over workers; ``wall_s`` is set by the caller).
    """
    out = RolloutBatch()
    for b in batches:
        out.steps.extend(b.steps)
        out.episodes.extend(b.episodes)
        out.generated_tokens += b.generated_tokens
        out.generation_s += b.generation_s
        out.env_s += b.env_s
    out.episodes.sort(key=lambda e: e.traj_id)
    return out


def trainable_state(policy: Any) -> dict[str, Any]:
    """The weights a worker replica needs each iteration: the trainable parameters, on CPU.

    Frozen parameters are the same in every replica (built from the same model, init and
    seed), so they are not sent.
    """
    return {n: p.detach().cpu() for n, p in policy.named_parameters() if p.requires_grad}


def collector_from_config(cfg: Any) -> InProcessCollector:
    """The trainer's collector, built in a worker: the policy replica, sampler, generator, envs.

    The same construction as :meth:`steppo.trainer.Trainer.setup` (policy with the algorithm's
    critic head, a shared value head read while sampling, bootstrap values of truncated
    episodes), without Ctrl-C polling: the driver handles that.
    """
    from steppo.loading import build_policy
    from steppo.rollout import ChatPromptBuilder, LocalGenerator, make_env_fn
    from steppo.sampling import Sampler

    algo = cfg.algorithm()
    has_critic = algo.critic != "none"
    critic_head = cfg.critic if has_critic else "none"
    policy = build_policy(cfg, critic_head, temperature=cfg.temperature)
    policy.eval()
    sampler = Sampler(policy, stop_strings=cfg.stop_strings, speculate=cfg.speculate)
    gen_values = algo.critic if critic_head == "shared" else "none"
    generator = LocalGenerator(sampler, values=gen_values, batch_size=cfg.num_envs, reuse_cache=cfg.kv_reuse)
    prompts = ChatPromptBuilder(policy.tokenizer, cfg.max_history_turns, cfg.max_prompt_tokens,
                                history_stride=cfg.history_stride)
    return InProcessCollector(make_env_fn(cfg.env, cfg.env_kwargs), generator, prompts, cfg.num_envs,
                              read_bootstrap=has_critic and cfg.bootstrap_truncated)


class RolloutWorker:
    """The body of one Ray actor: an :class:`InProcessCollector` built in the actor's process.

    Args:
        build: picklable, no arguments, returns the worker's ``InProcessCollector`` (whose
            generator is a :class:`~steppo.rollout.LocalGenerator` when weights are sent).
        index: the worker's index (its shard and sampling seed).
        threads: torch CPU threads in this process (0 leaves torch's default).
    """

    def __init__(self, build: Callable[[], InProcessCollector], index: int, threads: int = 0):
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        self.index = index
        self.collector = build()

    def _sampler(self) -> Any:
        return getattr(getattr(self.collector, "generator", None), "sampler", None)

    def load_weights(self, weights: dict[str, Any]) -> None:
        sampler = self._sampler()
        if sampler is None:
            raise StepgymError("weights were sent to a rollout worker whose generator has no local policy")
        import torch

        with torch.no_grad():
            missing = sampler.policy.load_state_dict(weights, strict=False)
        if missing.unexpected_keys:
            raise StepgymError(f"rollout worker {self.index}: the sent weights do not match its policy "
                               f"(unexpected keys such as {missing.unexpected_keys[:3]})")

    def collect(self, weights: dict[str, Any] | None, seeds: list[int], group_ids: list[int],
                params: SamplingParams, traj_id_start: int) -> tuple[RolloutBatch, dict[str, int]]:
        """Load ``weights`` (if any), collect the shard; returns the batch and sampler counter deltas."""
        if weights is not None:
            self.load_weights(weights)
        sampler = self._sampler()
        before = {k: int(getattr(sampler, k, 0)) for k in COUNTERS}
        batch = self.collector.collect(seeds, group_ids, params, traj_id_start=traj_id_start)
        return batch, {k: int(getattr(sampler, k, 0)) - before[k] for k in COUNTERS}

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        self.collector.close()


class RayCollector(RolloutCollector):
    """Collects episodes on ``num_workers`` Ray actors, each owning envs and a policy replica.

    Args:
        build: picklable, no arguments: builds one worker's ``InProcessCollector`` inside the
            actor (e.g. ``functools.partial(collector_from_config, cfg)``).
        num_workers: actors (shards per :meth:`collect`; fewer when there are fewer groups).
        weights_fn: returns the weights to broadcast before each collection (a state dict of
            the trainable parameters, :func:`trainable_state`); None sends none.
        address: Ray cluster to join; empty: the running Ray instance of this process, else a
            new local one (shut down again by :meth:`close`).
        num_cpus: CPUs Ray reserves per actor (also its torch thread count).
        should_stop: polled while waiting; when it returns True the collection stops early
            (busy actors are killed and replaced at the next call).
        read_bootstrap: mirrors the worker collectors' setting (the trainer reads it).
        counters_to: an object with the sampler's counters (``reused_tokens`` ...): the
            workers' counts are added to it, so the trainer's cache-hit metric still means
            what it says.
        max_retries: how often one shard is restarted after its actor died, per collection.
        actor_options: extra ``.options(...)`` of each actor (``num_gpus``, resources, ...).
    """

    def __init__(self, build: Callable[[], InProcessCollector], num_workers: int, *,
                 weights_fn: Callable[[], dict[str, Any]] | None = None, address: str = "", num_cpus: float = 1,
                 should_stop: Callable[[], bool] | None = None, read_bootstrap: bool = True,
                 counters_to: Any = None, max_retries: int = 2, actor_options: dict[str, Any] | None = None):
        if num_workers < 1:
            raise InvalidArgument(f"num_workers must be >= 1, got {num_workers}")
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise StepgymError("rollout workers need Ray: pip install 'stepgym[ray]'") from exc
        self._ray = ray
        self.build = build
        self.num_workers = num_workers
        self.weights_fn = weights_fn
        self.num_cpus = num_cpus
        self.should_stop = should_stop
        self.read_bootstrap = read_bootstrap
        self.counters_to = counters_to
        self.max_retries = max_retries
        self.actor_options = dict(actor_options or {})
        #: actors started (including replacements) and shards restarted after a death, over the run
        self.actors_started = 0
        self.restarts = 0
        self._owns_cluster = False
        if not ray.is_initialized():
            if address:
                ray.init(address=address, logging_level="WARNING")
            else:
                cpus = max(os.cpu_count() or 1, int(np.ceil(num_workers * num_cpus)))
                ray.init(num_cpus=cpus, include_dashboard=False, logging_level="WARNING")
                self._owns_cluster = True
        self._actor_cls = ray.remote(RolloutWorker)
        self.actors: list[Any] = [None] * num_workers

    # -- actors ---------------------------------------------------------------------------
    def _actor(self, i: int) -> Any:
        if self.actors[i] is None:
            opts = {"num_cpus": self.num_cpus, "max_restarts": 0, "max_task_retries": 0, **self.actor_options}
            threads = max(1, int(self.num_cpus))
            self.actors[i] = self._actor_cls.options(**opts).remote(self.build, i, threads)
            self.actors_started += 1
        return self.actors[i]

    def _replace(self, i: int) -> None:
        old, self.actors[i] = self.actors[i], None
        if old is not None:
            try:
                self._ray.kill(old, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass

    # -- collection -----------------------------------------------------------------------
    def collect(self, seeds: Sequence[int], group_ids: Sequence[int], params: SamplingParams,
                traj_id_start: int = 0, *, on_progress: Callable[[EvalProgress], None] | None = None,
                ) -> RolloutBatch:
        """Run the episodes on the workers; ``on_progress`` hears of each shard as it arrives."""
        ray = self._ray
        t_wall = time.perf_counter()
        shards = shard_episodes(seeds, group_ids, self.num_workers)
        weights = ray.put(self.weights_fn()) if self.weights_fn is not None else None

        def submit(i: int) -> Any:
            r = shards[i]
            p = SamplingParams(params.max_new_tokens, params.temperature, params.top_p, params.greedy,
                               worker_seed(params.seed, i))
            return self._actor(i).collect.remote(weights, [int(s) for s in seeds[r.start:r.stop]],
                                                 [int(g) for g in group_ids[r.start:r.stop]], p,
                                                 traj_id_start + r.start)

        pending = {submit(i): i for i in range(len(shards))}
        results: dict[int, tuple[RolloutBatch, dict[str, int]]] = {}
        retries = [0] * len(shards)
        while pending:
            if self.should_stop is not None and self.should_stop():
                for ref, i in pending.items():  # their work is dropped: fresh actors next time
                    self._replace(i)
                break
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.2)
            for ref in ready:
                i = pending.pop(ref)
                try:
                    results[i] = ray.get(ref)
                    if on_progress is not None:
                        done = [e for b, _ in results.values() for e in b.episodes]
                        on_progress(EvalProgress(
                            done=len(done), total=len(seeds), successes=sum(e.success for e in done), errors=0,
                            steps=sum(len(b.steps) for b, _ in results.values()),
                            tokens=float(sum(b.generated_tokens for b, _ in results.values())),
                            tokens_estimated=False, elapsed_s=time.perf_counter() - t_wall))
                except ray.exceptions.RayActorError as exc:
                    # the actor died: its partial shard never arrived; run the whole shard again
                    if retries[i] >= self.max_retries:
                        raise StepgymError(f"rollout worker {i} died {retries[i] + 1} times in one collection: "
                                           f"{exc}") from exc
                    retries[i] += 1
                    self.restarts += 1
                    self._replace(i)
                    pending[submit(i)] = i
        batch = merge_batches([results[i][0] for i in sorted(results)])
        if self.counters_to is not None:
            for _, counts in results.values():
                for k, v in counts.items():
                    if hasattr(self.counters_to, k):
                        setattr(self.counters_to, k, getattr(self.counters_to, k) + v)
        batch.wall_s = time.perf_counter() - t_wall
        return batch

    def worker_pids(self) -> list[int]:
        """Process ids of the workers (starting any that are not running)."""
        return self._ray.get([self._actor(i).pid.remote() for i in range(self.num_workers)])

    def close(self) -> None:
        """Stop the actors; shut down the local cluster if this collector started it."""
        ray = self._ray
        for i, a in enumerate(self.actors):
            if a is None:
                continue
            try:
                ray.get(a.close.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - a dead or stuck actor is killed below anyway
                pass
            self._replace(i)
        if self._owns_cluster and ray.is_initialized():
            ray.shutdown()
            self._owns_cluster = False


def config_collector(cfg: Any, policy: Any, *, should_stop: Callable[[], bool] | None = None,
                     counters_to: Any = None) -> RayCollector:
    """The trainer's :class:`RayCollector` for ``cfg.rollout_workers`` workers and ``policy``'s weights."""
    has_critic = cfg.algorithm().critic != "none"
    return RayCollector(functools.partial(collector_from_config, cfg), cfg.rollout_workers,
                        weights_fn=functools.partial(trainable_state, policy), address=cfg.ray_address,
                        num_cpus=max(1, cfg.threads), should_stop=should_stop,
                        read_bootstrap=has_critic and cfg.bootstrap_truncated, counters_to=counters_to)
