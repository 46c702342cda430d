"""--device / --dtype of local model agents (stepgym eval, stepgym serve)."""

from __future__ import annotations

import argparse

import pytest
import torch

from stepgym.agents.hf import TransformersAgent, place_model
from stepgym.commands import eval as eval_cmd
from stepgym.commands import serve as serve_cmd
from stepgym.errors import InvalidConfig

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_place_model_casts_and_moves():
    m = place_model(torch.nn.Linear(3, 3), "auto", "bfloat16")
    assert m.weight.dtype == torch.bfloat16
    assert m.weight.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InvalidConfig, match="dtype"):
        place_model(torch.nn.Linear(3, 3), None, "int8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(InvalidConfig, match="no CUDA device"):
        place_model(torch.nn.Linear(3, 3), "cuda")


def test_bf16_agent_generates_text():
    agent = TransformersAgent("tiny", max_new_tokens=3, dtype="bfloat16", device="cpu", seed=0)
    assert next(agent.model.parameters()).dtype == torch.bfloat16
    out = agent.generate(["hello"])
    assert len(out) == 1 and isinstance(out[0].text, str)


def test_eval_and_serve_pass_device_and_dtype():
    p = argparse.ArgumentParser()
    eval_cmd.add_arguments(p)
    args = p.parse_args(["--env", "stepgym/ToolUse-v0", "--agent", "hf:tiny", "--device", "cpu", "--dtype", "bfloat16"])
    assert eval_cmd._agent_kwargs("hf:tiny", args) == {"device": "cpu", "dtype": "bfloat16"}
    assert "dtype" not in eval_cmd._agent_kwargs("openai:m@http://127.0.0.1:1/v1", args)
    s = argparse.ArgumentParser()
    serve_cmd.add_arguments(s)
    sargs = s.parse_args(["--model", "tiny", "--dtype", "bfloat16", "--device", "auto"])
    assert sargs.dtype == "bfloat16" and sargs.device == "auto"


@needs_cuda
def test_cuda_bf16_agent():
    agent = TransformersAgent("tiny", max_new_tokens=6, dtype="bfloat16", device="cuda", seed=0)
    assert next(agent.model.parameters()).device.type == "cuda"
    assert len(agent.generate(["hello"])) == 1
