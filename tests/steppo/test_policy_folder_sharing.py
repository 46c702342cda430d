"""Policy folders of models with frozen layers: frozen and trained tensors in two files, the frozen
ones hard-linked from the folder training started from; every reader loads the same weights."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

import tests.steppo.toy  # noqa: F401  (registers steppotest/Boxes-v0)
from stepgym.cli import main
from stepgym.models import load_model
from stepgym.policy_folder import FROZEN_WEIGHTS_FILE, TRAINED_WEIGHTS_FILE
from steppo.policy import Policy

TOY = "tests.steppo.toy:steppotest/Boxes-v0"
PROMPTS = [[5, 17, 300, 42, 8], [1, 2, 3]]
RESPONSES = [[77, 78, 79], [400, 12]]


def _policy(train_layers: int = 1, seed: int = 0) -> Policy:
    lm, tok = load_model("tiny", seed=seed)
    pol = Policy(lm, tok, critic="none")
    pol.freeze_all_but_last(train_layers)
    return pol


def _train_a_little(pol: Policy, seed: int) -> None:
    """What an update does to the trainable tensors (and only to them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in pol.policy_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.01)


def _logprobs(lm, tok) -> torch.Tensor:
    with torch.no_grad():
        return Policy(lm, tok, critic="none").score(PROMPTS, RESPONSES).logprobs


def _inode(path) -> int:
    return os.stat(path).st_ino


def test_a_split_folder_reads_back_the_same_weights_and_logprobs_as_a_plain_save(tmp_path):
    pol = _policy()
    _train_a_little(pol, 1)
    pol.save_pretrained(str(tmp_path / "split"))
    pol.lm.save_pretrained(str(tmp_path / "plain"))  # one model.safetensors, as transformers writes it
    pol.tokenizer.save_pretrained(str(tmp_path / "plain"))
    files = set(os.listdir(tmp_path / "split"))
    assert {FROZEN_WEIGHTS_FILE, TRAINED_WEIGHTS_FILE, "model.safetensors.index.json"} <= files
    assert "model.safetensors" not in files
    index = json.loads((tmp_path / "split" / "model.safetensors.index.json").read_text())
    trained = {n for n, p in pol.lm.named_parameters() if p.requires_grad}
    assert {k for k, f in index["weight_map"].items() if f == TRAINED_WEIGHTS_FILE} == trained
    split_lm, tok = load_model(str(tmp_path / "split"))
    plain_lm, _ = load_model(str(tmp_path / "plain"))
    mine = pol.lm.state_dict()
    for name, tensor in split_lm.state_dict().items():
        assert torch.equal(tensor, mine[name]), name
        assert torch.equal(tensor, plain_lm.state_dict()[name]), name
    assert torch.equal(_logprobs(split_lm, tok), _logprobs(plain_lm, tok))
    assert torch.equal(_logprobs(split_lm, tok), _logprobs(pol.lm, pol.tokenizer))


def test_frozen_layers_are_linked_from_the_base_only_when_they_are_the_same(tmp_path):
    warm = _policy()
    _train_a_little(warm, 1)
    warm.save_pretrained(str(tmp_path / "sft" / "policy"))
    _train_a_little(warm, 2)  # RL changes the trained layers only
    warm.save_pretrained(str(tmp_path / "rl"), base=str(tmp_path / "sft"))
    assert _inode(tmp_path / "rl" / FROZEN_WEIGHTS_FILE) == _inode(tmp_path / "sft" / "policy" / FROZEN_WEIGHTS_FILE)
    assert _inode(tmp_path / "rl" / TRAINED_WEIGHTS_FILE) != _inode(tmp_path / "sft" / "policy" / TRAINED_WEIGHTS_FILE)
    other = _policy(seed=3)  # other frozen weights: nothing to share, the file is written
    other.save_pretrained(str(tmp_path / "other"), base=str(tmp_path / "sft"))
    assert _inode(tmp_path / "other" / FROZEN_WEIGHTS_FILE) != _inode(tmp_path / "sft" / "policy" / FROZEN_WEIGHTS_FILE)
    for folder, pol in (("rl", warm), ("other", other)):
        lm, _ = load_model(str(tmp_path / folder))
        mine = pol.lm.state_dict()
        assert all(torch.equal(t, mine[n]) for n, t in lm.state_dict().items()), folder
    # a copy is self-contained: the warm start can go
    shutil.copytree(tmp_path / "rl", tmp_path / "copy")
    shutil.rmtree(tmp_path / "sft")
    lm, tok = load_model(str(tmp_path / "copy"))
    assert torch.equal(_logprobs(lm, tok), _logprobs(warm.lm, warm.tokenizer))


def test_a_model_without_frozen_layers_keeps_one_weights_file(tmp_path):
    pol = _policy(train_layers=0)
    pol.save_pretrained(str(tmp_path / "full"))
    files = set(os.listdir(tmp_path / "full"))
    assert "model.safetensors" in files and FROZEN_WEIGHTS_FILE not in files


@pytest.fixture(scope="module")
def demo_shaped_run(tmp_path_factory):
    """`stepgym train` with a warm start and frozen layers: the demo's folder layout, on the tiny model."""
    out = tmp_path_factory.mktemp("runs") / "demo"
    args = ["train", "--model", "tiny", "--env", TOY, "--env-kwargs", "{}", "--stop-strings", "--max-new-tokens", "4",
            "--episodes-per-iteration", "2", "--num-envs", "2", "--eval-episodes", "2", "--threads", "1",
            "--train-layers", "1", "--sft-episodes", "2", "--iterations", "1", "--save-every", "0",
            "--no-progress", "--no-tensorboard", "--out", str(out)]
    assert main(args) == 0
    return out, args


def test_the_run_stores_the_frozen_layers_once_and_every_reader_works(demo_shaped_run, capsys, tmp_path):
    out, args = demo_shaped_run
    frozen = _inode(out / "policy" / FROZEN_WEIGHTS_FILE)
    assert frozen == _inode(out / "sft" / "policy" / FROZEN_WEIGHTS_FILE)
    capsys.readouterr()
    assert main(["eval", "--env", TOY, "--agent", f"checkpoint:{out}", "--agent", f"hf:{out / 'policy'}",
                 "--episodes", "2", "--num-envs", "2", "--max-new-tokens", "4"]) == 0
    assert "checkpoint" in capsys.readouterr().out
    # --resume continues from the checkpoint and the warm start; the new policy/ shares the frozen file again
    assert main([*args[:args.index("--iterations")], "--iterations", "2", "--save-every", "0", "--no-progress",
                 "--no-tensorboard", "--out", str(out), "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert _inode(out / "policy" / FROZEN_WEIGHTS_FILE) == frozen
    # --init from the run: a new run on top of it shares the same file
    again = tmp_path / "again"
    init_args = [a for a in args[:args.index("--sft-episodes")]] + ["--init", str(out), "--iterations", "1",
                                                                   "--no-progress", "--no-tensorboard",
                                                                   "--out", str(again)]
    assert main(init_args) == 0
    assert _inode(again / "policy" / FROZEN_WEIGHTS_FILE) == frozen


def test_serve_loads_the_split_policy(demo_shaped_run):
    from tests.stepgym.serve_helpers import Server

    out, _ = demo_shaped_run
    server = Server("--model", f"checkpoint:{out}", "--name", "policy", "--max-new-tokens", "4")
    try:
        reply = server.wait().client().chat.completions.create(
            model="policy", messages=[{"role": "user", "content": "Open the red box, then say done."}], max_tokens=4)
        assert reply.choices[0].message is not None and reply.usage.completion_tokens > 0
    finally:
        server.stop()
