"""Rollout workers on Ray: sharding and merging keep the in-process layout, a training run works,
one worker reproduces the in-process batch, and a worker that dies mid-iteration is replaced."""

from __future__ import annotations

import functools
import os

import pytest

ray = pytest.importorskip("ray")

import torch  # noqa: E402

import tests.steppo.toy  # noqa: E402,F401  (registers steppotest/Boxes-v0)
from steppo.policy import Policy  # noqa: E402
from steppo.ray_rollout import (  # noqa: E402
    RayCollector,
    merge_batches,
    shard_episodes,
    trainable_state,
    worker_seed,
)
from steppo.rollout import ChatPromptBuilder, Generator, InProcessCollector, LocalGenerator, SamplingParams  # noqa: E402
from steppo.rollout import make_env_fn  # noqa: E402
from steppo.sampling import Generation, Sampler  # noqa: E402

TOY = "tests.steppo.toy:steppotest/Boxes-v0"
#: four groups of two (seed, group id), then two singletons (as evaluation passes them)
SEEDS = [3, 3, 8, 8, 5, 5, 1, 1, 40, 41]
GROUPS = [0, 0, 1, 1, 2, 2, 3, 3, -1, -1]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


class ScriptedGenerator(Generator):
    """Answers from the prompt's length (a deterministic stand-in for a model) with a value."""

    def __init__(self, tok):
        self.tokenizer = tok

    def generate(self, prompts, params, sessions=None):
        out = []
        for p in prompts:
            text = ("open red", "open blue", "done")[len(p) % 3]
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            out.append(Generation(response_ids=ids, logprobs=[-0.5] * len(ids), text=text, stop_reason="eos",
                                  step_value=len(p) / 100, token_values=[0.1] * len(ids)))
        return out

    def bootstrap_values(self, prompts, sessions=None):
        return [len(p) / 1000 for p in prompts]


def _tok():
    from stepgym.models import load_model

    return load_model("tiny", seed=0)


def _env_fn(max_steps=3, die_marker=None):
    make = make_env_fn(TOY, {"max_steps": max_steps})
    if die_marker is None:
        return make

    def fn():
        env = make()
        reset = env.reset

        def reset_or_die(**kw):
            # the first reset anywhere kills its process (a worker lost mid-iteration)
            if not os.path.exists(die_marker):
                open(die_marker, "w").close()
                os._exit(1)
            return reset(**kw)

        env.reset = reset_or_die
        return env

    return fn


def scripted_collector(num_envs=3, die_marker=None):
    """Built inside a worker: the toy env (3-step limit: some episodes truncate) + ScriptedGenerator."""
    _, tok = _tok()
    return InProcessCollector(_env_fn(3, die_marker), ScriptedGenerator(tok), ChatPromptBuilder(tok), num_envs)


def tiny_collector(num_envs=4):
    """Built inside a worker: the toy env + the tiny model (shared value head) as a replica."""
    lm, tok = _tok()
    pol = Policy(lm, tok, critic="shared").eval()
    gen = LocalGenerator(Sampler(pol), values="step", batch_size=num_envs)
    return InProcessCollector(_env_fn(3), gen, ChatPromptBuilder(tok), num_envs)


def _same(a, b, exact_floats=True):
    """Two batches hold the same episodes and step records (floats within 1e-4 unless exact)."""
    assert [vars(e) for e in a.episodes] == [vars(e) for e in b.episodes]
    assert len(a.steps) == len(b.steps)
    for x, y in zip(a.steps, b.steps):
        assert (x.traj_id, x.step_index, x.group_id, x.prompt_ids, x.response_ids, x.reward, x.done,
                x.truncated, x.response_text) == (y.traj_id, y.step_index, y.group_id, y.prompt_ids,
                                                  y.response_ids, y.reward, y.done, y.truncated, y.response_text)
        assert set(x.info) == set(y.info)
        if exact_floats:
            assert x.logprobs == y.logprobs and x.info == y.info
        else:
            assert x.logprobs == pytest.approx(y.logprobs, abs=1e-4)
            for k in ("value", "bootstrap_value"):
                if k in x.info:
                    assert x.info[k] == pytest.approx(y.info[k], abs=1e-4)
    assert a.generated_tokens == b.generated_tokens


