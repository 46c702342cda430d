"""Every name in stepgym.wrappers.__all__ imports (the docstring examples run under --doctest-modules)."""

from __future__ import annotations

import stepgym
import stepgym.wrappers as W


def test_every_public_name_imports():
    for name in W.__all__:
        assert getattr(W, name) is not None, name
    assert stepgym.wrappers is W
    assert callable(stepgym.make_vec)
