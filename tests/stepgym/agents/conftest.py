"""Fixtures for the agent tests: a tiny real causal LM, saved like a training run's policy."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the tiny random Llama from steppo.models."""
    pytest.importorskip("torch")
    from steppo.models import load_model

    return load_model("tiny", seed=0)


@pytest.fixture(scope="session")
def run_dir(tiny, tmp_path_factory):
    """A directory laid out like a steppo run: RUN/policy/ = save_pretrained(model + tokenizer)."""
    model, tok = tiny
    root = tmp_path_factory.mktemp("run")
    model.save_pretrained(root / "policy")
    tok.save_pretrained(root / "policy")
    return root
