"""Every example in examples/ runs with a small budget and does what it says.

Most run in this process (``runpy``, as ``__main__``) to spare an interpreter and a torch
import each; the TRL recipe runs in a subprocess so TRL's import-time settings stay there.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import runpy
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One torch thread: with pytest -n 2 on 2 cores, more threads only wait on each other."""
    if importlib.util.find_spec("torch") is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_here(name: str, *args: str, capsys, monkeypatch) -> str:
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), *args])
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setenv("COLUMNS", "120")
    try:
        runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    except SystemExit as exc:
        assert exc.code in (0, None), f"{name} exited with {exc.code}:\n{capsys.readouterr().out[-3000:]}"
    return capsys.readouterr().out


def test_every_example_has_a_test():
    tested = {"gym_loop.py", "custom_env.py", "pettingzoo_selfplay.py", "serve_and_eval.py", "trl_grpo.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_gym_loop(capsys, monkeypatch):
    out = run_here("gym_loop.py", "--episodes", "10", capsys=capsys, monkeypatch=monkeypatch)
    solved = int(re.search(r"solved (\d+)/10", out).group(1))
    assert solved >= 8  # the ten-line policy handles the one-hop easy tasks


def test_custom_env_check_and_eval(capsys, monkeypatch):
    out = run_here("custom_env.py", "--budget", "small", "--skip-train", capsys=capsys, monkeypatch=monkeypatch)
    assert re.search(r"custom_env:mygame/GuessNumber-v0\s+│\s+pass\s+│\s+(\d+)/\1", out)  # every check passed
    assert re.search(r"expert\s+│\s+100\.0%", out)
    assert "skipping training (--skip-train)" in out


@pytest.mark.slow
def test_custom_env_training_step(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the small run's output goes under pytest's tmp dir
    out = run_here("custom_env.py", "--budget", "small", capsys=capsys, monkeypatch=monkeypatch)
    if importlib.util.find_spec("steppo.trainer") is not None:
        assert "trained; evaluate it with: stepgym eval --env custom_env:mygame/GuessNumber-v0" in out
        run = re.search(r"--agent checkpoint:(\S+)", out).group(1)
        assert os.path.isfile(os.path.join(run, "policy", "config.json"))
        from stepgym.agents import make_agent  # the trainer's output loads as an agent

        agent = make_agent(f"checkpoint:{run}", max_new_tokens=4, temperature=0.0)
        assert isinstance(agent.act("I am thinking of a number between 1 and 8.", {}), str)
    else:
        assert "skipping training" in out


def test_pettingzoo_selfplay(capsys, monkeypatch):
    pytest.importorskip("pettingzoo")
    out = run_here("pettingzoo_selfplay.py", "--games", "6", capsys=capsys, monkeypatch=monkeypatch)
    counts = re.search(r"tic-tac-toe, rules vs itself, 6 games: \{(.*)\}", out).group(1)
    assert sum(int(n) for n in re.findall(r": (\d+)", counts)) == 6
    deals = int(re.search(r"(\d+) deals", out).group(1))
    assert 0 <= deals <= 6


def test_serve_and_eval_over_http(capsys, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("uvicorn")
    out = run_here("serve_and_eval.py", "--episodes", "2", "--max-tokens", "4", capsys=capsys, monkeypatch=monkeypatch)
    assert re.search(r"serving policy at http://127\.0\.0\.1:\d+/v1", out)
    assert re.search(r"openai:policy: success \d+%.*4\.0 tokens/step", out)
    assert re.search(r"expert: success 100%", out)


@pytest.mark.slow
def test_trl_grpo_recipe():
    if importlib.util.find_spec("trl") is None:
        pytest.skip('TRL is not installed (pip install "stepgym[trl]")')
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "trl_grpo.py"), "--budget", "small"],
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
        cwd=EXAMPLES.parent,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "the expert earned reward 1.0" in proc.stdout
    assert re.search(r"GRPO on stepgym/ToolUse-v0: 1 step", proc.stdout)
