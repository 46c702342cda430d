"""Any text Gymnasium env trains: a third-party env through the CLI, every registered stepgym env
through the Python API with no env kwargs, and bad env input fails in one line before a model loads."""

from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys

import pytest
from rich.console import Console

import stepgym
from stepgym.registration import check_trainable, is_available

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUIZ = "tests.steppo.thirdparty_quiz"
SMALL = ["--model", "tiny", "--max-new-tokens", "8", "--num-envs", "2", "--episodes-per-iteration", "2",
         "--eval-episodes", "1", "--no-tensorboard", "--no-progress", "--threads", "1"]

# Runs `stepgym` with building any torch module (a model, a value head) made an error: reaching
# one is a bug here (a traceback, exit 1) instead of a slow success.
NO_MODEL = ("import sys, torch\n"
            "def _no_model(self, *a, **k):\n"
            "    raise RuntimeError('a model was built before the env was checked')\n"
            "torch.nn.Module.__init__ = _no_model\n"
            "from stepgym.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), COLUMNS="100")


def _stepgym(args, no_model=False):
    cmd = [sys.executable, "-c", NO_MODEL] if no_model else [sys.executable, "-m", "stepgym.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=300)


def test_thirdparty_gymnasium_env_trains_through_the_cli(tmp_path):
    out = tmp_path / "run"
    res = _stepgym(["train", "--env", f"{QUIZ}:quiz/Quiz-v0", "--iterations", "2", "--out", str(out), *SMALL])
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    assert "charts/success_rate" in rows[1] and "eval/success_rate" in rows[2]
    assert (out / "policy" / "config.json").exists()
    # the env module knows nothing of stepgym
    tree = ast.parse(open(os.path.join(ROOT, "tests", "steppo", "thirdparty_quiz.py")).read())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not any(m.split(".")[0] in ("stepgym", "steppo") for m in imported), imported


ENV_IDS = [e.id for e in stepgym.list_envs("stepgym")]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_every_registered_env_trains_without_env_kwargs(env_id, tmp_path):
    info = next(e for e in stepgym.list_envs("stepgym") if e.id == env_id)
    if not is_available(info):
        pytest.skip(f"{env_id} needs an optional extra: {info.requires}")
    from steppo.config import make_train_config
    from steppo.trainer import Trainer

    assert check_trainable(env_id) == env_id
    cfg = make_train_config({"model": "tiny", "env": env_id, "iterations": 1, "episodes_per_iteration": 1,
                             "num_envs": 1, "group_size": 1, "max_new_tokens": 4, "eval_episodes": 1,
                             "eval_before": False, "tensorboard": False, "progress": False, "save_every": 0,
                             "threads": 1, "out": str(tmp_path / "run")})
    assert cfg.env_kwargs == {}
    summary = Trainer(cfg, console=Console(file=io.StringIO())).train()
    assert summary["iterations_done"] == 1
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["iteration"] == 1 and "charts/episode_return" in rows[-1]


BAD = [
    # (extra args, text the one-line error must contain)
    (["--env", "stepgym/ToolUze-v0"], "Did you mean 'stepgym/ToolUse-v0'"),
    (["--env", "no_such_module_xyz:ns/X-v0"], "could not import module 'no_such_module_xyz'"),
    (["--env", f"{QUIZ}:quiz/Quiz-v0", "--env-kwargs", '{"difficulty": "easy"}'],
     "does not accept the env kwarg 'difficulty'"),
    (["--env", "stepgym/Wordle-v0", "--env-kwargs", '{"difficulty": "easy"}'], "takes max_guesses, strict"),
    (["--env", "stepgym/ToolUse-v0", "--env-kwargs", '{"difficulty": "nightmare"}'],
     "difficulty must be one of ('easy', 'medium', 'hard'), got 'nightmare'"),
    (["--env", "CartPole-v1"], "text observations and actions (str)"),
    (["--env", f"{QUIZ}:quiz/BoxQuiz-v0"], "non-text observation_space Box"),
    (["--env", f"{QUIZ}:quiz/NumberQuiz-v0"], "observations of type ndarray, not str"),
    (["--env", f"{QUIZ}:quiz/Quiz-v0", "--sft-episodes", "2"], "no expert_action()"),
]


@pytest.mark.parametrize("args, needle", BAD, ids=[f"{a[1]}{'+' + a[-1] if len(a) > 2 else ''}" for a, _ in BAD])
def test_bad_env_input_is_a_one_line_error_before_any_model_or_output(tmp_path, args, needle):
    out = tmp_path / "never"
    res = _stepgym(["train", "--model", "tiny", "--out", str(out), *args], no_model=True)
    assert res.returncode == 2, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.strip() and "WARN" not in line
              and "logger.warn" not in line]
    assert len(errors) == 1 and errors[0].startswith("error: "), res.stderr
    assert needle in errors[0]
    assert "Traceback" not in res.stderr
    assert not out.exists()


def test_sft_checks_the_env_first(tmp_path):
    out = tmp_path / "never"
    res = _stepgym(["sft", "--model", "tiny", "--env", f"{QUIZ}:quiz/Quiz-v0", "--out", str(out)], no_model=True)
    assert res.returncode == 2, res.stderr[-3000:]
    assert res.stderr.startswith("error: ") and "no expert_action()" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not out.exists()
