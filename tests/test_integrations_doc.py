"""docs/integrations.md: the examples of the Gymnasium, PettingZoo, TRL and SkyRL-gym sections run as written.

Each Python block runs in a fresh interpreter in a scratch folder and must print what its
comments say. The TRL command is the one tests/test_examples.py runs; the verifiers section
needs a model server, so tests/stepgym/integrations/test_verifiers.py runs its command and
its Python block against `stepgym serve`. Every `pip install -e ".[...]"` names extras that exist.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "integrations.md").read_text()


def section(title: str) -> str:
    """The text of the ``## title`` section."""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", DOC, re.DOTALL | re.MULTILINE)
    assert m, f"no '## {title}' section in docs/integrations.md"
    return m.group(1)


def blocks(title: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section(title), re.DOTALL)


def run_python(code: str, tmp_path: Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res.stdout


def test_gymnasium_example(tmp_path):
    [code] = blocks("Gymnasium", "python")
    out = run_python(code, tmp_path).splitlines()
    assert out[0] == "1.0 True True"
    assert out[1] == "[0. 0.] [ True  True]"


def test_pettingzoo_example(tmp_path):
    [code] = blocks("PettingZoo", "python")
    returns, passed = run_python(code, tmp_path).splitlines()[-2:]
    assert passed == "Passed Parallel API test"
    values = sorted(float(v) for v in re.findall(r"'player_\d': (-?[\d.]+)", returns))
    assert values in ([-1.0, 1.0], [0.0, 0.0])  # a win and a loss, or a draw


def test_skyrl_example(tmp_path):
    pytest.importorskip("skyrl_gym")
    [code] = blocks("SkyRL-gym", "python")
    first, last = run_python(code, tmp_path).splitlines()[-2:]
    assert first.startswith("Invalid action: no tool call found.")
    assert last.startswith("1.0 True {") and "'success': 1.0" in last and "'invalid_actions': 1" in last
    assert (tmp_path / "train.parquet").stat().st_size > 0


def test_trl_command_is_the_one_the_examples_test_runs():
    [bash] = blocks("TRL", "bash")
    [cmd] = [line for line in bash.splitlines() if line.startswith("python ")]
    assert cmd == "python examples/trl_grpo.py --budget small"
    assert '"trl_grpo.py"), "--budget", "small"]' in (ROOT / "tests" / "test_examples.py").read_text()


def test_pip_lines_name_existing_extras():
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    named = re.findall(r'pip install -e "\.\[([\w,-]+)\]"', DOC)
    assert named
    for group in named:
        assert set(group.split(",")) <= extras, group
