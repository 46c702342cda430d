"""`stepgym train` on envs served by `stepgym serve-env` (tiny model, one short iteration, real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("websockets.sync.client")
pytest.importorskip("torch")

from tests.stepgym.integrations.envserver_helpers import EnvServer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _train(env_id: str, kwarg: str, out) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), COLUMNS="120")
    res = subprocess.run(
        [sys.executable, "-m", "stepgym.cli", "train", "--model", "tiny", "--env", env_id, "-k", kwarg,
         "--stop-strings", "--max-new-tokens", "4", "--episodes-per-iteration", "2", "--num-envs", "2",
         "--eval-episodes", "1", "--no-eval-before", "--threads", "1", "--iterations", "1", "--out", str(out),
         "--no-progress"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _check(rows: list[dict]) -> None:
    last = rows[-1]
    assert last["iteration"] == 1 and last["charts/episode_length"] == 2.0  # the server's max_steps=2 held
    assert "losses/policy" in last and "eval/success_rate" in last


def test_train_one_iteration_on_a_served_env(tmp_path):
    # Short episodes: -k max_steps=2 is the operator's fixed kwarg on the server.
    server = EnvServer("stepgym/ToolUse-v0", "-k", "max_steps=2", "--max-steps-per-s", "0", "--quiet")
    try:
        server.wait()
        _check(_train("stepgym/OpenEnv-v0", f"base_url={server.url}", tmp_path / "run"))
    finally:
        server.stop()


@pytest.mark.slow
def test_train_one_iteration_on_a_pool_of_two_servers(tmp_path):
    servers = [EnvServer("stepgym/ToolUse-v0", "-k", "max_steps=2", "--max-steps-per-s", "0", "--quiet")
               for _ in range(2)]
    try:
        for s in servers:
            s.wait()
        _check(_train("stepgym/OpenEnvPool-v0", "urls=" + json.dumps([s.url for s in servers]), tmp_path / "run"))
    finally:
        for s in servers:
            s.stop()
