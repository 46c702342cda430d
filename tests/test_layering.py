"""The import-linter contracts in pyproject.toml hold (``lint-imports`` run from the repo root).

The contracts: stepgym below its command line (``stepgym.cli``, ``.commands``, ``.__main__``) never
imports steppo, nothing but the command line imports the command line, and no two sibling
modules of steppo or stepgym import each other in a cycle.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]

# `python -c` rather than the `lint-imports` script, so the check runs under this interpreter.
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def test_the_contracts_are_there():
    assert {c["id"] for c in CONTRACTS} >= {"stepgym-library-without-steppo", "cli-on-top", "no-cycles"}


@pytest.mark.parametrize("contract", [c["id"] for c in CONTRACTS])
def test_contract_kept(contract):
    out = subprocess.run(
        [sys.executable, "-c", LINT, "--no-cache", "--no-logo", "--contract", contract, "pyproject.toml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, f"import-linter contract {contract!r} is broken:\n{out.stdout}{out.stderr}"
