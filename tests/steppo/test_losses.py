"""steppo.losses against small hand-computed examples (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from stepgym.errors import InvalidArgument  # noqa: E402
from steppo import losses as loss_mod  # noqa: E402
from steppo.losses import (  # noqa: E402
    GSPO_CLIP_HIGH,
    GSPO_CLIP_LOW,
    kl_penalty,
    sequence_policy_loss,
    step_policy_loss,
    token_policy_loss,
    value_loss,
)

NAN = float("nan")


def close(actual, expected, tol=1e-5):
    return torch.allclose(
        torch.as_tensor(actual, dtype=torch.float64), torch.as_tensor(expected, dtype=torch.float64), atol=tol
    )


# ----------------------------------------------------------------------------- step ratio


def _step_batch():
    # step 1: 3 tokens, log-ratios [0.1, -0.2, 0.4] (mean 0.1);  step 2: 2 tokens + 1 pad, [0.5, 0.3] (mean 0.4)
    old = torch.tensor([[-1.0, -2.0, -0.5], [-0.7, -1.1, 0.0]])
    new = old + torch.tensor([[0.1, -0.2, 0.4], [0.5, 0.3, 0.0]])
    new[1, 2] = -math.inf  # padding may hold anything; it must get neither value nor gradient
    old[1, 2] = NAN
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    return new.requires_grad_(True), old, mask


def test_step_policy_loss_hand_computed():
    lp, old, mask = _step_batch()
    adv = torch.tensor([1.0, -1.0])
    loss, stats = step_policy_loss(lp, old, mask, adv, clip_low=0.2, clip_high=0.6)
    # w_1 = exp(0.1) = 1.105171, A = +1, inside [0.8, 1.6]   -> loss_1 = -1.105171
    # w_2 = exp(0.4) = 1.491825, A = -1: min(-1.491825, -1.491825) -> loss_2 = +1.491825
    # mean over steps: (-1.105171 + 1.491825) / 2 = 0.193327
    assert math.isclose(loss.item(), 0.193327, abs_tol=1e-5)
    loss.backward()
    # d/d logp_i = (1 / n_steps) (1 / L_t) (-A_t w_t):
    #   step 1: (1/2)(1/3)(-1.105171) = -0.184195 ;  step 2: (1/2)(1/2)(+1.491825) = 0.372956 ; pad: 0
    assert close(lp.grad, [[-0.184195] * 3, [0.372956, 0.372956, 0.0]])
    assert lp.grad[1, 2].item() == 0.0
    assert close([stats["ratio_mean"], stats["ratio_min"], stats["ratio_max"]], [1.298498, 1.105171, 1.491825])
    assert stats["n_steps"] == 2 and stats["n_tokens"] == 5 and stats["clip_frac"] == 0.0


def test_step_ratio_is_geometric_mean_and_gradient_is_analytic():
    g = torch.Generator().manual_seed(1)
    old = -torch.rand(4, 6, generator=g) * 3
    new = (old + 0.1 * torch.randn(4, 6, generator=g)).requires_grad_(True)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] + [0] * 5, [1] * 3 + [0] * 3])
    adv = torch.randn(4, generator=g)
    # wide clips: nothing is clipped, so the loss is -mean_t(A_t w_t) with w_t the geometric mean
    loss, stats = step_policy_loss(new, old, mask, adv, clip_low=0.99, clip_high=100.0)
    loss.backward()
    n = mask.sum(-1)
    token_ratios = torch.exp(new.detach() - old) * mask + (1 - mask)
    geo = token_ratios.prod(-1) ** (1.0 / n)  # geometric mean of the token ratios
    assert close(loss.detach(), -(adv * geo).mean())
    assert math.isclose(stats["ratio_mean"], geo.mean().item(), rel_tol=1e-5)
    # analytic gradient of -(1/N) sum_t A_t exp((1/L_t) sum_i (logp_i - old_i)):
    #   d/d logp_i = -(1/N) A_t w_t / L_t on real tokens, 0 on padding
    analytic = (-(adv * geo / n) / 4)[:, None] * mask
    assert close(new.grad, analytic)
    # ...which is also the autograd gradient of the sequence-level objective itself
    seq = new.detach().clone().requires_grad_(True)
    log_w = ((seq - old) * mask).sum(-1) / n
    (-(adv * log_w.exp()).mean()).backward()
    assert close(new.grad, seq.grad)


def test_step_ratio_single_token_equals_token_ratio():
    lp = torch.tensor([[0.3], [-0.1]], requires_grad=True)
    old = torch.zeros(2, 1)
    a, _ = step_policy_loss(lp, old, torch.ones(2, 1), torch.tensor([1.0, -2.0]))
    b, _ = token_policy_loss(lp, old, torch.ones(2, 1), torch.tensor([1.0, -2.0]))
    assert math.isclose(a.item(), b.item(), rel_tol=1e-6)


def _four_clip_cases():
    # one token per step; ratios 1.5, 0.5, 0.5, 1.5 with advantages +1, -1, +1, -1
    log_r = torch.log(torch.tensor([[1.5], [0.5], [0.5], [1.5]]))
    return log_r.clone().requires_grad_(True), torch.zeros(4, 1), torch.ones(4, 1), torch.tensor([1.0, -1.0, 1.0, -1.0])


@pytest.mark.parametrize("fn", [step_policy_loss, token_policy_loss])
def test_clipping_both_sides(fn):
    lp, old, mask, adv = _four_clip_cases()
    loss, stats = fn(lp, old, mask, adv, clip_low=0.2, clip_high=0.2)
    # case 1: w 1.5 > 1.2, A > 0 -> -min(1.5, 1.2) = -1.2, clipped (no grad)
    # case 2: w 0.5 < 0.8, A < 0 -> -min(-0.5, -0.8) = 0.8, clipped (no grad)
    # case 3: w 0.5, A > 0 -> -min(0.5, 0.8) = -0.5, unclipped: grad -A w / 4 = -0.125
    # case 4: w 1.5, A < 0 -> -min(-1.5, -1.2) = 1.5, unclipped: grad -A w / 4 = +0.375
    # loss = (-1.2 + 0.8 - 0.5 + 1.5) / 4 = 0.15
    assert math.isclose(loss.item(), 0.15, abs_tol=1e-6)
    loss.backward()
    assert close(lp.grad, [[0.0], [0.0], [-0.125], [0.375]])
    assert stats["clip_frac"] == 0.5 and stats["clip_frac_low"] == 0.25 and stats["clip_frac_high"] == 0.25


def test_asymmetric_clips():
    # clip_low 0.1, clip_high 0.3: w 1.25 with A > 0 stays unclipped (< 1.3); w 0.85 with A < 0 is clipped to 0.9
    lp = torch.log(torch.tensor([[1.25], [0.85]])).requires_grad_(True)
    loss, stats = step_policy_loss(lp, torch.zeros(2, 1), torch.ones(2, 1), torch.tensor([1.0, -1.0]),
                                   clip_low=0.1, clip_high=0.3)
    # (-1.25 + 0.9) / 2 = -0.175
    assert math.isclose(loss.item(), -0.175, abs_tol=1e-6)
    assert stats["clip_frac_low"] == 0.5 and stats["clip_frac_high"] == 0.0


def test_gspo_tiny_clips():
    # a step ratio of exp(1e-3) = 1.0010005 is beyond 1 + 4e-4 -> clipped at 1.0004 for A > 0
    lp = torch.full((1, 4), 1e-3, requires_grad=True)
    loss, stats = step_policy_loss(lp, torch.zeros(1, 4), torch.ones(1, 4), torch.tensor([1.0]),
                                   clip_low=GSPO_CLIP_LOW, clip_high=GSPO_CLIP_HIGH)
    assert math.isclose(loss.item(), -(1 + GSPO_CLIP_HIGH), rel_tol=1e-6)
    assert stats["clip_frac"] == 1.0
    loss.backward()
    assert lp.grad.abs().max() == 0


def test_sequence_loss_takes_one_ratio_over_all_steps_of_a_trajectory():
    # trajectory 5 = rows 0, 2 (token log-ratios 0.4 | 0.2, 0.0 -> 3 tokens, s = exp(0.6 / 3) = exp(0.2))
    # trajectory 9 = row 1 (log-ratios -0.1, -0.1 -> s = exp(-0.1)); no clipping at 0.5
    lp = torch.tensor([[0.4, 0.0], [-0.1, -0.1], [0.2, 0.0]], requires_grad=True)
    mask = torch.tensor([[1, 0], [1, 1], [1, 1]])
    adv = torch.tensor([2.0, -1.0, 2.0])
    loss, stats = sequence_policy_loss(lp, torch.zeros(3, 2), mask, adv, torch.tensor([5, 9, 5]),
                                       clip_low=0.5, clip_high=0.5)
    s5, s9 = math.exp(0.2), math.exp(-0.1)
    # per sequence: -s * A; mean over the 2 sequences
    assert math.isclose(loss.item(), (-2.0 * s5 + 1.0 * s9) / 2, rel_tol=1e-6)
    assert stats["n_seqs"] == 2.0 and math.isclose(stats["ratio_max"], s5, rel_tol=1e-6)
    loss.backward()
    # d/dlogp_i = -A s / |y| / (number of sequences): traj 5 tokens -2 s5 / 3 / 2, traj 9 tokens s9 / 2 / 2
    g5, g9 = -2.0 * s5 / 3 / 2, 1.0 * s9 / 2 / 2
    assert torch.allclose(lp.grad, torch.tensor([[g5, 0.0], [g9, g9], [g5, g5]]), atol=1e-6)


def test_sequence_loss_with_one_row_per_sequence_is_the_step_loss():
    torch.manual_seed(0)
    lp = (torch.randn(4, 5) * 0.1).requires_grad_()
    old = torch.randn(4, 5) * 0.1
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]])
    adv = torch.tensor([1.0, -0.5, 0.3, 2.0])
    a, sa = sequence_policy_loss(lp, old, mask, adv, torch.arange(4), clip_low=0.05, clip_high=0.05)
    b, sb = step_policy_loss(lp, old, mask, adv, clip_low=0.05, clip_high=0.05)
    assert math.isclose(a.item(), b.item(), rel_tol=1e-6) and sa["clip_frac"] == sb["clip_frac"]
    ga, = torch.autograd.grad(a, lp)
    gb, = torch.autograd.grad(b, lp)
    assert torch.allclose(ga, gb, atol=1e-7)


def test_sequence_loss_rejects_disagreeing_advantages_and_bad_ids():
    lp, mask = torch.zeros(2, 2), torch.ones(2, 2)
    with pytest.raises(InvalidArgument, match="share one advantage"):
        sequence_policy_loss(lp, lp, mask, torch.tensor([1.0, 0.0]), torch.tensor([3, 3]))
    with pytest.raises(InvalidArgument, match="seq_ids"):
        sequence_policy_loss(lp, lp, mask, torch.tensor([1.0, 1.0]), torch.tensor([0.5, 1.5]))


def test_empty_steps_are_ignored_and_padding_gets_no_gradient():
    lp = torch.tensor([[0.1, 0.2, NAN], [NAN, NAN, NAN]], requires_grad=True)
    old = torch.zeros(2, 3)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])  # second row: a step with no tokens
    loss, stats = step_policy_loss(lp, old, mask, torch.tensor([1.0, 5.0]))
    ref, _ = step_policy_loss(lp[:1, :2].detach().requires_grad_(True), old[:1, :2], mask[:1, :2], torch.tensor([1.0]))
    assert math.isclose(loss.item(), ref.item(), rel_tol=1e-6)
    loss.backward()
    assert torch.isfinite(lp.grad).all()
    assert lp.grad[0, 2] == 0 and (lp.grad[1] == 0).all() and (lp.grad[0, :2] != 0).all()
    assert stats["n_steps"] == 1


def test_policy_loss_shape_errors():
    lp = torch.zeros(2, 3, requires_grad=True)
    with pytest.raises(InvalidArgument, match="advantages"):
        step_policy_loss(lp, torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(3))
    with pytest.raises(InvalidArgument, match="old_logprobs"):
        step_policy_loss(lp, torch.zeros(2, 2), torch.ones(2, 3), torch.zeros(2))
    with pytest.raises(InvalidArgument, match="response_mask"):
        token_policy_loss(lp, torch.zeros(2, 3), torch.ones(3, 2), torch.zeros(2, 3))
    with pytest.raises(InvalidArgument, match="clip_low"):
        step_policy_loss(lp, torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2), clip_low=1.5)
    with pytest.raises(InvalidArgument, match="advantages"):
        token_policy_loss(lp, torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2, 2))


# ----------------------------------------------------------------------------- token ratio


def test_token_policy_loss_hand_computed():
    lp = torch.tensor([[0.5, 0.0, -math.inf], [-0.5, 0.1, 0.0]], requires_grad=True)
    old = torch.zeros(2, 3)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    adv = torch.tensor([[1.0, 1.0, 7.0], [-1.0, 2.0, 3.0]])
    loss, stats = token_policy_loss(lp, old, mask, adv)
    # step 1: r = e^0.5 = 1.648721 > 1.2, A = 1 -> -1.2 (clipped);  r = 1, A = 1 -> -1   => mean -1.1
    # step 2: r = e^-0.5 = 0.606531 < 0.8, A = -1 -> +0.8 (clipped); r = e^0.1 = 1.105171, A = 2 -> -2.210342;
    #         r = 1, A = 3 -> -3                                      => mean (0.8 - 2.210342 - 3) / 3 = -1.470114
    # loss = (-1.1 - 1.470114) / 2 = -1.285057
    assert math.isclose(loss.item(), -1.285057, abs_tol=1e-5)
    loss.backward()
    # grads -A r / (L_t * N): step 1: [0, -1/(2*2) = -0.25, pad 0]; step 2: [0, -2.210342/6 = -0.368390, -3/6 = -0.5]
    assert close(lp.grad, [[0.0, -0.25, 0.0], [0.0, -0.368390, -0.5]])
    assert math.isclose(stats["clip_frac"], 2 / 5)


def test_token_policy_loss_accepts_step_advantages():
    lp = torch.tensor([[0.1, 0.2], [0.0, -0.1]], requires_grad=True)
    old, mask = torch.zeros(2, 2), torch.tensor([[1, 1], [1, 0]])
    a, _ = token_policy_loss(lp, old, mask, torch.tensor([1.0, -1.0]))
    b, _ = token_policy_loss(lp, old, mask, torch.tensor([[1.0, 1.0], [-1.0, -1.0]]))
    assert a.item() == b.item()


# ----------------------------------------------------------------------------- value loss


def test_value_loss_per_step_clipped():
    values = torch.tensor([1.0, 0.2, 3.0, -1.0], requires_grad=True)
    old = torch.tensor([0.0, 0.0, 3.0, 0.0])
    ret = torch.tensor([2.0, 1.0, 0.0, 2.0])
    loss, stats = value_loss(values, old, ret, clip=0.5)
    # 1: (1 - 2)^2 = 1; V_clip = 0 + 0.5 = 0.5 -> (0.5 - 2)^2 = 2.25 -> max 2.25 (clipped term, no grad)
    # 2: (0.2 - 1)^2 = 0.64; V_clip = 0.2 (inside) -> 0.64
    # 3: (3 - 0)^2 = 9; V_clip = 3 -> 9
    # 4: (-1 - 2)^2 = 9; V_clip = -0.5 -> 6.25 -> max 9 (unclipped term wins)
    # loss = 0.5 * (2.25 + 0.64 + 9 + 9) / 4 = 2.61125
    assert math.isclose(loss.item(), 2.61125, abs_tol=1e-6)
    loss.backward()
    # grads (V - R) / 4 where the unclipped term is active: [0, -0.8/4, 3/4, -3/4]
    assert close(values.grad, [0.0, -0.2, 0.75, -0.75])
    assert stats["clip_frac"] == 0.25
    # clip=None: plain 0.5 (V - R)^2 -> 0.5 * (1 + 0.64 + 9 + 9) / 4 = 2.455
    assert math.isclose(value_loss(values, old, ret, clip=None)[0].item(), 2.455, abs_tol=1e-6)


def test_value_loss_masks_steps():
    values = torch.tensor([1.0, NAN], requires_grad=True)
    loss, stats = value_loss(values, torch.tensor([1.0, NAN]), torch.tensor([2.0, NAN]), mask=torch.tensor([1, 0]))
    assert math.isclose(loss.item(), 0.5)  # 0.5 * (1 - 2)^2, padding ignored
    loss.backward()
    assert values.grad.tolist() == [-1.0, 0.0]


def test_value_loss_per_token_averages_within_steps_first():
    values = torch.tensor([[1.0, 2.0], [3.0, NAN]], requires_grad=True)
    zeros = torch.zeros(2, 2)
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, _ = value_loss(values, zeros, zeros, mask=mask, clip=None)
    # step 1: 0.5 * (1 + 4) / 2 = 1.25 ; step 2: 0.5 * 9 = 4.5 ; mean over steps = 2.875
    # (a flat token mean would be 0.5 * 14 / 3 = 2.333)
    assert math.isclose(loss.item(), 2.875, abs_tol=1e-6)
    loss.backward()
    # d/dV = (V - R) / (L_t * N): [1/4, 2/4], [3/2, pad 0]
    assert close(values.grad, [[0.25, 0.5], [1.5, 0.0]])


def test_value_loss_explained_variance_and_errors():
    v = torch.tensor([1.0, 2.0, 3.0])
    _, stats = value_loss(v, v, v)
    assert stats["explained_variance"] == 1.0 and stats["loss"] == 0.0
    _, stats = value_loss(torch.zeros(3), torch.zeros(3), v)  # predicts nothing: EV = 0
    assert math.isclose(stats["explained_variance"], 0.0, abs_tol=1e-6)
    # returns equal up to float rounding: EV is undefined -> 0, not -1e15
    flat = torch.tensor([0.1 + 0.2, 0.3, 0.3]).double()
    _, stats = value_loss(torch.tensor([0.0, 0.5, 1.0]).double(), flat, flat)
    assert stats["explained_variance"] == 0.0
    with pytest.raises(InvalidArgument, match="returns"):
        value_loss(v, v, torch.zeros(4))
    with pytest.raises(InvalidArgument, match="clip"):
        value_loss(v, v, v, clip=-1.0)


# ----------------------------------------------------------------------------- KL


def test_kl_penalty_k3_hand_computed():
    logp = torch.tensor([[0.5, -0.2], [0.0, NAN]], requires_grad=True)
    ref = torch.tensor([[0.0, 0.0], [0.3, NAN]])
    mask = torch.tensor([[1, 1], [1, 0]])
    kl = kl_penalty(logp, ref, mask)
    # d = ref - logp = [-0.5, 0.2], [0.3]; k3 = e^d - d - 1:
    #   k3(-0.5) = 0.606531 + 0.5 - 1 = 0.106531 ; k3(0.2) = 1.221403 - 1.2 = 0.021403 ; k3(0.3) = 1.349859 - 1.3 = 0.049859
    # step means: (0.106531 + 0.021403) / 2 = 0.063967 and 0.049859 -> mean 0.056913
    assert math.isclose(kl.item(), 0.056913, abs_tol=1e-5)
    kl.backward()
    # d k3 / d logp = -(e^d - 1), divided by L_t * N: [-(0.606531 - 1)/4, -(1.221403 - 1)/4], [-(0.349859)/2, 0]
    assert close(logp.grad, [[0.098367, -0.055351], [-0.174929, 0.0]])
    # zero when the policies agree, never negative
    same = torch.tensor([[0.3, -0.4]])
    assert kl_penalty(same, same, torch.ones(1, 2)).item() == 0.0
    assert kl_penalty(torch.randn(3, 4), torch.randn(3, 4), torch.ones(3, 4)).item() >= 0.0


def test_approx_kl_stat_is_zero_on_policy():
    lp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    _, stats = step_policy_loss(lp, lp.detach().clone(), torch.ones(1, 2), torch.tensor([1.0]))
    assert stats["approx_kl"] == 0.0 and stats["ratio_mean"] == 1.0
    _, stats = step_policy_loss(lp, lp.detach() - 0.5, torch.ones(1, 2), torch.tensor([1.0]))
    # k3 of KL(old || new) per token with r = e^0.5: (r - 1) - log r = 1.648721 - 1 - 0.5 = 0.148721
    assert math.isclose(stats["approx_kl"], 0.148721, abs_tol=1e-5)


def test_algorithm_doc_example_runs_and_names_exist():
    import re
    from pathlib import Path

    from steppo import advantages as adv_mod
    from steppo import algos as algos_mod

    doc = (Path(__file__).resolve().parents[2] / "docs" / "algorithm.md").read_text()
    section = doc[doc.index("## Using the functions in another trainer"):]
    for block in re.findall(r"```python\n(.*?)```", section, re.S):
        scope: dict = {}
        exec(block, scope)  # noqa: S102 - the doc's own example
        assert torch.isfinite(scope["policy_loss"]) and scope["logprobs"].grad is not None
    # every function the page names exists in the module it is listed under
    names = set(re.findall(r"`([a-z_]+(?:_advantages|_gae|_loss|_penalty|_normalize|_returns))[`(]", doc))
    assert {"step_gae", "token_gae", "step_policy_loss", "gigpo_advantages"} <= names
    for name in {n for n in names if not n.startswith("steppo")}:  # skip --algo names
        assert hasattr(adv_mod, name) or hasattr(loss_mod, name) or hasattr(algos_mod, name), name


def test_low_precision_inputs_accumulate_in_float32():
    lp32 = torch.randn(3, 50) * 0.01 - 2.0
    old = lp32 + 0.01 * torch.randn(3, 50)
    lp16 = lp32.to(torch.bfloat16).requires_grad_(True)
    adv = torch.tensor([1.0, -0.5, 2.0])
    loss, _ = step_policy_loss(lp16, old.to(torch.bfloat16), torch.ones(3, 50), adv)
    ref, _ = step_policy_loss(lp16.detach().float(), old.to(torch.bfloat16).float(), torch.ones(3, 50), adv)
    assert loss.dtype == torch.float32 and math.isclose(loss.item(), ref.item(), rel_tol=1e-6)
    loss.backward()
    assert lp16.grad.dtype == torch.bfloat16 and torch.isfinite(lp16.grad.float()).all()
    v = torch.tensor([1.0, 2.0], dtype=torch.bfloat16, requires_grad=True)
    vl, _ = value_loss(v, v.detach(), torch.tensor([0.0, 0.0]))
    assert vl.dtype == torch.float32 and math.isclose(vl.item(), 0.5 * (1 + 4) / 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_losses_match_cpu():
    dev = torch.device("cuda")
    lp, old, mask = _step_batch()
    adv = torch.tensor([1.0, -1.0])
    cpu_loss, cpu_stats = step_policy_loss(lp, old, mask, adv)
    lp_gpu = lp.detach().to(dev).requires_grad_(True)
    gpu_loss, gpu_stats = step_policy_loss(lp_gpu, old.to(dev), mask.to(dev), adv)
    gpu_loss.backward()
    cpu_loss.backward()
    assert math.isclose(gpu_loss.item(), cpu_loss.item(), rel_tol=1e-5)
    assert close(lp_gpu.grad.cpu(), lp.grad) and gpu_stats["n_tokens"] == cpu_stats["n_tokens"]
    tok, _ = token_policy_loss(lp_gpu, old.to(dev), mask.to(dev), adv.to(dev))
    assert torch.isfinite(tok)
    vl, _ = value_loss(torch.ones(3, device=dev), torch.zeros(3, device=dev), torch.zeros(3))
    # V = 1, V_old = 0, R = 0 (a CPU tensor: moved to the values' device): max(1, 0.5^2) -> 0.5 * 1
    assert math.isclose(vl.item(), 0.5, rel_tol=1e-6)
    assert kl_penalty(lp_gpu, old.to(dev).nan_to_num(0.0), mask.to(dev)).item() >= 0


@pytest.mark.parametrize("fn", [step_policy_loss, token_policy_loss])
def test_losses_improve_a_toy_policy(fn):
    # End-to-end sign check: a 3-token "response" policy (independent logits per position) gets
    # reward = fraction of tokens equal to the target; PPO-style updates on group-normalised
    # rewards must raise the mean reward from chance (0.25) to near 1.
    from steppo.advantages import masked_normalize

    gen = torch.Generator().manual_seed(0)
    logits = torch.zeros(3, 4, requires_grad=True)
    target = torch.tensor([1, 2, 3])
    opt = torch.optim.Adam([logits], lr=0.1)
    mask = torch.ones(64, 3)
    for _ in range(25):
        with torch.no_grad():
            probs = logits.softmax(-1)
            actions = torch.multinomial(probs, 64, replacement=True, generator=gen).T  # [64, 3]
            old = probs.log().gather(1, actions.T).T
            reward = (actions == target).float().mean(-1)
        adv = masked_normalize(reward)
        for _ in range(4):
            lp = logits.log_softmax(-1).gather(1, actions.T).T
            loss, _ = fn(lp, old, mask, adv)
            opt.zero_grad()
            loss.backward()
            opt.step()
    final = logits.softmax(-1).gather(1, target[:, None]).mean().item()
    assert final > 0.9, final


@pytest.mark.parametrize("loss_fn", ["step", "token"])
def test_token_log_ratio_min_reports_the_most_moved_token_not_padding(loss_fn):
    from steppo import losses as L

    old = torch.zeros(2, 5)
    # step 0: one token fell to e^-2 while the step's mean log-ratio is 0; step 1's padding holds -9
    new = torch.tensor([[0.5, -2.0, 0.5, 0.5, 0.5], [0.1, -9.0, -9.0, -9.0, -9.0]])
    mask = torch.tensor([[1.0] * 5, [1.0, 0.0, 0.0, 0.0, 0.0]])
    fn = L.step_policy_loss if loss_fn == "step" else L.token_policy_loss
    _, stats = fn(new, old, mask, torch.tensor([-1.0, 1.0]))
    assert stats["token_log_ratio_min"] == pytest.approx(-2.0)
    if loss_fn == "step":  # the step ratio sees only the mean: step 0 looks unmoved
        assert stats["ratio_min"] == pytest.approx(1.0, abs=1e-6)
        assert stats["clip_frac"] == 0.0


# ----------------------------------------------------------------------------- StepPO's token guard


def _guard_case(guard: float, adv: float):
    # one step of 4 tokens; token log-ratios -0.6 (fell), +0.5 (rose), -0.1 and +0.1 (inside the band)
    lp = torch.tensor([[-0.6, 0.5, -0.1, 0.1]], requires_grad=True)
    loss, stats = step_policy_loss(lp, torch.zeros(1, 4), torch.ones(1, 4), torch.tensor([adv]), token_guard=guard)
    loss.backward()
    return lp.grad[0].tolist(), stats


def test_token_guard_zero_is_the_reference_step_loss():
    lp = torch.randn(3, 5, requires_grad=True)
    old = lp.detach() + 0.3 * torch.randn(3, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    adv = torch.tensor([1.0, -2.0, 0.5])
    ref, _ = step_policy_loss(lp, old, mask, adv)
    (g_ref,) = torch.autograd.grad(ref, lp)
    off, s = step_policy_loss(lp, old, mask, adv, token_guard=0.0)
    (g_off,) = torch.autograd.grad(off, lp)
    assert torch.equal(g_ref, g_off) and s["token_guard_frac"] == 0.0


def test_token_guard_stops_only_tokens_pushed_further_out_of_the_band():
    # A < 0: the token that already fell (ratio e^-0.6 < 0.8) stops; the one that rose keeps its push down
    (g_neg, s_neg) = _guard_case(0.2, -1.0)
    (ref_neg, _) = _guard_case(0.0, -1.0)
    assert g_neg[0] == 0.0 and ref_neg[0] > 0
    assert g_neg[1:] == pytest.approx(ref_neg[1:])
    assert s_neg["token_guard_frac"] == pytest.approx(0.25)
    # A > 0: the token that rose (ratio e^0.5 > 1.2) stops; the one that fell keeps its push up
    (g_pos, s_pos) = _guard_case(0.2, 1.0)
    (ref_pos, _) = _guard_case(0.0, 1.0)
    assert g_pos[1] == 0.0 and ref_pos[1] < 0
    assert [g_pos[i] for i in (0, 2, 3)] == pytest.approx([ref_pos[i] for i in (0, 2, 3)])
    assert s_pos["token_guard_frac"] == pytest.approx(0.25)
    # a wide band guards nothing; the loss value never changes
    (g_wide, s_wide) = _guard_case(0.9, -1.0)
    assert g_wide == pytest.approx(ref_neg) and s_wide["token_guard_frac"] == 0.0


def test_token_guard_keeps_the_loss_value_and_rejects_bad_values():
    lp = torch.tensor([[-0.6, 0.5]])
    a, _ = step_policy_loss(lp, torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([-1.0]))
    b, _ = step_policy_loss(lp, torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([-1.0]), token_guard=0.2)
    assert float(a) == pytest.approx(float(b))
    for bad in (-0.1, 1.0):
        with pytest.raises(InvalidArgument, match="token_guard"):
            step_policy_loss(lp, torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([-1.0]), token_guard=bad)
