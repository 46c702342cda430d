"""The examples in the agents' and the server's docstrings run."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "stepgym.agents",
    "stepgym.agents.base",
    "stepgym.agents.simple",
    "stepgym.agents.hf",
    "stepgym.agents.openai",
    "stepgym.agents.evaluate",
    "stepgym.serving",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    if name in ("stepgym.agents.base", "stepgym.agents.evaluate"):
        assert result.attempted > 0
