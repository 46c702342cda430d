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


def test_train_one_iteration_on_a_remote_pool(tmp_path):
    # Two servers, short episodes (-k max_steps=2 is the operator's fixed kwarg).
    servers = [EnvServer("stepgym/ToolUse-v0", "-k", "max_steps=2", "--max-steps-per-s", "0", "--quiet")
               for _ in range(2)]
    try:
        for s in servers:
            s.wait()
        urls = json.dumps([s.url for s in servers])
        out = tmp_path / "run"
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), COLUMNS="120")
        res = subprocess.run(
            [sys.executable, "-m", "stepgym.cli", "train", "--model", "tiny", "--env", "stepgym/OpenEnvPool-v0",
             "-k", f"urls={urls}", "--stop-strings", "--max-new-tokens", "4", "--episodes-per-iteration", "2",
             "--num-envs", "2", "--eval-episodes", "1", "--no-eval-before", "--threads", "1", "--iterations", "1",
             "--out", str(out), "--no-progress"],
            capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
        )
        assert res.returncode == 0, res.stderr[-2000:]
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        last = rows[-1]
        assert last["iteration"] == 1 and last["charts/episode_length"] == 2.0  # the server's max_steps=2 held
        assert "losses/policy" in last
    finally:
        for s in servers:
            s.stop()
