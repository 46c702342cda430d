"""Every name in stepgym.wrappers.__all__ imports, and the module docs' examples run."""

from __future__ import annotations

import doctest
import importlib

import pytest

import stepgym
import stepgym.wrappers as W


def test_every_public_name_imports():
    for name in W.__all__:
        assert getattr(W, name) is not None, name
    assert stepgym.wrappers is W
    assert callable(stepgym.make_vec)


@pytest.mark.parametrize(
    "module",
    ["stepgym.wrappers", "stepgym.wrappers.context", "stepgym.wrappers.reward", "stepgym.wrappers.formats",
     "stepgym.wrappers.malformed", "stepgym.wrappers.recording", "stepgym.vector"],
)
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
