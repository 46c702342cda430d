"""The framework adapters load their framework only when imported, and say how to install it when it is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
ADAPTERS = [
    ("stepgym.integrations.verifiers_env", "verifiers", 'pip install "stepgym[verifiers]"'),
    ("stepgym.integrations.skyrl", "skyrl_gym", 'pip install "stepgym[skyrl]"'),
]


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_import_stepgym_loads_no_framework():
    res = run("import sys, stepgym, stepgym.integrations; "
              "print(sorted(m for m in ('verifiers', 'skyrl_gym', 'datasets') if m in sys.modules))")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


@pytest.mark.parametrize(("module", "framework", "pip"), ADAPTERS, ids=[a[1] for a in ADAPTERS])
def test_a_missing_framework_is_one_line_with_the_pip_command(module, framework, pip):
    # sys.modules[name] = None makes `import name` fail as if the package were not installed
    res = run(f"import sys; sys.modules[{framework!r}] = None\n"
              f"from stepgym.errors import DependencyNotInstalled\n"
              f"try:\n    import {module}\nexcept DependencyNotInstalled as exc:\n    print(exc)\n")
    assert res.returncode == 0, res.stderr
    [line] = res.stdout.strip().splitlines()
    assert line.endswith(f"Install it with: {pip}") and module in line
