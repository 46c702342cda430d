"""Mixed precision (bf16 autocast), the learner's recomputed old log-probs, and asynchronous rollouts."""

from __future__ import annotations

import math
import os

import pytest
import torch
from rich.console import Console

import tests.steppo.toy  # noqa: F401  (registers steppotest/Boxes-v0)
from stepgym.errors import InvalidConfig
from steppo.config import make_train_config
from steppo.models import load_model
from steppo.policy import Policy
from steppo.report import read_metrics
from steppo.rollout import LocalGenerator, SamplingParams
from steppo.sampling import Sampler
from steppo.trainer import Trainer

TOY = "tests.steppo.toy:steppotest/Boxes-v0"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _cfg(out, **kw):
    base = dict(model="tiny", env=TOY, env_kwargs={}, stop_strings=(), max_new_tokens=6, episodes_per_iteration=4,
                num_envs=4, eval_episodes=2, eval_every=0, eval_before=False, out=str(out), progress=False,
                tensorboard=False, threads=1, lr=3e-4, save_every=1, iterations=1, epochs=1)
    base.update(kw)
    return make_train_config(base)


def _train(cfg):
    trainer = Trainer(cfg, console=Console(quiet=True))
    trainer.train()
    return trainer, read_metrics(os.path.join(cfg.out, "metrics.jsonl"))


# -- precision ---------------------------------------------------------------------------------
def test_bf16_policy_keeps_float32_weights_and_scores_under_autocast():
    lm, tok = load_model("tiny")
    pol = Policy(lm, tok, autocast_dtype=torch.bfloat16)
    out = pol.score([[1, 2, 3, 4]], [[5, 6, 7]], values="step")
    assert next(pol.lm.parameters()).dtype == torch.float32
    assert out.logprobs.dtype == torch.float32 and torch.isfinite(out.logprobs).all()
    ref = Policy(lm, tok).score([[1, 2, 3, 4]], [[5, 6, 7]]).logprobs
    diff = (out.logprobs - ref).abs().max()
    assert 0 < diff < 0.1  # bf16 rounding shows, but the same distribution


