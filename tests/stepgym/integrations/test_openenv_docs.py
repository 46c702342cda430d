"""docs/integrations.md, sections OpenEnv and Remote env pool: the examples run as written.

The servers are the documented `stepgym serve-env` commands, on free ports instead of 8001/8002
(the examples' URLs are rewritten to those ports); each Python block runs in a fresh interpreter.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import importlib.util

import pytest

# find_spec, not import: only the example's own interpreter needs openenv-core (a slow import).
if importlib.util.find_spec("openenv") is None or importlib.util.find_spec("uvicorn") is None:
    pytest.skip("needs openenv-core and uvicorn: pip install -e \".[serve,openenv]\"", allow_module_level=True)

from tests.stepgym.integrations.envserver_helpers import EnvServer  # noqa: E402

from tests.test_integrations_doc import ROOT, blocks  # noqa: E402  (one reader of the page)


def serve_env_args(bash: str, port: str, needle: str = "") -> list[str]:
    """The arguments of the documented ``stepgym serve-env ... --port PORT`` line (one containing ``needle``)."""
    [line] = [ln for ln in bash.splitlines()
              if ln.startswith("stepgym serve-env") and f"--port {port}" in ln and needle in ln]
    args = shlex.split(line.rstrip("&"))[2:]
    i = args.index("--port")
    return args[:i] + args[i + 2:] + ["--quiet"]


def run(code: str, urls: dict[str, str], tmp_path: Path) -> str:
    for port, url in urls.items():
        code = code.replace(f"http://127.0.0.1:{port}", url)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=120)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res.stdout


def test_openenv_and_pool_examples(tmp_path):
    openenv_bash = "\n".join(blocks("OpenEnv", "bash"))
    pool_bash = "\n".join(blocks("Remote env pool", "bash"))
    # The OpenEnv section's server with --expose-expert (what `stepgym check` needs), and the pool's second one.
    servers = {"8001": EnvServer(*serve_env_args(openenv_bash, "8001", "--expose-expert")),
               "8002": EnvServer(*serve_env_args(pool_bash, "8002"))}
    try:
        urls = {port: s.wait().url for port, s in servers.items()}
        client, gym_block = blocks("OpenEnv", "python")
        out = run(client, urls, tmp_path).splitlines()
        assert out[0].startswith("Task:")
        assert any(line.startswith("0.0 False True No entity named 'Velora Labs'") for line in out)
        assert "'env_kwargs': {'difficulty': 'medium'}" in out[-1] and "'step_count': 1" in out[-1]
        out = run(gym_block, urls, tmp_path).splitlines()
        assert out[-1].startswith("0.0 False True No entity named 'Velora Labs'")
        [pool_block] = blocks("Remote env pool", "python")
        assert run(pool_block, urls, tmp_path).splitlines()[-1] == "2 servers in use"
        # the documented `stepgym check` line
        [check] = [ln for ln in openenv_bash.splitlines() if ln.startswith("stepgym check")]
        for port, url in urls.items():
            check = check.replace(f"http://127.0.0.1:{port}", url)
        res = subprocess.run([sys.executable, "-m", "stepgym.cli", *shlex.split(check)[1:]], capture_output=True,
                             text=True, cwd=ROOT, timeout=120, env=dict(os.environ, COLUMNS="120"))
        assert res.returncode == 0 and "7/7" in res.stdout, res.stdout + res.stderr
    finally:
        for s in servers.values():
            s.stop()
