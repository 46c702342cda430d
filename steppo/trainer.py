"""The trainer: StepPO and its baselines on the same rollout and update code.

One iteration (:meth:`Trainer.run_iteration`) reads top to bottom:

1. **collect** ``episodes_per_iteration`` episodes with the current policy (:mod:`steppo.rollout`);
2. **advantages**: lay the step records out once (:class:`~steppo.algos.StepBatch`) and run the
   algorithm's registered estimator (:mod:`steppo.algos`);
3. **update**: ``epochs`` passes of shuffled minibatches; each micro-batch is scored by the
   policy and its loss is the algorithm's registered policy loss (+ the clipped value loss when
   the algorithm has a critic, + KL and entropy terms when enabled); AdamW and gradient clipping
   per minibatch;
4. **log** one metrics row under stable names (``charts/``, ``losses/``, ``perf/``, ``eval/``).

Everything on disk (metrics, checkpoints, the policy folder, TensorBoard, the report) goes through
:class:`~steppo.run_dir.RunDir`.

Example:
    >>> import tempfile
    >>> from rich.console import Console
    >>> from steppo.config import StepPOConfig
    >>> cfg = StepPOConfig(model="tiny", iterations=1, episodes_per_iteration=2, num_envs=2,
    ...                    max_new_tokens=8, eval_episodes=2, out=tempfile.mkdtemp(),
    ...                    progress=False, tensorboard=False)
    >>> summary = Trainer(cfg, console=Console(quiet=True)).train()
    >>> summary["iterations_done"]
    1
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from stepgym.core import StepRecord
from stepgym.policy_folder import PolicySettings
from stepgym.errors import InvalidConfig, StepgymError
from stepgym.progress import episode_progress
from steppo import distributed
from steppo import losses as L
from steppo import report
from steppo.algos import Advantages, PolicyLossInputs, StepBatch, get_advantage, get_policy_loss
from steppo.batching import pack_steps, plan_micro_batches
from steppo.config import TrainConfig, config_to_dict
from steppo.loading import build_policy
from steppo.policy import Policy, adamw, count_parameters, set_threads
from steppo.rollout import (
    ChatPromptBuilder,
    InProcessCollector,
    LocalGenerator,
    RolloutBatch,
    SamplingParams,
    make_env_fn,
)
from steppo.run_dir import RunDir
from steppo.sampling import Sampler

__all__ = ["Trainer", "compute_advantages", "TIME_KEYS"]

#: metric keys whose values depend on wall-clock time (excluded from resume-equality checks)
TIME_KEYS = ("perf/", "time/")

#: a minibatch: its row indices, and its micro-batches as (row indices, loss weight)
Minibatch = tuple[list[int], list[tuple[list[int], float]]]


class Interrupted(Exception):
    """Ctrl-C during a rollout: nothing of the current iteration is kept."""


def compute_advantages(cfg: TrainConfig, steps: Sequence[StepRecord], *, step_values: Any = None,
                       token_values: Sequence[Sequence[float]] | None = None,
                       bootstrap: dict[int, float] | None = None) -> tuple[StepBatch, Advantages]:
    """The batch layout of ``steps`` and their advantages under ``cfg.algo``'s estimator.

    Args:
        cfg: the training config (algo, gamma, lam, normalisation, group options).
        steps: the iteration's step records.
        step_values: ``[M]`` V(s_t) of each step (step critics).
        token_values: per-step lists of V before each response token (token critics).
        bootstrap: traj_id -> V(s_T+1) for truncated trajectories.

    Returns:
        ``(batch, advantages)`` with both the per-step and the per-token view filled in.
    """
    batch = StepBatch.from_steps(steps, step_values=step_values, token_values=token_values, bootstrap=bootstrap)
    estimator = get_advantage(cfg.algorithm().advantage)
    return batch, estimator(batch, cfg).complete(batch.mask)


def _rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


class Trainer:
    """Runs ``cfg.iterations`` of rollout + update; see the module docstring.

    Args:
        cfg: a :class:`~steppo.config.StepPOConfig` or :class:`~steppo.config.GRPOConfig`.
        console: a ``rich.console.Console`` for progress output (default: a new one).
    """

    def __init__(self, cfg: TrainConfig, console: Any = None):
        from rich.console import Console

        self.cfg = cfg
        self.algo = cfg.algorithm()
        #: this process's rank under torchrun (inactive, no collectives, in one process)
        self.dist = distributed.context(cfg.dist_timeout)
        self.console = console or Console(highlight=False)
        if not self.dist.is_main:  # rank 0 alone prints and writes
            self.console = Console(quiet=True)
        self.run_dir = RunDir(cfg.out, keep_checkpoints=cfg.keep_checkpoints, write=self.dist.is_main)
        self.dist.checkpoint_dir = self.run_dir.checkpoint_dir
        self.start_iteration = 1
        self.env_steps = 0
        self.episodes_done = 0
        #: set by Ctrl-C: the iteration in progress ends, a checkpoint is written, the run stops
        self.stop_requested = False
        self._setup_done = False
        #: async_rollout: the next iteration's collection running in the background, and its stop signal
        self._pending: _PendingRollout | None = None
        self._cancel = threading.Event()

    # -- setup ------------------------------------------------------------------------------
    def setup(self) -> None:
        """Check the env and the output folder, load the policy, build optimizer and rollout parts."""
        cfg = self.cfg
        set_threads(cfg.threads)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        env_fn = make_env_fn(cfg.env, cfg.env_kwargs)
        self.run_dir.check(resume=cfg.resume, overwrite=cfg.overwrite)
        has_critic = self.algo.critic != "none"
        critic_head = cfg.critic if has_critic else "none"
        if self.dist.active and cfg.episodes_per_iteration // cfg.group_size < self.dist.world:
            raise InvalidConfig("episodes_per_iteration", cfg.episodes_per_iteration,
                                f"at least {self.dist.world} groups of group_size={cfg.group_size} episodes "
                                f"(one per process)")
        self.policy = build_policy(cfg, critic_head, temperature=cfg.temperature)
        self.dist.broadcast_parameters(self.policy)
        self.device = self.policy.device
        self.ref: Policy | None = build_policy(cfg, for_reference=True) if cfg.kl_coef > 0 else None
        groups = [{"params": self.policy.policy_parameters(), "lr": cfg.lr}]
        if not groups[0]["params"]:
            raise InvalidConfig("train_layers", cfg.train_layers, "a setting that leaves some parameters trainable")
        if self.policy.critic_parameters():
            groups.append({"params": self.policy.critic_parameters(), "lr": cfg.critic_lr or cfg.lr * 10})
        self.optimizer = adamw(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        #: the weights the sampler runs: the policy itself, or under mixed precision a copy of its LM
        #: in the compute dtype, refreshed before each collection (autocast would cast every weight
        #: again at every decode step: 0.08x of float32's tokens/s on CPU, docs/benchmarks.md "Precision")
        self.sample_policy = self._low_precision_copy() if self.policy.autocast_dtype is not None else self.policy
        self.sampler = Sampler(self.sample_policy, stop_strings=cfg.stop_strings, speculate=cfg.speculate)
        # a shared value head is read for free while sampling (by the learner's own weights only)
        gen_values = self.algo.critic if critic_head == "shared" and self.sample_policy is self.policy else "none"
        if cfg.generator == "local":
            generator = LocalGenerator(self.sampler, values=gen_values, batch_size=cfg.num_envs,
                                       reuse_cache=cfg.kv_reuse)
        else:  # an inference server, synced after each update (steppo.remote_generator)
            from steppo.remote_generator import generator_from_spec

            if self.dist.active:
                raise InvalidConfig("generator", cfg.generator, "'local' under torchrun (one server per rank is "
                                                                "not supported yet)")
            generator = generator_from_spec(cfg.generator, self.policy.tokenizer, stop_strings=cfg.stop_strings,
                                            eos_ids=self.sampler.eos_ids, concurrency=cfg.num_envs)
        self.generator: Any = generator
        prompts = ChatPromptBuilder(self.policy.tokenizer, cfg.max_history_turns, cfg.max_prompt_tokens,
                                    history_stride=cfg.history_stride)
        if cfg.rollout_workers:  # Ray actors with their own envs and policy replicas (steppo.ray_rollout)
            from steppo.ray_rollout import config_collector

            self.collector = config_collector(cfg, self.policy, should_stop=lambda: self.stop_requested,
                                              counters_to=self.sampler)
        else:
            self.collector = InProcessCollector(env_fn, generator, prompts, cfg.num_envs,
                                                should_stop=lambda: self.stop_requested,
                                                read_bootstrap=has_critic and cfg.bootstrap_truncated)
        if cfg.async_rollout:
            self._setup_async(env_fn, has_critic)
        self.run_dir.create(config_to_dict(cfg), resume=cfg.resume, overwrite=cfg.overwrite)
        if cfg.resume:
            self._resume()
        if cfg.tensorboard:
            self.run_dir.open_tensorboard(purge_step=self.start_iteration)
        self.sync_generator()  # a server starts from the trainer's weights (--init, --resume, the seed)
        self._setup_done = True

    def sync_generator(self) -> float | None:
        """Seconds spent giving the generator the current weights; None when it shares them (in process)."""
        t0 = time.perf_counter()
        if not self.generator.sync_weights(self.policy, os.path.join(self.run_dir.path, "served")):
            return None
        return time.perf_counter() - t0

    def _low_precision_copy(self) -> Policy:
        """A frozen copy of the policy whose LM holds its weights in the autocast dtype (the value head stays float32)."""
        pol = copy.deepcopy(self.policy)
        pol.lm.to(self.policy.autocast_dtype)
        pol.autocast_dtype = None
        for p in pol.parameters():
            p.requires_grad_(False)
        return pol.eval()

    def refresh_sampling_weights(self) -> None:
        """Copy the learner's weights into the sampler's low-precision copy (no-op without one)."""
        if self.sample_policy is not self.policy:
            self.sample_policy.load_state_dict(self.policy.state_dict())

    def _setup_async(self, env_fn: Any, has_critic: bool) -> None:
        """The background collector of ``async_rollout``: a frozen copy of the policy, its own sampler and envs."""
        cfg = self.cfg
        if cfg.rollout_workers:
            raise InvalidConfig("async_rollout", True, "false with --rollout-workers (Ray workers collect with the "
                                                       "driver's weights); use one of the two")
        if self.dist.active:
            raise InvalidConfig("async_rollout", True, "false under torchrun (each rank would need its own "
                                                       "background collector; not supported yet)")
        #: the behaviour policy: a copy whose weights are refreshed from the learner's before each collection
        self.behaviour = copy.deepcopy(self.sample_policy)
        for p in self.behaviour.parameters():
            p.requires_grad_(False)
        self.behaviour.eval()
        self.behaviour_sampler = Sampler(self.behaviour, stop_strings=cfg.stop_strings, speculate=cfg.speculate)
        # no values from the stale copy: the critic's V(s_t) and V(s_T+1) come from the learner's weights
        generator = LocalGenerator(self.behaviour_sampler, values="none", batch_size=cfg.num_envs,
                                   reuse_cache=cfg.kv_reuse)
        prompts = ChatPromptBuilder(self.behaviour.tokenizer, cfg.max_history_turns, cfg.max_prompt_tokens,
                                    history_stride=cfg.history_stride)
        self.async_collector = InProcessCollector(env_fn, generator, prompts, cfg.num_envs,
                                                  should_stop=lambda: self.stop_requested or self._cancel.is_set(),
                                                  read_bootstrap=has_critic and cfg.bootstrap_truncated)

    # -- one iteration --------------------------------------------------------------------
    def iteration_seeds(self, it: int) -> tuple[list[int], list[int]]:
        """Task seeds and group ids of iteration ``it`` (a pure function of seed and it)."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, it, 7])
        G = cfg.group_size
        tasks = rng.integers(0, cfg.eval_seed, size=cfg.episodes_per_iteration // G)
        seeds = [int(s) for s in tasks for _ in range(G)]
        groups = [it * 100_000 + g for g in range(len(tasks)) for _ in range(G)]
        return seeds, groups

    def collect(self, it: int, collector: Any = None, sampler: Sampler | None = None,
                ) -> tuple[RolloutBatch, dict[str, int]]:
        """Iteration ``it``'s episodes (this rank's share) and the sampler's counter increments."""
        cfg = self.cfg
        collector, sampler = collector or self.collector, sampler or self.sampler
        seeds, groups = self.iteration_seeds(it)
        # distributed: this rank's whole groups; its own sampling stream (rank 0 samples as one process)
        lo, hi = distributed.shard_seeds(len(seeds), cfg.group_size, self.dist.rank, self.dist.world)
        seeds, groups = seeds[lo:hi], groups[lo:hi]
        params = SamplingParams(cfg.max_new_tokens, cfg.temperature, cfg.top_p,
                                seed=int(np.random.default_rng([cfg.seed, it, 3] + ([self.dist.rank] if self.dist.rank
                                                                                     else [])).integers(2**31)))
        if collector is self.collector:
            self.refresh_sampling_weights()
        counters0 = _sampler_counters(sampler)
        # a line under the iterations' bar while it shows (the collection may run in a background thread)
        with episode_progress(self.console, f"iteration {it}: rollout", hi - lo, cfg.progress,
                              join_only=True) as on_progress:
            rollout = collector.collect(seeds, groups, params, traj_id_start=it * cfg.episodes_per_iteration + lo,
                                        on_progress=on_progress)
        return rollout, {k: v - counters0[k] for k, v in _sampler_counters(sampler).items()}

    def _rollout_for(self, it: int) -> tuple[RolloutBatch, dict[str, int], int]:
        """Iteration ``it``'s rollout, its counters and the policy version that sampled it.

        The weights after iteration k's update are version k. In sync mode iteration ``it``
        samples with version ``it - 1``, the weights it then updates. With ``async_rollout`` the
        rollout was started in the background before iteration ``it - 1``'s update, with version
        ``it - 2`` (one version of lag); the first iteration of a run (or of a resumed run) is
        collected in the foreground.
        """
        pending, self._pending = self._pending, None
        if pending is not None and pending.iteration == it:
            rollout, counters = pending.result()
            version = pending.version
        else:
            if pending is not None:
                self._discard(pending)
            rollout, counters = self.collect(it)
            version = it - 1
        for s in rollout.steps:
            s.info["policy_version"] = version
        return rollout, counters, version

    def _start_background(self, it: int) -> None:
        """Start collecting iteration ``it`` with a copy of the current weights (version ``it - 2``)."""
        self.behaviour.load_state_dict(self.policy.state_dict())
        self._cancel.clear()
        self._pending = _PendingRollout(it, it - 2, lambda: self.collect(it, self.async_collector,
                                                                           self.behaviour_sampler))

    def _discard(self, pending: _PendingRollout | None) -> None:
        """Stop a background collection and drop what it collected (Ctrl-C, end of run, budget reached)."""
        if pending is None:
            return
        self._cancel.set()
        pending.thread.join()
        self._cancel.clear()

    def run_iteration(self, it: int) -> dict[str, Any]:
        """Collect -> advantages -> epochs of minibatch updates -> one metrics row."""
        cfg = self.cfg
        t0 = time.perf_counter()
        self.dist.what = f"iteration {it}"
        rollout, counters, version = self._rollout_for(it)
        wait_s = time.perf_counter() - t0
        if self.dist.any(self.stop_requested):
            raise Interrupted()
        if cfg.async_rollout and it < cfg.iterations and not self.stop_requested:
            self._start_background(it + 1)  # collects while this iteration updates
        total, n_steps, charts, counters = self._global_rollout(rollout, counters)
        row: dict[str, Any] = {"iteration": it, **charts}
        # versions between the rollout's sampling weights and the weights the update starts from
        row["charts/policy_lag"] = (it - 1) - version
        row.update(self.update(rollout, it))
        sync_s = self.sync_generator()
        if sync_s is not None:  # an inference server loaded the updated weights
            row["perf/weight_sync_s"] = sync_s
        self.env_steps += n_steps
        self.episodes_done += len(total.episodes)
        row["charts/env_steps"] = self.env_steps
        row["charts/episodes"] = self.episodes_done
        row["charts/response_tokens"] = total.generated_tokens / max(1, n_steps)
        row["perf/tokens_per_s"] = total.generated_tokens / max(total.generation_s, 1e-9)
        row["perf/rollout_s"] = total.wall_s
        row["perf/rollout_wait_s"] = wait_s  # the time the learner waited for its rollout
        # share of prompt tokens served from KV caches instead of prefilled (kv_reuse, shared prefixes)
        row["perf/prompt_cache_hit"] = counters["reused_tokens"] / max(
            1, counters["reused_tokens"] + counters["prefilled_tokens"])
        if cfg.speculate:  # share of prompt-lookup draft tokens the policy accepted
            row["perf/draft_acceptance"] = counters["accepted_tokens"] / max(1, counters["drafted_tokens"])
        if (cfg.eval_every and it % cfg.eval_every == 0) or it == cfg.iterations:
            row.update(self.evaluate())
        row["perf/iteration_s"] = time.perf_counter() - t0
        return row

    def update(self, rollout: RolloutBatch, it: int) -> dict[str, float]:
        """Advantages, then ``epochs`` passes of minibatch updates; returns the loss statistics."""
        cfg = self.cfg
        steps = [s for s in rollout.steps if s.response_ids]
        # distributed: every rank updates or none does (a rank without a step skips the update everywhere)
        if (self.dist.all_reduce_min(len(steps)) if self.dist.active else len(steps)) == 0:
            return {}
        t0 = time.perf_counter()
        step_values, token_values = self.critic_values(steps)
        batch, advantages = compute_advantages(cfg, steps, step_values=step_values, token_values=token_values,
                                               bootstrap=self.bootstrap_values(steps))
        mismatch: dict[str, float] = {}
        if self.uses_learner_logprobs():  # the PPO ratio's denominator: the learner's own log-probs
            t1 = time.perf_counter()
            learner = self.learner_logprobs(steps, batch.mask.shape[1])
            mismatch = self._logprob_mismatch(learner, batch.old_logprobs, batch.mask)
            mismatch["perf/logprob_recompute_s"] = time.perf_counter() - t1
            batch.old_logprobs = learner
        b_ref_logprobs = self.reference_logprobs(steps, batch.mask.shape[1]) if self.ref is not None else None
        loss_fn = get_policy_loss(self.algo.policy_loss)
        clip_low, clip_high = cfg.clip_range()
        rng = np.random.default_rng([cfg.seed, it, 11])
        sums: dict[str, float] = defaultdict(float)
        n_minibatches, tokens, token_log_ratio_min = 0, 0, 0.0
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        n_mb = distributed.n_minibatches(self.dist.total(len(steps)), cfg.minibatch_size) if self.dist.active else 0
        self.policy.train()
        for _epoch in range(cfg.epochs):
            plan = self.plan_rank_minibatches(steps, rng, n_mb) if self.dist.active else self.plan_minibatches(steps, rng)
            for _mb_rows, micro_batches in plan:
                self.optimizer.zero_grad(set_to_none=True)
                for rows, weight in micro_batches:
                    loss, stats = self._micro_batch_loss(batch, advantages, rows, loss_fn, (clip_low, clip_high),
                                                         b_ref_logprobs)
                    (loss * weight).backward()
                    for k, v in stats.items():
                        sums[k] += v * weight
                    token_log_ratio_min = min(token_log_ratio_min, stats.get("token_log_ratio_min", 0.0))
                    tokens += sum(len(steps[i].prompt_ids) + len(steps[i].response_ids) for i in rows)
                self.dist.all_reduce_grads(params)  # the global minibatch's gradient on every rank
                if cfg.max_grad_norm > 0:
                    sums["losses/grad_norm"] += float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
                self.optimizer.step()
                n_minibatches += 1
        self.policy.eval()
        if self.dist.active:  # loss weights are shares of the global minibatch: their sums add up
            sums, tokens, token_log_ratio_min = self._global_update_stats(sums, tokens, token_log_ratio_min)
        out = {k: v / max(1, n_minibatches) for k, v in sums.items() if k.startswith("losses/")}
        if self.ref is None:  # still report how far the policy moved from its rollout policy
            out.setdefault("losses/kl", out.get("losses/approx_kl", 0.0))
        # the policy's largest single-token move during this update (scored before each optimizer step)
        out["losses/token_log_ratio_min"] = token_log_ratio_min
        dt = time.perf_counter() - t0
        out["perf/update_s"] = dt
        out["perf/update_tokens_per_s"] = tokens / max(dt, 1e-9)
        out.update(mismatch)
        if self.dist.active:
            out["charts/advantage_std"] = _global_std(self.dist, advantages.step)
        else:
            out["charts/advantage_std"] = float(advantages.step.std()) if len(steps) > 1 else 0.0
        return out

    def _micro_batch_loss(self, batch: StepBatch, advantages: Advantages, rows: list[int], loss_fn: Any,
                          clip: tuple[float, float], b_ref_logprobs: torch.Tensor | None,
                          ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one micro-batch (policy + value + KL - entropy) and its statistics."""
        cfg, dev, critic = self.cfg, self.device, self.algo.critic
        mb_steps = [batch.steps[i] for i in rows]
        out = self.policy.score([s.prompt_ids for s in mb_steps], [s.response_ids for s in mb_steps],
                                values=critic, entropy=cfg.entropy_coef > 0)
        n_tok = out.logprobs.shape[1]
        idx = torch.tensor(rows)
        mb_mask = batch.mask[idx, :n_tok].to(dev)
        pg_loss, pg_stats = loss_fn(PolicyLossInputs(
            logprobs=out.logprobs, old_logprobs=batch.old_logprobs[idx, :n_tok].to(dev), mask=mb_mask,
            step_advantages=advantages.step[idx].to(dev), token_advantages=advantages.token[idx, :n_tok].to(dev),
            traj_ids=batch.traj[idx].to(dev), clip_low=clip[0], clip_high=clip[1],
            token_guard=cfg.token_guard_value()))
        loss = pg_loss
        stats = {"losses/policy": float(pg_loss.detach())}
        stats.update({f"losses/{k}": float(pg_stats[k]) for k in ("clip_frac", "approx_kl", "ratio_mean",
                                                                            "token_guard_frac") if k in pg_stats})
        if "token_log_ratio_min" in pg_stats:
            stats["token_log_ratio_min"] = float(pg_stats["token_log_ratio_min"])
        if critic != "none":
            vclip = cfg.value_clip or None
            if critic == "step":
                v_loss, v_stats = L.value_loss(out.step_values, batch.step_values[idx].to(dev),
                                               _targets(advantages.step_returns, "step_returns")[idx].to(dev),
                                               clip=vclip)
            else:
                v_loss, v_stats = L.value_loss(out.token_values, batch.token_values[idx, :n_tok].to(dev),
                                               _targets(advantages.token_returns, "token_returns")[idx, :n_tok].to(dev),
                                               mb_mask, clip=vclip)
            loss = loss + cfg.vf_coef * v_loss
            stats["losses/value"] = float(v_loss.detach())
            stats.update({f"losses/{k}": float(v_stats[k]) for k in ("explained_variance", "value_mean")
                          if k in v_stats})
        if b_ref_logprobs is not None:
            kl = L.kl_penalty(out.logprobs, b_ref_logprobs[idx, :n_tok].to(dev), mb_mask)
            loss = loss + cfg.kl_coef * kl
            stats["losses/kl"] = float(kl.detach())
        if out.entropy is not None:
            entropy = (out.entropy * mb_mask).sum() / mb_mask.sum().clamp(min=1.0)
            loss = loss - cfg.entropy_coef * entropy
            stats["losses/entropy"] = float(entropy.detach())
        return loss, stats

    def plan_minibatches(self, steps: Sequence[StepRecord], rng: np.random.Generator) -> list[Minibatch]:
        """One epoch's minibatches, each with its micro-batches and their loss weights.

        With ``pack_trajectories`` (and always for per-trajectory losses, GSPO) whole
        trajectories are shuffled: every row of a trajectory lands in the same micro-batch, where
        :meth:`Policy.score` runs its steps as one sequence. Otherwise rows are shuffled one by
        one. Micro-batches group units of similar length, capped by ``micro_batch_size`` steps
        and ``micro_batch_tokens`` padded tokens (:func:`~steppo.batching.plan_micro_batches`). A
        micro-batch's loss weighs by its share of the minibatch's rows (of its trajectories for a
        per-trajectory loss).
        """
        cfg = self.cfg
        lengths = [len(s.prompt_ids) + len(s.response_ids) for s in steps]
        out: list[Minibatch] = []
        if not (self.algo.per_trajectory or cfg.pack_trajectories):
            perm = rng.permutation(len(steps))
            for m0 in range(0, len(steps), cfg.minibatch_size):
                mb_rows = perm[m0:m0 + cfg.minibatch_size].tolist()
                chunks = plan_micro_batches([(1, [lengths[i]]) for i in mb_rows], cfg.micro_batch_size,
                                            cfg.micro_batch_tokens)
                out.append((mb_rows, [([mb_rows[u] for u in c], len(c) / len(mb_rows)) for c in chunks]))
            return out
        rows_of: dict[int, list[int]] = defaultdict(list)
        for i, s in enumerate(steps):
            rows_of[s.traj_id].append(i)
        trajs = list(rows_of.values())
        order = [trajs[k] for k in rng.permutation(len(trajs))]
        for mb_trajs in _fill_by_rows(order, cfg.minibatch_size):
            mb_rows = [i for t in mb_trajs for i in t]
            sizes = []  # rows and packed sequence lengths of each trajectory
            for t in mb_trajs:
                seqs, _ = pack_steps([steps[i].prompt_ids for i in t], [steps[i].response_ids for i in t])
                sizes.append((len(t), [len(q) for q in seqs]))
            micro = []
            for c in plan_micro_batches(sizes, cfg.micro_batch_size, cfg.micro_batch_tokens):
                rows = [i for k in c for i in mb_trajs[k]]
                weight = len(c) / len(mb_trajs) if self.algo.per_trajectory else len(rows) / len(mb_rows)
                micro.append((rows, weight))
            out.append((mb_rows, micro))
        return out

    def plan_rank_minibatches(self, steps: Sequence[StepRecord], rng: np.random.Generator,
                              n_minibatches: int) -> list[Minibatch]:
        """A distributed epoch: this rank's part of each of ``n_minibatches`` global minibatches.

        Every rank runs the same number of optimizer steps, so the gradient all-reduce pairs
        up: the rank shuffles its rows (its trajectories with ``pack_trajectories`` or a
        per-trajectory loss) and cuts them into ``n_minibatches`` consecutive chunks of about
        equal rows; the k-th chunks of all ranks form the k-th global minibatch. A micro-batch's
        loss weight is its rows (trajectories for a per-trajectory loss) over the global
        minibatch's rows (one all-reduce of the chunk sizes), so the summed gradient is the
        gradient one process computes for that global minibatch split into the same
        micro-batches. A minibatch that is empty on every rank is dropped by every rank.
        """
        cfg = self.cfg
        per_traj = self.algo.per_trajectory
        lengths = [len(s.prompt_ids) + len(s.response_ids) for s in steps]
        if not (per_traj or cfg.pack_trajectories):
            units = [[int(i)] for i in rng.permutation(len(steps))]
        else:
            rows_of: dict[int, list[int]] = defaultdict(list)
            for i, s in enumerate(steps):
                rows_of[s.traj_id].append(i)
            trajs = list(rows_of.values())
            units = [trajs[k] for k in rng.permutation(len(trajs))]
        chunks = distributed.split_units(units, n_minibatches)
        local = [float(len(c) if per_traj else sum(len(u) for u in c)) for c in chunks]
        global_sizes = self.dist.all_reduce_sum(torch.tensor(local, dtype=torch.float64)).tolist()
        out: list[Minibatch] = []
        for chunk, denom in zip(chunks, global_sizes):
            if denom == 0:
                continue
            sizes = []
            for u in chunk:
                if len(u) == 1 and not (per_traj or cfg.pack_trajectories):
                    sizes.append((1, [lengths[u[0]]]))
                else:
                    seqs, _ = pack_steps([steps[i].prompt_ids for i in u], [steps[i].response_ids for i in u])
                    sizes.append((len(u), [len(q) for q in seqs]))
            micro = []
            for c in plan_micro_batches(sizes, cfg.micro_batch_size, cfg.micro_batch_tokens):
                rows = [i for k in c for i in chunk[k]]
                micro.append((rows, (len(c) if per_traj else len(rows)) / denom))
            out.append(([i for u in chunk for i in u], micro))
        return out

    def _global_rollout(self, rollout: RolloutBatch, counters: dict[str, int], prefix: str = "charts",
                        ) -> tuple[RolloutBatch, int, dict[str, float], dict[str, int]]:
        """The rollout over all ranks: ``(episodes and token totals, steps, metrics, sampler counters)``."""
        if not self.dist.active:
            return rollout, len(rollout.steps), rollout.metrics(prefix), counters
        parts = self.dist.all_gather_object((rollout.episodes, len(rollout.steps), rollout.generated_tokens,
                                             rollout.generation_s, rollout.wall_s, counters))
        total = RolloutBatch(episodes=sorted((e for p in parts for e in p[0]), key=lambda e: e.traj_id),
                             generated_tokens=sum(p[2] for p in parts), generation_s=max(p[3] for p in parts),
                             wall_s=max(p[4] for p in parts))
        n_steps = sum(p[1] for p in parts)
        metrics = total.metrics(prefix)
        metrics[f"{prefix}/invalid_action_rate"] = sum(e.invalid_actions for e in total.episodes) / max(1, n_steps)
        return total, n_steps, metrics, {k: sum(p[5][k] for p in parts) for k in counters}

    def _global_update_stats(self, sums: dict[str, float], tokens: int, token_log_ratio_min: float,
                             ) -> tuple[dict[str, float], int, float]:
        """Sum the ranks' weighted loss statistics and token counts (the grad norm is global already)."""
        keys = sorted(k for k in sums if k != "losses/grad_norm")
        keys = sorted(set().union(*self.dist.all_gather_object(keys)))
        vals = self.dist.all_reduce_sum(torch.tensor([sums.get(k, 0.0) for k in keys] + [float(tokens)],
                                                     dtype=torch.float64)).tolist()
        out = dict(sums)
        out.update(zip(keys, vals[:-1]))
        return out, int(vals[-1]), self.dist.all_reduce_min(token_log_ratio_min)

    # -- what the update needs besides the rollout ------------------------------------------
    def critic_values(self, steps: Sequence[StepRecord]) -> tuple[torch.Tensor | None, list[list[float]] | None]:
        """V(s_t) per step (step critic) or per response token (token critic), at rollout weights.

        Values read during generation (a shared head) are used as they are; otherwise (a
        separate critic, or a backend that returns none) one no-grad scoring pass computes them.
        """
        critic = self.algo.critic
        if critic == "none":
            return None, None
        if critic == "step" and all("value" in s.info for s in steps):
            return torch.tensor([float(s.info["value"]) for s in steps]), None
        if critic == "token" and all(s.info.get("token_values") is not None
                                     and len(s.info["token_values"]) == len(s.response_ids) for s in steps):
            return None, [list(s.info["token_values"]) for s in steps]
        step_values: list[float] = []
        token_values: list[list[float]] = []
        mb = self.cfg.micro_batch_size
        with torch.no_grad():
            for k in range(0, len(steps), mb):
                chunk = steps[k:k + mb]
                out = self.policy.score([s.prompt_ids for s in chunk], [s.response_ids for s in chunk],
                                        values=critic, logprobs=False)
                if critic == "step":
                    step_values += out.step_values.cpu().tolist()
                else:
                    tv = out.token_values.cpu()
                    token_values += [tv[j, : len(s.response_ids)].tolist() for j, s in enumerate(chunk)]
        return (torch.tensor(step_values), None) if critic == "step" else (None, token_values)

    def bootstrap_values(self, steps: Sequence[StepRecord]) -> dict[int, float]:
        """traj_id -> V(s_T+1) of each truncated episode (none without a critic or with bootstrap off)."""
        if not self.collector.read_bootstrap:
            return {}
        # values read during the rollout (same weights) first; a forward pass for the rest
        boot = {s.traj_id: float(s.info["bootstrap_value"]) for s in steps
                if s.truncated and "bootstrap_value" in s.info}
        missing = [s for s in steps if s.truncated and "bootstrap_prompt_ids" in s.info and s.traj_id not in boot]
        if missing:
            values = self.policy.prompt_values([s.info["bootstrap_prompt_ids"] for s in missing])
            boot.update({s.traj_id: float(v) for s, v in zip(missing, values)})
        return boot

    def uses_learner_logprobs(self) -> bool:
        """Whether the update's old log-probs are recomputed by the learner rather than taken from the rollout.

        True when forced (``recompute_logprobs``), in ``async_rollout`` (the rollout's weights are
        one version behind) and when the generator says its log-probs are not exact (bf16, a server).
        """
        cfg = self.cfg
        return bool(cfg.recompute_logprobs or cfg.async_rollout or not self.generator.logprobs_exact)

    def learner_logprobs(self, steps: Sequence[StepRecord], width: int) -> torch.Tensor:
        """``[M, width]`` log-probs of the responses under the current weights (one no-grad pass, eval mode)."""
        out = torch.zeros((len(steps), width))
        mb = self.cfg.micro_batch_size
        was = self.policy.training
        self.policy.eval()
        try:
            with torch.no_grad():
                for k in range(0, len(steps), mb):
                    chunk = steps[k:k + mb]
                    lp = self.policy.score([s.prompt_ids for s in chunk], [s.response_ids for s in chunk]).logprobs
                    out[k:k + len(chunk), : lp.shape[1]] = lp.float().cpu()
        finally:
            self.policy.train(was)
        return out

    def _logprob_mismatch(self, learner: torch.Tensor, rollout: torch.Tensor, mask: torch.Tensor,
                          ) -> dict[str, float]:
        """Mean and max |learner - rollout| per-token log-prob over the response tokens (all ranks)."""
        diff = (learner - rollout).abs() * mask
        total = torch.stack([diff.sum().double(), mask.sum().double()])
        biggest = float(diff.max()) if diff.numel() else 0.0
        if self.dist.active:
            total = self.dist.all_reduce_sum(total)
            biggest = -self.dist.all_reduce_min(-biggest)
        return {"perf/logprob_mismatch": float(total[0] / total[1].clamp(min=1.0)),
                "perf/logprob_mismatch_max": biggest}

    def reference_logprobs(self, steps: Sequence[StepRecord], width: int) -> torch.Tensor:
        """``[M, width]`` log-probs of the responses under the frozen reference policy (KL)."""
        if self.ref is None:
            raise InvalidConfig("kl_coef", self.cfg.kl_coef, "a value > 0 (the reference policy is off)")
        out = torch.zeros((len(steps), width))
        mb = self.cfg.micro_batch_size
        with torch.no_grad():
            for k in range(0, len(steps), mb):
                chunk = steps[k:k + mb]
                lp = self.ref.score([s.prompt_ids for s in chunk], [s.response_ids for s in chunk]).logprobs.cpu()
                out[k:k + len(chunk), : lp.shape[1]] = lp
        return out

    def evaluate(self, n: int | None = None) -> dict[str, float]:
        """Success/return/length on held-out seeds ``eval_seed ...`` (greedy by default)."""
        cfg = self.cfg
        n = n or cfg.eval_episodes
        seeds = [cfg.eval_seed + i for i in range(n)]
        params = SamplingParams(cfg.max_new_tokens, cfg.eval_temperature or 1.0, 1.0,
                                greedy=cfg.eval_temperature == 0, seed=cfg.seed + 999_983)
        self.refresh_sampling_weights()
        # the ranks share the episodes; a live bar (rank 0's console) shows this process's part
        lo, hi = distributed.shard_seeds(n, 1, self.dist.rank, self.dist.world) if self.dist.active else (0, n)
        with episode_progress(self.console, "eval (held-out)", hi - lo, cfg.progress) as on_progress:
            part = self.collector.collect(seeds[lo:hi], [-1] * (hi - lo), params, traj_id_start=-10_000_000 + lo,
                                          on_progress=on_progress)
        if not self.dist.active:
            # per-seed outcomes in seed order ("0"/"1"): two evaluations pair up (report.paired_gain)
            outcomes = "".join("1" if e.success else "0" for e in sorted(part.episodes, key=lambda e: e.seed))
            return {**part.metrics("eval"), "eval/successes": outcomes}
        return self._global_rollout(part, {}, "eval")[2]

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self, iteration: int) -> dict[str, Any]:
        """What a checkpoint holds: trainable weights, optimizer, RNG states, counters, config."""
        return {
            "iteration": iteration,
            "trainable": {n: p.detach().cpu().clone() for n, p in self.policy.named_parameters() if p.requires_grad},
            "optimizer": self.optimizer.state_dict(),
            "rng": _rng_state(),
            **({"rng_ranks": self.dist.all_gather_object(_rng_state())} if self.dist.active else {}),
            "env_steps": self.env_steps,
            "episodes": self.episodes_done,
            "config": config_to_dict(self.cfg),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint of the same model and options."""
        missing = self.policy.load_state_dict(state["trainable"], strict=False)
        if missing.unexpected_keys:
            raise StepgymError(f"checkpoint {state.get('path', '')} does not match this model/config (unexpected "
                               f"keys such as {missing.unexpected_keys[:3]}); resume with the same options")
        self.optimizer.load_state_dict(state["optimizer"])
        ranks = state.get("rng_ranks") or []
        # a distributed run at the same world size: each rank's own RNG states; otherwise rank 0's
        _set_rng_state(ranks[self.dist.rank] if len(ranks) == self.dist.world and self.dist.active else state["rng"])
        self.start_iteration = int(state["iteration"]) + 1
        self.env_steps = int(state.get("env_steps", 0))
        self.episodes_done = int(state.get("episodes", 0))

    def save_checkpoint(self, iteration: int) -> str:
        """Write ``checkpoints/iter_NNNNNN.pt`` and refresh ``policy/``."""
        path = self.run_dir.save_checkpoint(iteration, self.state_dict(iteration))
        if self.dist.is_main:
            self.save_policy()
        return path

    def save_policy(self) -> str:
        """Refresh ``OUT/policy`` (the weights, tokenizer and the prompt/decode settings)."""
        return self.policy.save_pretrained(self.run_dir.policy_dir, extra=config_to_dict(self.cfg),
                                           settings=PolicySettings.from_config(self.cfg))

    def _resume(self) -> None:
        state = self.run_dir.latest_checkpoint()
        if state is None:
            self.console.print(f"[yellow]no checkpoint in {self.run_dir.checkpoint_dir}; starting from iteration 1[/]")
            self.run_dir.load_metrics(up_to_iteration=-1 if self.cfg.eval_before else 0)
            return
        self.load_state_dict(state)
        self.run_dir.load_metrics(up_to_iteration=self.start_iteration - 1)
        self.console.print(f"resumed from {state['path']} (iteration {self.start_iteration - 1})")

    # -- the run ------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Run the remaining iterations; returns a summary dict (also written to summary.json)."""
        if not self._setup_done:
            self.setup()
        cfg, run = self.cfg, self.run_dir
        trainable, total = count_parameters(self.policy)
        mixed = self.policy.autocast_dtype
        precision = f" {str(mixed).removeprefix('torch.')} (mixed)" if mixed is not None else ""
        self.console.print(f"[bold]stepgym train[/] {cfg.algo} on {cfg.env} {cfg.env_kwargs or ''} | model {cfg.model}"
                           f"{' (init ' + cfg.init + ')' if cfg.init else ''} | {trainable / 1e6:.2f}M/"
                           f"{total / 1e6:.2f}M trainable params | {self.device}{precision} | out {cfg.out}")
        interrupted = False
        last_done = self.start_iteration - 1
        with self._ctrl_c_stops_the_run():
            if cfg.eval_before and self.start_iteration == 1 and not run.has_row(0):
                t_eval = time.perf_counter()
                row0 = {"iteration": 0, **self.evaluate()}
                run.log(row0)
                self.console.print(f"before training: eval success {row0['eval/success_rate']:.2f} "
                                   f"return {row0['eval/episode_return']:.2f} "
                                   f"steps/ep {row0['eval/episode_length']:.1f} "
                                   f"({cfg.eval_episodes} episodes, {time.perf_counter() - t_eval:.1f}s)")
            with report.progress_bar(self.console, cfg.progress) as progress:
                task = progress.add_task("training", total=cfg.iterations, completed=self.start_iteration - 1)
                for it in range(self.start_iteration, cfg.iterations + 1):
                    try:
                        row = self.run_iteration(it)
                    except Interrupted:
                        interrupted = True
                        break
                    run.log(row)
                    last_done = it
                    progress.console.print(report.metrics_line(row, cfg.iterations))
                    progress.update(task, advance=1)
                    if cfg.save_every and it % cfg.save_every == 0 and it != cfg.iterations:
                        self.save_checkpoint(it)
                    if self.dist.any(self.stop_requested):
                        interrupted = True
                        break
                    if cfg.max_env_steps and self.env_steps >= cfg.max_env_steps:
                        if "eval/success_rate" not in row:  # the budget ends the run: close it with an evaluation
                            run.update_last(self.evaluate())
                        break
        if last_done >= 1 and (last_done >= self.start_iteration or interrupted or last_done == cfg.iterations):
            self.save_checkpoint(last_done)
        pending, self._pending = self._pending, None
        self._discard(pending)  # a rollout for an iteration that will not run (budget, Ctrl-C)
        summary = run.finish(f"{cfg.algo} on {cfg.env}", {"iterations_done": last_done, "interrupted": interrupted,
                                                          "algo": cfg.algo}, console=self.console)
        self.collector.close()
        if cfg.async_rollout:
            self.async_collector.close()
        return summary

    @contextlib.contextmanager
    def _ctrl_c_stops_the_run(self) -> Iterator[None]:
        """First Ctrl-C: finish the iteration, checkpoint, stop. A second one aborts."""
        def on_sigint(signum: int, frame: Any) -> None:  # pragma: no cover - exercised via subprocess tests
            if self.stop_requested:
                raise KeyboardInterrupt
            self.stop_requested = True
            self.console.print("[yellow]Ctrl-C: saving a checkpoint and stopping (Ctrl-C again to abort "
                               "without saving)[/]")

        try:
            previous = signal.signal(signal.SIGINT, on_sigint)
        except ValueError:  # not the main thread
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


class _PendingRollout:
    """One background collection (``async_rollout``): a thread running ``work`` for ``iteration``."""

    def __init__(self, iteration: int, version: int, work: Any):
        self.iteration = iteration
        self.version = version
        self._out: Any = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._out = work()
            except BaseException as exc:  # re-raised in the learner's thread by result()
                self._error = exc

        self.thread = threading.Thread(target=run, name=f"rollout-{iteration}", daemon=True)
        self.thread.start()

    def result(self) -> Any:
        """Wait for the collection; its rollout and counters (or its exception, raised here)."""
        self.thread.join()
        if self._error is not None:
            raise self._error
        return self._out


def _sampler_counters(sampler: Sampler) -> dict[str, int]:
    """The sampler's running token counts (cache reuse, speculation)."""
    return {"reused_tokens": sampler.reused_tokens, "prefilled_tokens": sampler.prefilled_tokens,
            "drafted_tokens": sampler.drafted_tokens, "accepted_tokens": sampler.accepted_tokens}


def _global_std(dist: distributed.DistContext, x: torch.Tensor) -> float:
    """The (unbiased) std of ``x`` over all ranks' entries."""
    x = x.detach().double().reshape(-1)
    n, s = dist.all_reduce_sum(torch.stack([torch.tensor(float(x.numel()), dtype=torch.float64), x.sum()])).tolist()
    if n < 2:
        return 0.0
    sq = float(dist.all_reduce_sum(((x - s / n) ** 2).sum().reshape(1))[0])
    return (sq / (n - 1)) ** 0.5


def _targets(x: torch.Tensor | None, name: str) -> torch.Tensor:
    if x is None:
        raise InvalidConfig("algo", name, f"an advantage estimator that returns {name} for the algorithm's critic")
    return x


def _fill_by_rows(units: Sequence[list[int]], size: int) -> list[list[list[int]]]:
    """Consecutive groups of ``units`` (lists of rows) holding at most ``size`` rows (a bigger unit alone)."""
    groups: list[list[list[int]]] = [[]]
    for u in units:
        if groups[-1] and sum(len(x) for x in groups[-1]) + len(u) > size:
            groups.append([])
        groups[-1].append(u)
    return [g for g in groups if g]