def test_dtype_auto_is_bf16_exactly_where_the_device_has_native_kernels(monkeypatch):
    from steppo.loading import resolve_dtype

    cpu = torch.device("cpu")
    assert resolve_dtype("float32", cpu) == torch.float32
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16  # asked for by name: always honoured
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert resolve_dtype("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert resolve_dtype("auto", cpu) == torch.float32  # emulated bf16 is slow: stay float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float32


def test_dtype_auto_trains_in_what_it_resolves_to(tmp_path):
    from steppo.loading import resolve_dtype

    trainer, rows = _train(_cfg(tmp_path / "auto", dtype="auto"))
    want = resolve_dtype("auto", torch.device("cpu"))
    assert trainer.policy.autocast_dtype == (None if want == torch.float32 else want)
    assert next(trainer.sample_policy.lm.parameters()).dtype == want
    assert math.isfinite(rows[-1]["losses/policy"])


def test_models_use_sdpa_attention():
    lm, _ = load_model("tiny")
    assert lm.config._attn_implementation == "sdpa"


def test_bf16_sampler_gives_valid_generations_and_inexact_logprobs():
    lm, tok = load_model("tiny")
    pol = Policy(lm.to(torch.bfloat16), tok, critic="none")
    gen = LocalGenerator(Sampler(pol, stop_strings=()), batch_size=4)
    assert gen.logprobs_exact is False
    outs = gen.generate([[1, 2, 3], [4, 5, 6, 7, 8]], SamplingParams(max_new_tokens=8, seed=0))
    vocab = len(tok)
    for g in outs:
        assert 1 <= len(g.response_ids) <= 8 and len(g.logprobs) == len(g.response_ids)
        assert all(0 <= t < vocab for t in g.response_ids)
        assert all(math.isfinite(x) and x <= 0 for x in g.logprobs)
    fp32 = LocalGenerator(Sampler(Policy(load_model("tiny")[0], tok, critic="none")))
    assert fp32.logprobs_exact is True


def test_bf16_train_iteration_has_finite_losses_and_records_the_mismatch(tmp_path):
    trainer, rows = _train(_cfg(tmp_path / "bf16", dtype="bfloat16"))
    row = rows[-1]
    assert trainer.policy.autocast_dtype == torch.bfloat16
    assert next(trainer.policy.lm.parameters()).dtype == torch.float32  # master weights
    assert next(trainer.sample_policy.lm.parameters()).dtype == torch.bfloat16  # the sampler's copy
    assert trainer.uses_learner_logprobs()
    for k in ("losses/policy", "losses/value", "losses/grad_norm"):
        assert math.isfinite(row[k]), k
    assert row["perf/logprob_mismatch"] > 0  # bf16 sampling vs the learner's autocast pass
    assert row["perf/logprob_mismatch_max"] >= row["perf/logprob_mismatch"]
    assert trainer.optimizer.state[trainer.policy.policy_parameters()[0]]["exp_avg"].dtype == torch.float32


def test_float32_recomputed_logprobs_match_the_rollout(tmp_path):
    trainer, rows = _train(_cfg(tmp_path / "fp32", recompute_logprobs=True))
    assert rows[-1]["perf/logprob_mismatch"] < 1e-4
    assert rows[-1]["perf/logprob_mismatch_max"] < 1e-3


def test_float32_without_the_switch_uses_the_rollout_logprobs(tmp_path):
    trainer, rows = _train(_cfg(tmp_path / "plain"))
    assert not trainer.uses_learner_logprobs()
    assert "perf/logprob_mismatch" not in rows[-1]
    assert rows[-1]["charts/policy_lag"] == 0


# -- asynchronous rollouts -------------------------------------------------------------------
def test_async_run_records_policy_versions_with_lag_at_most_one(tmp_path):
    cfg = _cfg(tmp_path / "async", iterations=3, async_rollout=True)
    trainer = Trainer(cfg, console=Console(quiet=True))
    trainer.setup()
    seen: dict[int, set[int]] = {}
    original = trainer.update

    def update(rollout, it):
        versions = {s.info["policy_version"] for s in rollout.steps}  # every step record has one
        assert len(rollout.steps) > 0 and all("policy_version" in s.info for s in rollout.steps)
        seen[it] = versions
        return original(rollout, it)

    trainer.update = update
    trainer.train()
    rows = read_metrics(os.path.join(cfg.out, "metrics.jsonl"))
    lags = {r["iteration"]: r["charts/policy_lag"] for r in rows if r["iteration"] >= 1}
    assert seen == {1: {0}, 2: {0}, 3: {1}}  # iteration k >= 2 sampled with version k - 2
    assert lags == {1: 0, 2: 1, 3: 1} and max(lags.values()) <= 1
    assert all(math.isfinite(r["losses/policy"]) for r in rows if r["iteration"] >= 1)
    assert all("perf/logprob_mismatch" in r for r in rows if r["iteration"] >= 1)
    assert trainer._pending is None  # nothing left running


def test_async_run_that_stops_early_discards_its_pending_rollout_and_resumes(tmp_path):
    out = tmp_path / "resume"
    # the env-step budget ends the run after iteration 1, while iteration 2's rollout is being collected
    first, rows = _train(_cfg(out, iterations=3, async_rollout=True, max_env_steps=1))
    assert [r["iteration"] for r in rows if r["iteration"] >= 1] == [1]
    assert first._pending is None
    trainer, rows = _train(_cfg(out, iterations=3, async_rollout=True, resume=True))
    lags = {r["iteration"]: r["charts/policy_lag"] for r in rows if r["iteration"] >= 1}
    assert lags == {1: 0, 2: 0, 3: 1}  # resumed: iteration 2 was collected again, in the foreground


def test_async_rejects_ray_workers(tmp_path):
    with pytest.raises(InvalidConfig, match="async_rollout.*rollout-workers"):
        _cfg(tmp_path / "x", async_rollout=True, rollout_workers=1)


# -- CUDA (skipped without a GPU) -------------------------------------------------------------
@needs_cuda
def test_cuda_bf16_train_iteration(tmp_path):
    trainer, rows = _train(_cfg(tmp_path / "cuda", device="cuda", dtype="bfloat16", iterations=2,
                                async_rollout=True))
    assert trainer.policy.device.type == "cuda"
    assert next(trainer.sample_policy.lm.parameters()).device.type == "cuda"
    assert all(math.isfinite(r["losses/policy"]) for r in rows if r["iteration"] >= 1)
    assert 0 < rows[-1]["perf/logprob_mismatch"] < 0.5


@needs_cuda
def test_cuda_sampler_keeps_its_kv_cache_on_the_device():
    lm, tok = load_model("tiny")
    pol = Policy(lm.to("cuda", torch.bfloat16), tok, critic="none")
    sampler = Sampler(pol, stop_strings=())
    gens = sampler.generate([[1, 2, 3]], max_new_tokens=4, sessions=[0])
    assert len(gens[0].response_ids) >= 1 and sampler.num_sessions == 1
    again = sampler.generate([[1, 2, 3] + gens[0].response_ids + [9]], max_new_tokens=4, sessions=[0])
    assert sampler.reused_tokens > 0 and len(again[0].response_ids) >= 1
    out = pol.score([[1, 2, 3]], [gens[0].response_ids])
    assert out.logprobs.device.type == "cuda"


def test_cli_async_and_dtype_options():
    import argparse

    from stepgym.commands import train
    from steppo.config import config_from_args

    p = argparse.ArgumentParser()
    train.add_arguments(p)
    cfg = config_from_args(p.parse_args(["--async", "--dtype", "bfloat16", "--recompute-logprobs"]))
    assert cfg.async_rollout and cfg.recompute_logprobs and cfg.dtype == "bfloat16"
    assert not config_from_args(p.parse_args(["--no-async"])).async_rollout
