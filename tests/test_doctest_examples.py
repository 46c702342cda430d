"""The modules whose docstrings are their main documentation keep their examples.

The examples themselves run under ``--doctest-modules`` (pyproject.toml); this only checks
that they are still there, so deleting them does not pass silently.
"""

from __future__ import annotations

import doctest
import importlib

import pytest

# module -> the fewest examples (not counting ``+SKIP`` ones) it must keep.
MIN_EXAMPLES = {
    "stepgym.agents.base": 1,
    "stepgym.agents.evaluate": 1,
    "stepgym.envs._answer": 1,
    "stepgym.envs.boardgames": 1,
    "stepgym.envs.countdown": 1,
    "stepgym.envs.frozenlake": 1,
    "stepgym.envs.negotiation": 1,
    "stepgym.envs.sokoban": 1,
    "stepgym.envs.wordle": 1,
    "stepgym.models": 6,
    "stepgym.vector": 1,
    "stepgym.wrappers": 1,
    "stepgym.wrappers.context": 1,
    "stepgym.wrappers.formats": 1,
    "stepgym.wrappers.malformed": 1,
    "stepgym.wrappers.recording": 1,
    "stepgym.wrappers.reward": 1,
    "steppo.advantages": 6,
    "steppo.losses": 6,
}

NEEDS = {"stepgym.models": ("torch", "transformers"), "steppo.advantages": ("torch",), "steppo.losses": ("torch",)}


def count_examples(module) -> int:
    skip = doctest.OPTIONFLAGS_BY_NAME["SKIP"]
    tests = doctest.DocTestFinder().find(module)
    return sum(1 for t in tests for ex in t.examples if not ex.options.get(skip))


@pytest.mark.parametrize("name", sorted(MIN_EXAMPLES))
def test_module_keeps_its_examples(name):
    for dep in NEEDS.get(name, ()):
        pytest.importorskip(dep)
    n = count_examples(importlib.import_module(name))
    assert n >= MIN_EXAMPLES[name], f"{name} has {n} docstring examples, expected at least {MIN_EXAMPLES[name]}"
