"""Fixtures for the agent tests: a tiny real causal LM, saved like a training run's policy."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the tiny random Llama from stepgym.models."""
    torch = pytest.importorskip("torch")
    from stepgym.models import load_model

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # see _one_torch_thread
    try:
        return load_model("tiny", seed=0)
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def run_dir(tiny, tmp_path_factory):
    """A directory laid out like a steppo run: RUN/policy/ = save_pretrained(model + tokenizer)."""
    model, tok = tiny
    root = tmp_path_factory.mktemp("run")
    model.save_pretrained(root / "policy")
    tok.save_pretrained(root / "policy")
    return root


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One torch thread while these tests run: with pytest -n 2 on 2 cores, more threads
    than cores make each tiny-model forward wait on the others (measured 30x slower)."""
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
