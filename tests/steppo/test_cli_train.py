"""`stepgym train` / `stepgym sft` end to end on the tiny model (subprocesses, like a user)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOY = "tests.steppo.toy:steppotest/Boxes-v0"
COMMON = ["--model", "tiny", "--env", TOY, "--env-kwargs", "{}", "--stop-strings", "--max-new-tokens", "6",
          "--episodes-per-iteration", "4", "--num-envs", "4", "--eval-episodes", "4", "--threads", "1"]


def _run(args, **kw):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), COLUMNS="120")
    return subprocess.run([sys.executable, "-m", "stepgym.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=400, **kw)


def test_sft_then_train_writes_every_artifact(tmp_path):
    sft = _run(["sft", "--model", "tiny", "--env", TOY, "--env-kwargs", "{}", "--stop-strings", "--episodes", "4",
                "--epochs", "1", "--out", str(tmp_path / "sft"), "--threads", "1"])
    assert sft.returncode == 0, sft.stderr[-2000:]
    assert (tmp_path / "sft" / "policy" / "config.json").exists()
    out = tmp_path / "run"
    res = _run(["train", *COMMON, "--init", str(tmp_path / "sft"), "--iterations", "2", "--save-every", "1",
                "--out", str(out), "--no-progress"])
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    for key in ("charts/success_rate", "charts/episode_return", "charts/episode_length", "charts/invalid_action_rate",
                "losses/policy", "losses/value", "losses/kl", "perf/tokens_per_s"):
        assert key in rows[1], key
    assert "eval/success_rate" in rows[0] and "eval/success_rate" in rows[2]
    # per-seed outcomes of each evaluation, paired by seed in the closing line (95% intervals)
    for r in (rows[0], rows[2]):
        assert len(r["eval/successes"]) == 4 and set(r["eval/successes"]) <= {"0", "1"}
        assert r["eval/successes"].count("1") / 4 == r["eval/success_rate"]
    assert "4 held-out seeds, 95% intervals: before" in res.stdout and "gain " in res.stdout
    assert (out / "learning_curve.png").stat().st_size > 1000
    assert sorted(os.listdir(out / "checkpoints")) == ["iter_000001.pt", "iter_000002.pt"]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(out / "tb"))
    assert (out / "policy" / "value_head.pt").exists() and (out / "policy" / "steppo_config.json").exists()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(out / "policy"))
    assert "eval success" in res.stdout and "success" in res.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations_done"] == 2
    # the same --out again: a one-line error that says how to fix it
    again = _run(["train", *COMMON, "--iterations", "1", "--out", str(out)])
    assert again.returncode == 2
    assert "--resume" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.parametrize("args, needle", [
    (["--algo", "ppoo"], "did you mean 'ppo'"),
    (["--gamma", "1.5"], "gamma"),
    (["--env", "stepgym/ToolUze-v0"], "ToolUse-v0"),
    (["--algo", "grpo", "--lam", "0.9"], "lam"),
    (["--env-kwargs", "{bad"], "env_kwargs"),
    (["--init", "runs/does-not-exist"], "does not exist"),  # a local path, never sent to the model hub
    (["--env-kwargs", '{"difficulty": "nightmare"}'], "nightmare"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, args, needle):
    t0 = time.monotonic()
    res = _run(["train", "--model", "tiny", "--out", str(tmp_path / "x"), *args])
    assert res.returncode == 2
    assert needle in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()  # nothing written
    assert time.monotonic() - t0 < 60  # no model load, no network retries


def test_ctrl_c_saves_and_resume_finishes(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "stepgym.cli", "train", *COMMON, "--iterations", "50",
                             "--save-every", "0", "--no-eval-before", "--no-progress", "--out", str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not metrics.exists() or not metrics.read_text().strip()):
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-2000:]
    assert "--resume" in stdout
    done = len(metrics.read_text().splitlines())
    assert 1 <= done < 50
    assert os.listdir(out / "checkpoints") == [f"iter_{done:06d}.pt"]
    res = _run(["train", *COMMON, "--iterations", str(done + 1), "--save-every", "0", "--no-eval-before",
                "--no-progress", "--out", str(out), "--resume"])
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["iteration"] for r in rows] == list(range(1, done + 2))
