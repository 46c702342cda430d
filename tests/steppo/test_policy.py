"""Policy: teacher-forced log-probs and values, packing, persistence, frozen layers, AdamW."""

from __future__ import annotations

import copy

import pytest
import torch

from stepgym.models import load_model
from steppo.batching import pack_steps
from steppo.policy import Policy, adamw


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    lm, tok = load_model("tiny", seed=0)
    return lm, tok


def test_save_and_load_policy_folder(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    lm, tok = tiny
    pol = Policy(lm, tok, critic="shared")
    with torch.no_grad():
        pol.value_head.bias.fill_(0.25)
    pol.save_pretrained(str(tmp_path / "policy"), extra={"algo": "steppo"})
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "policy"))
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, lm(ids).logits, atol=1e-5)
    pol2 = Policy(loaded, tok, critic="shared")
    assert pol2.load_critic_from(str(tmp_path / "policy"))
    assert float(pol2.value_head.bias.detach()) == pytest.approx(0.25)
    assert (tmp_path / "policy" / "steppo_config.json").exists()


def test_train_layers_freezes_the_rest(tiny):
    lm, tok = load_model("tiny", seed=1)
    pol = Policy(lm, tok, critic="shared")
    pol.freeze_all_but_last(1)
    trainable = {n for n, p in pol.lm.named_parameters() if p.requires_grad}
    assert trainable and all("layers.1." in n or "norm" in n for n in trainable)
    assert all(p.requires_grad for p in pol.critic_parameters())


def copy_lm(lm):
    return copy.deepcopy(lm)


@pytest.mark.parametrize("critic", ["shared", "separate"])
def test_packed_scoring_equals_step_by_step_scoring(tiny, critic):
    lm, tok = tiny
    torch.manual_seed(0)
    pol = Policy(copy_lm(lm), tok, critic=critic, temperature=0.9)
    # an episode of three steps (each prompt continues the last prompt + response), plus a lone step
    p0 = [3, 4, 5, 6, 7]
    r0 = [8, 9, 10]
    p1 = p0 + r0 + [11, 12]
    r1 = [13, 14]
    p2 = p1 + r1 + [15]
    r2 = [16, 17, 18, 19]
    prompts, responses = [p1, [20, 21, 22], p0, p2], [r1, [23], r0, r2]
    seqs, seq_of = pack_steps(prompts, responses)
    assert len(seqs) == 2 and seq_of[0] == seq_of[2] == seq_of[3] != seq_of[1]
    for values in ("step", "token"):
        outs = []
        for pack in (True, False):
            pol.zero_grad(set_to_none=True)
            o = pol.score(prompts, responses, values=values, entropy=True, pack=pack)
            v = o.step_values if values == "step" else o.token_values
            (o.logprobs.sum() + v.sum()).backward()
            grads = [p.grad.clone() for p in pol.parameters() if p.grad is not None]
            outs.append((o, v, grads))
        (a, va, ga), (b, vb, gb) = outs
        assert torch.allclose(a.logprobs, b.logprobs, atol=1e-5) and torch.equal(a.mask, b.mask)
        assert torch.allclose(a.entropy, b.entropy, atol=1e-5)
        assert torch.allclose(va, vb, atol=1e-5)
        assert len(ga) == len(gb) > 0 and all(torch.allclose(x, y, atol=1e-4) for x, y in zip(ga, gb))


def test_adamw_is_fused_on_cpu_and_steps_like_the_default():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(64, 32))
    b = torch.nn.Parameter(a.detach().clone())
    fa = adamw([a], lr=1e-2, weight_decay=0.01)
    fb = torch.optim.AdamW([b], lr=1e-2, weight_decay=0.01)
    assert fa.defaults["fused"] is True
    for k in range(5):
        g = torch.randn(64, 32, generator=torch.Generator().manual_seed(k))
        a.grad, b.grad = g.clone(), g.clone()
        fa.step()
        fb.step()
    assert float((a - b).detach().abs().max()) < 1e-6