def test_shards_keep_groups_whole_and_the_merge_equals_the_in_process_layout():
    for n in (1, 2, 3, 4, 20):
        shards = shard_episodes(SEEDS, GROUPS, n)
        assert 1 <= len(shards) <= n
        assert [k for r in shards for k in r] == list(range(len(SEEDS)))  # contiguous, in order, all once
        for a, b in zip(shards, shards[1:]):  # no group is cut in two
            assert (SEEDS[a.stop - 1], GROUPS[a.stop - 1]) != (SEEDS[b.start], GROUPS[b.start])
    assert [len(r) for r in shard_episodes(SEEDS, GROUPS, 2)] == [6, 4]
    assert len(shard_episodes(SEEDS, GROUPS, 20)) == 6  # one shard per group at most

    # same generations: shards collected apart and merged == one collector over all seeds
    params = SamplingParams(max_new_tokens=4, seed=0)
    whole = scripted_collector().collect(SEEDS, GROUPS, params, traj_id_start=500)
    assert any(s.truncated and "bootstrap_value" in s.info for s in whole.steps)
    parts = [scripted_collector().collect(SEEDS[r.start:r.stop], GROUPS[r.start:r.stop], params,
                                          traj_id_start=500 + r.start) for r in shard_episodes(SEEDS, GROUPS, 3)]
    _same(merge_batches(parts), whole)


def test_one_worker_matches_the_in_process_batch_with_the_worker_seed():
    """Same weights (broadcast), same seeds, sampler seeded with worker_seed(seed, 0): equal batches."""
    lm, tok = _tok()
    pol = Policy(lm, tok, critic="shared").eval()
    with torch.no_grad():  # weights only the broadcast can give the worker's replica
        for p in pol.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    params = SamplingParams(max_new_tokens=5, seed=123)
    col = RayCollector(functools.partial(tiny_collector), 1, weights_fn=lambda: trainable_state(pol))
    try:
        remote = col.collect(SEEDS, GROUPS, params, traj_id_start=0)
        again = col.collect(SEEDS, GROUPS, params, traj_id_start=0)
    finally:
        col.close()
    local = InProcessCollector(_env_fn(3), LocalGenerator(Sampler(pol), values="step", batch_size=4),
                               ChatPromptBuilder(tok), 4)
    seeded = SamplingParams(max_new_tokens=5, seed=worker_seed(123, 0))
    _same(remote, local.collect(SEEDS, GROUPS, seeded, traj_id_start=0), exact_floats=False)
    _same(remote, again)  # deterministic for a given number of workers
    assert all("value" in s.info and s.info["token_values"] is not None for s in remote.steps)


def test_a_worker_that_dies_mid_iteration_is_replaced_and_nothing_counts_twice(tmp_path):
    """Two actors; the first env reset kills its actor: that shard runs again on a new one.

    With the same generations the merged batch is the in-process one (order, traj ids, values).
    """
    params = SamplingParams(max_new_tokens=4, seed=0)
    clean = scripted_collector().collect(SEEDS, GROUPS, params, traj_id_start=500)
    col = RayCollector(functools.partial(scripted_collector, die_marker=str(tmp_path / "died")), 2)
    try:
        batch = col.collect(SEEDS, GROUPS, params, traj_id_start=500)
        assert (tmp_path / "died").exists() and col.restarts == 1 and col.actors_started == 3
        assert len(batch.episodes) == len(SEEDS)
        assert len({e.traj_id for e in batch.episodes}) == len(SEEDS)
        assert len({(s.traj_id, s.step_index) for s in batch.steps}) == len(batch.steps)
        _same(batch, clean)
        assert len(col.collect(SEEDS, GROUPS, params).episodes) == len(SEEDS)  # the replacement keeps working
        col.should_stop = lambda: True  # Ctrl-C in the trainer: stop at once, drop the busy actors' work
        assert col.collect(SEEDS, GROUPS, params).episodes == [] and col.actors == [None, None]
    finally:
        col.close()
    assert ray.is_initialized()  # a cluster the collector did not start stays up


def test_train_one_iteration_with_two_rollout_workers(tmp_path):
    from steppo.report import read_metrics
    from steppo.trainer import Trainer
    from tests.steppo.test_trainer import _cfg

    cfg = _cfg(tmp_path / "run", iterations=1, rollout_workers=2, eval_before=False, save_every=0)
    tr = Trainer(cfg)
    summary = tr.train()
    assert summary["iterations_done"] == 1
    rows = read_metrics(str(tmp_path / "run" / "metrics.jsonl"))
    assert len(rows) == 1 and rows[0]["iteration"] == 1
    assert rows[0]["charts/episodes"] == cfg.episodes_per_iteration
    assert "losses/policy" in rows[0] and "eval/success_rate" in rows[0]
    assert rows[0]["perf/prompt_cache_hit"] > 0  # the workers' sampler counters reach the driver
    assert tr.collector.actors_started == 2 and all(a is None for a in tr.collector.actors)  # closed
