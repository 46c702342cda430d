"""The algorithm registry: lookups, errors, and a user's own algorithm trained through the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from stepgym.core import StepRecord
from stepgym.errors import InvalidConfig
from steppo import algos
from steppo.algos import Advantages, Algorithm, StepBatch, get_algorithm, register_algorithm
from steppo.config import ALGOS, config_class_for, make_train_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOY = "tests.steppo.toy:steppotest/Boxes-v0"


def test_builtins_are_registered_like_a_user_algorithm_and_match_the_cli_names():
    assert algos.builtin_algorithms() == ALGOS
    for name in ALGOS:
        spec = get_algorithm(name)
        assert spec.advantage in algos.ADVANTAGE_ESTIMATORS and spec.policy_loss in algos.POLICY_LOSSES
        assert config_class_for(name).critics == (("none",) if spec.critic == "none" else ("step", "token"))
    steppo = get_algorithm("steppo")
    assert (steppo.advantage, steppo.policy_loss, steppo.critic) == ("step_gae", "step", "step")


def test_unknown_names_get_a_clear_error():
    with pytest.raises(InvalidConfig, match="did you mean 'steppo'"):
        get_algorithm("stepo")
    with pytest.raises(InvalidConfig, match="importable module"):
        get_algorithm("no_such_pkg.algos:x")
    with pytest.raises(InvalidConfig, match="an Algorithm named 'nope'"):
        get_algorithm("steppo.algos:nope")
    with pytest.raises(InvalidConfig, match="register_policy_loss"):
        register_algorithm(Algorithm("broken", advantage="grpo", policy_loss="no_such_loss"))
    with pytest.raises(InvalidConfig, match="critic"):
        Algorithm("x", "grpo", "token", critic="both")


def _rec(traj, t, reward, n_tokens, group=0):
    return StepRecord(prompt_ids=[1], response_ids=[2] * n_tokens, logprobs=[-1.0] * n_tokens, reward=reward,
                      traj_id=traj, step_index=t, done=False, group_id=group)


def test_step_batch_layouts_round_trip():
    # steps given out of order: the layout sorts each trajectory by step_index
    steps = [_rec(5, 1, 1.0, 3), _rec(3, 0, 0.0, 1), _rec(5, 0, 0.5, 2), _rec(3, 1, 0.0, 2), _rec(3, 2, 2.0, 1)]
    b = StepBatch.from_steps(steps)
    assert b.traj.tolist() == [0, 1, 0, 1, 1] and b.pos.tolist() == [1, 0, 0, 1, 2]
    assert b.to_grid(b.rewards).tolist() == [[0.5, 1.0, 0.0], [0.0, 0.0, 2.0]]
    assert torch.equal(b.from_grid(b.to_grid(b.rewards)), b.rewards)
    x = torch.arange(15, dtype=torch.float32).reshape(5, 3) * b.mask
    rows = b.to_token_rows(x)
    # trajectory 5: step 0's 2 tokens, then step 1's 3 tokens
    assert rows[0].tolist() == [6.0, 7.0, 0.0, 1.0, 2.0]
    assert torch.equal(b.from_token_rows(rows), x)
    assert b.discounted_returns(0.5).tolist() == [1.0, 0.5, 1.0, 1.0, 2.0]


def test_advantages_complete_fills_the_missing_view():
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    a = Advantages(step=torch.tensor([2.0, -1.0])).complete(mask)
    assert a.token.tolist() == [[2.0, 2.0, 0.0], [-1.0, 0.0, 0.0]]
    b = Advantages(token=torch.tensor([[1.0, 3.0, 0.0], [4.0, 0.0, 0.0]])).complete(mask)
    assert b.step.tolist() == [2.0, 4.0]
    with pytest.raises(InvalidConfig):
        Advantages().complete(mask)


def _doc_algorithm() -> str:
    text = open(os.path.join(ROOT, "docs", "algorithm.md")).read()
    section = text[text.index("### Your own algorithm"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_documented_user_algorithm_is_short_and_trains_through_the_cli(tmp_path):
    code = _doc_algorithm()
    assert len(code.strip().splitlines()) < 40
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "algos.py").write_text(code)
    out = tmp_path / "run"
    # like the `stepgym` console script: the working directory (which holds mypkg) is not on sys.path
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run(
        [sys.executable, "-P", "-m", "stepgym", "train", "--algo", "mypkg.algos:my_algo", "--model", "tiny", "--env", TOY,
         "--stop-strings", "--max-new-tokens", "6", "--episodes-per-iteration", "4", "--num-envs", "4",
         "--eval-episodes", "2", "--iterations", "2", "--threads", "1", "--no-progress", "--no-tensorboard",
         "--out", str(out)], capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    assert "losses/policy" in rows[1] and "losses/value" not in rows[1]  # critic="none"
    assert json.loads((out / "config.json").read_text())["algo"] == "mypkg.algos:my_algo"
    # ...and resumes: the algorithm is found again from the saved config
    res = subprocess.run(
        [sys.executable, "-P", "-m", "stepgym", "train", "--algo", "mypkg.algos:my_algo", "--model", "tiny", "--env", TOY,
         "--stop-strings", "--max-new-tokens", "6", "--episodes-per-iteration", "4", "--num-envs", "4",
         "--eval-episodes", "2", "--iterations", "3", "--threads", "1", "--no-progress", "--no-tensorboard",
         "--out", str(out), "--resume"], capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3]


def test_a_user_algorithm_with_a_critic_gets_the_actor_critic_config(tmp_path):
    spec = register_algorithm(Algorithm("test_step_gae_token_ratio", advantage="step_gae", policy_loss="token",
                                        critic="step"))
    cfg = make_train_config({"algo": spec.name, "lam": 0.9, "model": "tiny"})
    assert type(cfg).__name__ == "StepPOConfig" and cfg.group_size == 1 and cfg.clip_range() == (0.2, 0.2)
    with pytest.raises(InvalidConfig, match="no such option"):
        make_train_config({"algo": "grpo", "lam": 0.9})
