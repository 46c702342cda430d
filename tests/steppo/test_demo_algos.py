"""bench/demo_algos.py: every algorithm starts from the StepPO run's warm start, results are kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXTRA = ("--model tiny --sft-episodes 4 --iterations 1 --episodes-per-iteration 8 --num-envs 8 "
         "--eval-episodes 8 --max-new-tokens 8 --dtype float32 --no-tensorboard")


def _bench(out, *algos):
    return subprocess.run([sys.executable, os.path.join(ROOT, "bench", "demo_algos.py"), "--algos", *algos,
                           "--seeds", "0", "--threads", "1", "--out", str(out), "--extra", EXTRA],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_demo_algos_shares_the_warm_start_and_keeps_finished_runs(tmp_path):
    out = tmp_path / "cmp"
    proc = _bench(out, "steppo", "grpo")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"steppo_s0", "grpo_s0"}
    for r in results.values():
        assert 0.0 <= r["before"] <= 1.0 and 0.0 <= r["after"] <= 1.0
        assert abs(r["gain"] - (r["after"] - r["before"])) < 1e-9
        assert r["gain_low"] <= r["gain"] <= r["gain_high"]
    # GRPO started from the StepPO run's warm start, not from a warm start of its own
    config = json.loads((out / "grpo_s0" / "config.json").read_text())
    assert config["init"].endswith(os.path.join("steppo_s0", "sft")) and config["algo"] == "grpo"
    assert not (out / "grpo_s0" / "sft").exists() and (out / "steppo_s0" / "sft" / "policy").is_dir()
    assert "| grpo | 1 |" in proc.stdout  # the per-algorithm summary table
    # a second call reruns nothing: the finished runs are read back
    again = _bench(out, "steppo", "grpo")
    assert again.returncode == 0 and "$ stepgym" not in again.stdout
    assert json.loads((out / "results.json").read_text()) == results


def test_demo_algos_needs_steppo_for_the_warm_start(tmp_path):
    proc = _bench(tmp_path / "cmp", "ppo")
    assert proc.returncode != 0 and "must include steppo" in proc.stderr
