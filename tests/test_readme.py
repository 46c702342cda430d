"""The README's code blocks run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PY_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.DOTALL)


def test_gym_loop_block_runs():
    block = next(b for b in PY_BLOCKS if "gym.make(\"stepgym/ToolUse-v0\"" in b)
    out = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1.0 True"


def test_own_env_block_registers_and_passes_check(tmp_path):
    block = next(b for b in PY_BLOCKS if "class Quiz" in b)
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "envs.py").write_text(block)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "stepgym.cli", "check", "mypkg.envs:mypkg/Quiz-v0"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "pass" in out.stdout
    out = subprocess.run([sys.executable, "-m", "stepgym.cli", "play", "mypkg.envs:mypkg/Quiz-v0", "--agent", "expert", "--seed", "1"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and "success" in out.stdout, out.stderr


def test_two_commands_are_the_ci_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    bash_blocks = re.findall(r"```bash\n(.*?)```", README, re.DOTALL)
    install_and_test = bash_blocks[1].strip()
    assert "pytest" in install_and_test
    assert install_and_test in ci.splitlines()


def test_module_colon_id_found_from_the_working_directory(tmp_path):
    """Like the `stepgym` console script: the cwd is not on sys.path (python -P), yet mypkg is found."""
    block = next(b for b in PY_BLOCKS if "class Quiz" in b)
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "envs.py").write_text(block)
    code = "import sys; from stepgym.cli import main; sys.exit(main(['check', 'mypkg.envs:mypkg/Quiz-v0', '--episodes', '1']))"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_wrappers_block_runs(tmp_path):
    block = next(b for b in PY_BLOCKS if "TokenBudget(" in b)
    code = ("import gymnasium as gym, stepgym\n" + block.replace("runs/traj.jsonl", str(tmp_path / "t.jsonl"))
            + "\nobs, _ = env.reset(seed=0)\nout = env.step('not an action')\n"
              "print(sorted(out[4]['reward_components']), out[1], out[4]['context']['tokens_after'] <= 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['env', 'invalid_action'] -0.1 True"
