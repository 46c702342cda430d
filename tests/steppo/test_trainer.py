"""Trainer: advantages per algorithm, resume equality, Ctrl-C, and a small learning check."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

import tests.steppo.toy  # noqa: F401  (registers steppotest/Boxes-v0)
from stepgym.core import StepRecord
from steppo.algos import builtin_algorithms, get_algorithm
from steppo.config import SFTConfig, make_train_config
from steppo.report import read_metrics
from steppo.trainer import TIME_KEYS, Trainer, compute_advantages

TOY = "tests.steppo.toy:steppotest/Boxes-v0"


def _cfg(out, **kw):
    base = dict(model="tiny", env=TOY, env_kwargs={}, stop_strings=(), max_new_tokens=6, episodes_per_iteration=4,
                num_envs=4, eval_episodes=4, eval_every=0, out=str(out), progress=False, tensorboard=False,
                threads=1, lr=3e-4, save_every=1)
    base.update(kw)
    if base.get("algo") in ("grpo", "rloo", "gspo", "gigpo", "reinforce_pp"):
        base.setdefault("group_size", 4)
    return make_train_config(base)


def _steps():
    # two trajectories of one group: [0 reward, 1 reward] and [0, 0 (truncated)]
    def rec(traj, t, r, done, term=False, trunc=False, obs="o"):
        return StepRecord(prompt_ids=[1, 2], response_ids=[3, 4, 5][: 2 + t % 2], logprobs=[-1.0] * (2 + t % 2),
                          reward=r, traj_id=traj, step_index=t, done=done, terminated=term, truncated=trunc,
                          group_id=0, info={"observation": obs, "value": 0.5,
                                            "token_values": [0.5] * (2 + t % 2)})
    return [rec(0, 0, 0.0, False, obs="start"), rec(0, 1, 1.0, True, term=True, obs="mid"),
            rec(1, 0, 0.0, False, obs="start"), rec(1, 1, 0.0, True, trunc=True, obs="other")]


@pytest.mark.parametrize("algo", builtin_algorithms())
def test_every_algorithm_gets_advantages_of_the_right_shape(algo):
    cfg = make_train_config({"algo": algo, "group_size": 2, "episodes_per_iteration": 2})
    steps = _steps()
    sv = torch.tensor([s.info["value"] for s in steps])
    tv = [s.info["token_values"] for s in steps]
    batch, adv = compute_advantages(cfg, steps, step_values=sv, token_values=tv, bootstrap={1: 0.25})
    critic = get_algorithm(algo).critic
    assert batch.mask.shape == (4, 3) and batch.mask.sum() == 10
    assert adv.step.shape == (4,) and adv.token.shape == (4, 3)
    assert torch.all(adv.token[batch.mask == 0] == 0)
    # the successful trajectory's steps get a larger advantage than the failed one's
    assert adv.step[1] > adv.step[3]
    assert (adv.token.sum(-1) / batch.mask.sum(-1))[1] > (adv.token.sum(-1) / batch.mask.sum(-1))[3]
    if critic == "step":
        assert adv.step_returns.shape == (4,)
        # lambda = gamma = 1: return = reward-to-go (+ bootstrap 0.25 on the truncated episode)
        assert torch.allclose(adv.step_returns, torch.tensor([1.0, 1.0, 0.25, 0.25]))
    if critic == "token":
        assert adv.token_returns.shape == (4, 3)


def test_resume_continues_exactly(tmp_path):
    """3 iterations straight == 2 iterations, a stop, then --resume for the third."""
    a = Trainer(_cfg(tmp_path / "a", iterations=3))
    a.train()
    b = Trainer(_cfg(tmp_path / "b", iterations=3))
    run_iteration = b.run_iteration

    def stop_after_two(it):
        row = run_iteration(it)
        if it == 2:
            b.stop_requested = True  # what Ctrl-C does: finish the iteration, checkpoint, exit
        return row

    b.run_iteration = stop_after_two
    summary = b.train()
    assert summary["interrupted"] and summary["iterations_done"] == 2
    assert os.path.exists(tmp_path / "b" / "checkpoints" / "iter_000002.pt")
    # a killed run may have written a row past its checkpoint: resume must drop it
    with open(tmp_path / "b" / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"iteration": 3, "charts/success_rate": 0.123}) + "\n")
    Trainer(_cfg(tmp_path / "b", iterations=3, resume=True)).train()
    ra, rb = read_metrics(str(tmp_path / "a" / "metrics.jsonl")), read_metrics(str(tmp_path / "b" / "metrics.jsonl"))
    assert [r["iteration"] for r in ra] == [r["iteration"] for r in rb] == [0, 1, 2, 3]

    def strip(r):
        return {k: v for k, v in r.items() if not k.startswith(TIME_KEYS)}

    for x, y in zip(ra, rb):
        assert strip(x).keys() == strip(y).keys()
        for k in strip(x):
            assert x[k] == pytest.approx(y[k], rel=1e-4, abs=1e-6), k
    pa = torch.load(tmp_path / "a" / "checkpoints" / "iter_000003.pt", weights_only=False)["trainable"]
    pb = torch.load(tmp_path / "b" / "checkpoints" / "iter_000003.pt", weights_only=False)["trainable"]
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.allclose(pa[k], pb[k], atol=1e-5), k
    # runs refuse to overwrite each other by accident
    from stepgym.errors import InvalidConfig

    with pytest.raises(InvalidConfig, match="--resume"):
        Trainer(_cfg(tmp_path / "a", iterations=1)).setup()


@pytest.mark.parametrize("algo", ["ppo", "grpo", "gigpo"])
def test_baselines_run_one_iteration(tmp_path, algo):
    summary = Trainer(_cfg(tmp_path / algo, algo=algo, iterations=1, eval_before=False, save_every=0)).train()
    rows = read_metrics(str(tmp_path / algo / "metrics.jsonl"))
    assert summary["iterations_done"] == 1 and len(rows) == 1
    assert "losses/policy" in rows[0] and ("losses/value" in rows[0]) == (algo == "ppo")
    assert os.path.exists(tmp_path / algo / "policy" / "config.json")


def test_gspo_minibatches_keep_trajectories_whole(tmp_path):
    import numpy as np

    tr = Trainer(_cfg(tmp_path / "g", algo="gspo", minibatch_size=3, micro_batch_size=2))
    assert tr.algo.per_trajectory and tr.algo.policy_loss == "sequence"
    # trajectories of 2, 1, 3 and 2 rows
    traj = [0, 0, 1, 2, 2, 2, 3, 3]
    steps = [StepRecord(prompt_ids=[1], response_ids=[2], logprobs=[-1.0], reward=0.0, traj_id=t, step_index=0,
                        done=False) for t in traj]
    batches = tr.plan_minibatches(steps, np.random.default_rng(0))
    assert sorted(i for mb, _ in batches for i in mb) == list(range(len(steps)))
    for mb, micro in batches:
        assert sorted(i for idx, _ in micro for i in idx) == sorted(mb)
        for idx, _ in micro:  # every trajectory of a micro-batch is complete
            ts = {traj[i] for i in idx}
            assert sorted(idx) == sorted(i for i, t in enumerate(traj) if t in ts)
        # loss weights: each micro-batch's share of the minibatch's trajectories
        n_traj = len({traj[i] for i in mb})
        assert math.isclose(sum(w for _, w in micro), 1.0)
        assert all(math.isclose(w, len({traj[i] for i in idx}) / n_traj) for idx, w in micro)


@pytest.mark.parametrize("extra", [
    {"algo": "steppo", "critic": "separate", "kl_coef": 0.001, "entropy_coef": 0.01},
    {"algo": "steppo_no_step_gae"},
    {"algo": "steppo_no_step_ratio", "lora_r": 4},
    {"algo": "rloo"}, {"algo": "reinforce_pp"}, {"algo": "gspo"},
    {"algo": "steppo", "max_history_turns": 2, "history_stride": 2},
    {"algo": "steppo", "speculate": 3},
], ids=lambda e: "-".join(f"{k}={v}" for k, v in e.items()))
def test_options_run_one_iteration(tmp_path, extra):
    Trainer(_cfg(tmp_path / "run", iterations=1, eval_before=False, save_every=0, **extra)).train()
    row = read_metrics(str(tmp_path / "run" / "metrics.jsonl"))[-1]
    assert all(v == v for v in row.values() if isinstance(v, float))  # no NaN
    if extra.get("kl_coef"):
        assert row["losses/kl"] >= 0.0 and "losses/entropy" in row
    if extra.get("critic") == "separate":
        assert (tmp_path / "run" / "policy" / "critic" / "critic_trunk.pt").exists()
    if extra.get("speculate"):
        assert 0.0 <= row["perf/draft_acceptance"] <= 1.0
    else:
        assert "perf/draft_acceptance" not in row


def _warm_start(tmp_path, epochs: int) -> str:
    from steppo.sft import run_sft

    out = str(tmp_path / "sft")
    run_sft(SFTConfig(model="tiny", env=TOY, env_kwargs={}, episodes=16, epochs=epochs, lr=3e-3, batch_size=8,
                      out=out, stop_strings=(), progress=False, threads=1))
    return out


def test_steppo_learns_after_a_weak_warm_start(tmp_path):
    """Seeded: behaviour cloning leaves ~40% success; a few StepPO iterations raise it."""
    init = _warm_start(tmp_path, epochs=6)
    cfg = _cfg(tmp_path / "run", init=init, iterations=10, episodes_per_iteration=32, num_envs=16, lr=3e-4,
               eval_every=10, eval_episodes=64, eval_temperature=1.0, save_every=0)
    Trainer(cfg).train()
    rows = read_metrics(str(tmp_path / "run" / "metrics.jsonl"))
    before, after = rows[0]["eval/success_rate"], rows[-1]["eval/success_rate"]
    assert after >= before + 0.1, (before, after)
    assert rows[-1]["charts/invalid_action_rate"] < rows[1]["charts/invalid_action_rate"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_steppo_learns_on_more_seeds(tmp_path, seed):
    """The bigger version: other seeds, a longer run (see docs/benchmarks.md for ToolUse-v0)."""
    init = _warm_start(tmp_path, epochs=6)
    cfg = _cfg(tmp_path / "run", init=init, seed=seed, iterations=12, episodes_per_iteration=32, num_envs=16,
               lr=2e-4, eval_every=12, eval_episodes=64, eval_temperature=1.0, save_every=0)
    Trainer(cfg).train()
    rows = read_metrics(str(tmp_path / "run" / "metrics.jsonl"))
    assert rows[-1]["eval/success_rate"] > rows[0]["eval/success_rate"]


def test_packed_minibatches_hold_whole_episodes_and_weigh_rows(tmp_path):
    import numpy as np

    traj = [0, 0, 1, 2, 2, 2, 3, 3]
    steps = [StepRecord(prompt_ids=[1], response_ids=[2], logprobs=[-1.0], reward=0.0, traj_id=t, step_index=0,
                        done=False) for t in traj]
    tr = Trainer(_cfg(tmp_path / "p", algo="steppo", minibatch_size=4, micro_batch_size=2))
    for mb, micro in tr.plan_minibatches(steps, np.random.default_rng(1)):
        for idx, w in micro:
            ts = {traj[i] for i in idx}
            assert sorted(idx) == sorted(i for i, t in enumerate(traj) if t in ts)
            assert math.isclose(w, len(idx) / len(mb))
    flat = Trainer(_cfg(tmp_path / "f", algo="steppo", minibatch_size=4, micro_batch_size=2, pack_trajectories=False))
    sizes = [len(idx) for _, micro in flat.plan_minibatches(steps, np.random.default_rng(1))
             for idx, _ in micro]
    assert sizes == [2, 2, 2, 2]  # row by row


def test_prompt_cache_hit_is_reported_and_comes_from_kv_reuse(tmp_path):
    hits = {}
    for reuse in (True, False):
        out = tmp_path / f"r{reuse}"
        Trainer(_cfg(out, iterations=1, eval_before=False, save_every=0, kv_reuse=reuse)).train()
        row = read_metrics(str(out / "metrics.jsonl"))[-1]
        hits[reuse] = row["perf/prompt_cache_hit"]
        assert 0.0 <= hits[reuse] <= 1.0
    # the toy's second step extends the first one's prompt + response: most of it is cached
    assert hits[True] > 0.3 and hits[True] > hits[False]


@pytest.mark.parametrize("bootstrap", [True, False])
def test_bootstrap_truncated_decides_the_value_after_the_step_limit(tmp_path, monkeypatch, bootstrap):
    import steppo.trainer as T

    seen = []

    def spy(cfg, steps, **kw):
        seen.append((steps, kw["bootstrap"]))
        return compute_advantages(cfg, steps, **kw)

    monkeypatch.setattr(T, "compute_advantages", spy)
    tr = Trainer(_cfg(tmp_path / "b", env_kwargs={"max_steps": 1}, iterations=1, eval_before=False, save_every=0,
                      bootstrap_truncated=bootstrap))
    tr.train()
    (steps, boot), = seen
    trunc = {s.traj_id for s in steps if s.truncated}
    assert trunc, "a 1-step limit cuts every episode that did not finish"
    assert all(("bootstrap_value" in s.info) == bootstrap for s in steps if s.truncated)
    if bootstrap:  # the critic's V(s_T+1), read during the rollout
        assert set(boot) == trunc
        assert all(boot[s.traj_id] == s.info["bootstrap_value"] for s in steps if s.truncated)
    else:  # the step limit ends the task: value 0
        assert boot == {}


def test_micro_batches_follow_the_token_budget_and_sort_by_length(tmp_path):
    import numpy as np

    # 6 one-step episodes of lengths 5..30 tokens; each is its own packed sequence
    lens = [30, 5, 20, 10, 25, 15]
    steps = [StepRecord(prompt_ids=[1] * (n - 1), response_ids=[2], logprobs=[-1.0], reward=0.0, traj_id=t,
                        step_index=0, done=True) for t, n in enumerate(lens)]
    for budget, pack in ((40, True), (40, False), (0, True)):
        tr = Trainer(_cfg(tmp_path / f"m{budget}{pack}", algo="steppo", minibatch_size=6, micro_batch_size=6,
                          micro_batch_tokens=budget, pack_trajectories=pack))
        (mb, micro), = tr.plan_minibatches(steps, np.random.default_rng(0))
        assert sorted(i for idx, _ in micro for i in idx) == list(range(6))
        assert math.isclose(sum(w for _, w in micro), 1.0)
        chunk_lens = [[lens[i] for i in idx] for idx, _ in micro]
        flat = [n for c in chunk_lens for n in c]
        assert flat == sorted(flat)  # shortest first: similar lengths share a chunk
        if budget:
            # padded tokens = rows x longest row, within the budget
            assert all(len(c) * max(c) <= budget for c in chunk_lens)
            assert chunk_lens == [[5, 10], [15, 20], [25], [30]]
        else:
            assert chunk_lens == [sorted(lens)]  # the step cap (6) alone


def test_plan_micro_batches_caps_and_covers_every_unit():
    from steppo.batching import plan_micro_batches

    rng = __import__("random").Random(0)
    for _ in range(200):
        units = [(rng.randint(1, 4), [rng.randint(1, 60) for _ in range(rng.randint(1, 2))])
                 for _ in range(rng.randint(1, 12))]
        max_rows, max_tokens = rng.randint(1, 8), rng.choice([0, 30, 100, 400])
        chunks = plan_micro_batches(units, max_rows, max_tokens)
        assert sorted(u for c in chunks for u in c) == list(range(len(units)))
        for c in chunks:
            if len(c) > 1:  # a unit over a limit on its own is the only case allowed past it
                assert sum(units[u][0] for u in c) <= max_rows
                if max_tokens:
                    assert sum(len(units[u][1]) for u in c) * max(max(units[u][1]) for u in c) <= max_tokens
        # greedy: joining the next chunk's first unit would have broken a limit
        for a, b in zip(chunks, chunks[1:]):
            u = b[0]
            rows = sum(units[v][0] for v in a) + units[u][0]
            pad = (sum(len(units[v][1]) for v in a) + len(units[u][1])) * max(max(units[v][1]) for v in a + [u])
            assert rows > max_rows or (max_tokens and pad > max_tokens)


def test_chunking_does_not_change_the_update(tmp_path):
    """Same batch, same start: one chunk per step vs one chunk for all gives the same weights."""
    import copy

    from steppo.rollout import SamplingParams

    tr = Trainer(_cfg(tmp_path / "c", algo="steppo", epochs=1, minibatch_size=64, micro_batch_size=64,
                      max_grad_norm=0.0))
    tr.setup()
    seeds, groups = tr.iteration_seeds(1)
    batch = tr.collector.collect(seeds, groups, SamplingParams(6, 1.0, 1.0, seed=0), traj_id_start=0)
    w0 = copy.deepcopy(tr.policy.state_dict())
    o0 = copy.deepcopy(tr.optimizer.state_dict())
    res = {}
    for budget in (0, 1):  # 1 token: every episode in a chunk of its own
        tr.policy.load_state_dict(w0)
        tr.optimizer.load_state_dict(o0)
        tr.cfg.micro_batch_tokens = budget
        assert len(tr.plan_minibatches([s for s in batch.steps if s.response_ids],
                                       __import__("numpy").random.default_rng(0))[0][1]) == (1 if budget == 0 else 4)
        tr.update(batch, 1)
        res[budget] = {k: v.clone() for k, v in tr.policy.state_dict().items()}
    moved = max(float((res[0][k] - w0[k]).abs().max()) for k in w0)
    assert moved > 1e-5  # the update did something
    diff = max(float((res[0][k] - res[1][k]).abs().max()) for k in w0)
    assert diff < 1e-3 * moved
