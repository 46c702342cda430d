"""What the CLI tells a user: no stale install hints, no 'seed None'."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _stepgym(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "stepgym", *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


@pytest.mark.parametrize("package", ["textarena", "textworld"])
def test_list_names_an_install_only_when_it_is_missing(package):
    out = _stepgym("list").stdout
    installed = importlib.util.find_spec(package) is not None
    assert (f"pip install {package}" in out) == (not installed)


def test_play_shows_a_replayable_seed():
    res = _stepgym("play", "stepgym/ToolUse-v0", "--episodes", "1", stdin="/quit\n")
    assert res.returncode in (0, 130), res.stderr
    seeds = re.findall(r"seed (\S+)", res.stdout)
    assert seeds and seeds[0].isdigit(), res.stdout[:500]
