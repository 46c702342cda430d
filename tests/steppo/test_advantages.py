"""steppo.advantages against small hand-computed examples (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from stepgym.errors import InvalidArgument  # noqa: E402
from steppo.advantages import (  # noqa: E402
    broadcast_to_steps,
    discounted_returns,
    gigpo_advantages,
    group_index,
    grpo_advantages,
    masked_mean,
    masked_normalize,
    place_step_rewards,
    reinforce_pp_advantages,
    rloo_advantages,
    step_gae,
    token_gae,
)

NAN = float("nan")


def close(actual, expected, tol=1e-5):
    return torch.allclose(torch.as_tensor(actual, dtype=torch.float64), torch.as_tensor(expected, dtype=torch.float64), atol=tol)


# ----------------------------------------------------------------------------- step GAE


def test_step_gae_gamma1_lam1():
    # A_3 = 1 - 0.6 = 0.4; A_2 = (0 + 0.6 - 0.4) + 0.4 = 0.6; A_1 = (0 + 0.4 - 0.2) + 0.6 = 0.8
    # R = A + V = [1, 1, 1] (Monte-Carlo return 1 from every step)
    adv, ret = step_gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.2, 0.4, 0.6]]), torch.ones(1, 3))
    assert close(adv, [[0.8, 0.6, 0.4]])
    assert close(ret, [[1.0, 1.0, 1.0]])


def _two_trajs():
    # traj A: 3 real steps; traj B: 1 real step, then padding holding garbage (NaN, 99, 7)
    rewards = torch.tensor([[1.0, 0.0, 2.0], [3.0, 99.0, NAN]])
    values = torch.tensor([[0.5, 1.0, 1.5], [1.0, 7.0, NAN]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    return rewards, values, mask


def test_step_gae_discounted_with_padding():
    # gamma = 0.9, lam = 0.5 -> gamma * lam = 0.45
    # A: delta_3 = 2 + 0.9 * 0 - 1.5 = 0.5                A_3 = 0.5
    #    delta_2 = 0 + 0.9 * 1.5 - 1.0 = 0.35             A_2 = 0.35 + 0.45 * 0.5 = 0.575
    #    delta_1 = 1 + 0.9 * 1.0 - 0.5 = 1.4              A_1 = 1.4 + 0.45 * 0.575 = 1.65875
    #    R = A + V = [2.15875, 1.575, 2.0]
    # B: delta_1 = 3 + 0.9 * 0 - 1 = 2 (padding does not count as a next step); R = 3
    adv, ret = step_gae(*_two_trajs(), gamma=0.9, lam=0.5)
    assert close(adv, [[1.65875, 0.575, 0.5], [2.0, 0.0, 0.0]])
    assert close(ret, [[2.15875, 1.575, 2.0], [3.0, 0.0, 0.0]])
    assert torch.isfinite(adv).all() and torch.isfinite(ret).all()


def test_step_gae_bootstrap_for_truncated_episode():
    # Same as above but A was truncated with V(s_4) = 2 and B terminated (bootstrap 0):
    # A: delta_3 = 2 + 0.9 * 2 - 1.5 = 2.3                A_3 = 2.3
    #    A_2 = 0.35 + 0.45 * 2.3 = 1.385 ;  A_1 = 1.4 + 0.45 * 1.385 = 2.02325
    adv, ret = step_gae(*_two_trajs(), gamma=0.9, lam=0.5, bootstrap=torch.tensor([2.0, 0.0]))
    assert close(adv, [[2.02325, 1.385, 2.3], [2.0, 0.0, 0.0]])
    assert close(ret, [[2.52325, 2.385, 3.8], [3.0, 0.0, 0.0]])
    # bootstrap=None is the terminal case: V_{T+1} = 0
    adv0, _ = step_gae(*_two_trajs(), gamma=0.9, lam=0.5, bootstrap=torch.zeros(2))
    adv_none, _ = step_gae(*_two_trajs(), gamma=0.9, lam=0.5)
    assert torch.equal(adv0, adv_none)


def test_step_gae_gamma_lambda_edges():
    r, v, m = _two_trajs()
    # gamma = 0: every step is myopic, A_t = r_t - V_t (lam irrelevant)
    adv, _ = step_gae(r, v, m, gamma=0.0, lam=0.7)
    assert close(adv, [[0.5, -1.0, 0.5], [2.0, 0.0, 0.0]])
    # lam = 0: one-step TD errors delta_t = r_t + gamma V_{t+1} - V_t (gamma = 1)
    # A: [1 + 1 - 0.5, 0 + 1.5 - 1, 2 - 1.5] = [1.5, 0.5, 0.5]
    adv, ret = step_gae(r, v, m, gamma=1.0, lam=0.0)
    assert close(adv, [[1.5, 0.5, 0.5], [2.0, 0.0, 0.0]])
    assert close(ret, [[2.0, 1.5, 2.0], [3.0, 0.0, 0.0]])  # TD(0) targets r + V_{t+1}
    # lam = 1, gamma = 1: A_t = (sum of future rewards) - V_t; A: [3 - 0.5, 2 - 1, 2 - 1.5]
    adv, ret = step_gae(r, v, m, gamma=1.0, lam=1.0)
    assert close(adv, [[2.5, 1.0, 0.5], [2.0, 0.0, 0.0]])
    assert close(ret, [[3.0, 2.0, 2.0], [3.0, 0.0, 0.0]])


def test_step_gae_matches_brute_force_sum_of_tds():
    # A_t = sum_k (gamma lam)^k delta_{t+k} with V after the end = bootstrap
    g = torch.Generator().manual_seed(0)
    r, v = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    lengths = [6, 4, 1, 3]
    mask = torch.tensor([[1] * n + [0] * (6 - n) for n in lengths])
    boot = torch.randn(4, generator=g)
    gamma, lam = 0.95, 0.8
    adv, ret = step_gae(r, v, mask, gamma=gamma, lam=lam, bootstrap=boot)
    for b, n in enumerate(lengths):
        vals = v[b, :n].tolist() + [boot[b].item()]
        deltas = [r[b, t].item() + gamma * vals[t + 1] - vals[t] for t in range(n)]
        for t in range(n):
            expect = sum((gamma * lam) ** k * deltas[t + k] for k in range(n - t))
            assert math.isclose(adv[b, t].item(), expect, rel_tol=1e-5, abs_tol=1e-5)
            assert math.isclose(ret[b, t].item(), expect + v[b, t].item(), rel_tol=1e-5, abs_tol=1e-5)
        assert (adv[b, n:] == 0).all() and (ret[b, n:] == 0).all()


def test_step_gae_is_detached_and_validates():
    v = torch.tensor([[0.5, 0.5]], requires_grad=True)
    adv, ret = step_gae(torch.tensor([[0.0, 1.0]]), v, torch.ones(1, 2))
    assert not adv.requires_grad and not ret.requires_grad
    with pytest.raises(InvalidArgument, match="values"):
        step_gae(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3))
    with pytest.raises(InvalidArgument, match="mask"):
        step_gae(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(3, 2))
    with pytest.raises(InvalidArgument, match="gamma"):
        step_gae(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2), gamma=1.5)
    with pytest.raises(InvalidArgument, match="lam"):
        step_gae(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2), lam=-0.1)
    with pytest.raises(InvalidArgument, match="bootstrap"):
        step_gae(torch.zeros(2, 2), torch.zeros(2, 2), torch.ones(2, 2), bootstrap=torch.zeros(3))
    with pytest.raises(InvalidArgument, match="2-D"):
        step_gae(torch.zeros(3), torch.zeros(3), torch.ones(3))


# ----------------------------------------------------------------------------- token GAE


def test_token_gae_chained_across_steps():
    # step 1 = 2 tokens (reward 0.5 on its last token), step 2 = 3 tokens (reward 1); gamma 1, lam 0.5
    # V = [0.1, 0.2, 0.3, 0.4, 0.5]
    # delta_5 = 1 - 0.5 = 0.5                      A_5 = 0.5
    # delta_4 = 0 + 0.5 - 0.4 = 0.1                A_4 = 0.1 + 0.5 * 0.5 = 0.35
    # delta_3 = 0 + 0.4 - 0.3 = 0.1                A_3 = 0.1 + 0.5 * 0.35 = 0.275
    # delta_2 = 0.5 + 0.3 - 0.2 = 0.6              A_2 = 0.6 + 0.5 * 0.275 = 0.7375
    # delta_1 = 0 + 0.2 - 0.1 = 0.1                A_1 = 0.1 + 0.5 * 0.7375 = 0.46875
    rewards = place_step_rewards(torch.tensor([[0.5, 1.0]]), torch.ones(1, 2), torch.tensor([[2, 3]]))
    assert rewards.tolist() == [[0.0, 0.5, 0.0, 0.0, 1.0]]
    values = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5]])
    adv, ret = token_gae(rewards, values, torch.ones(1, 5), gamma=1.0, lam=0.5)
    assert close(adv, [[0.46875, 0.7375, 0.275, 0.35, 0.5]])
    assert close(ret, [[0.56875, 0.9375, 0.575, 0.75, 1.0]])


def test_token_gae_skips_masked_positions():
    # The same trajectory with two observation tokens between the steps and padding at the end:
    # masked positions must not advance the recursion, so response positions get the same values.
    rewards = torch.tensor([[0.0, 0.5, 9.0, 9.0, 0.0, 0.0, 1.0, NAN]])
    values = torch.tensor([[0.1, 0.2, 5.0, 5.0, 0.3, 0.4, 0.5, NAN]])
    mask = torch.tensor([[1, 1, 0, 0, 1, 1, 1, 0]])
    adv, ret = token_gae(rewards, values, mask, gamma=1.0, lam=0.5)
    assert close(adv, [[0.46875, 0.7375, 0.0, 0.0, 0.275, 0.35, 0.5, 0.0]])
    assert (ret[mask == 0] == 0).all()


def test_token_gae_discount_is_per_token_and_bootstraps():
    # 3 tokens, reward 1 on the last, V = 0, gamma 0.5, lam 1, bootstrap V_after = 4:
    # A_3 = 1 + 0.5 * 4 = 3 ; A_2 = 0.5 * 3 = 1.5 ; A_1 = 0.75
    adv, _ = token_gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.zeros(1, 3), torch.ones(1, 3),
                       gamma=0.5, lam=1.0, bootstrap=torch.tensor([4.0]))
    assert close(adv, [[0.75, 1.5, 3.0]])


def test_place_step_rewards_padding_and_errors():
    # row 0: steps of 1 and 2 tokens; row 1: one step of 2 tokens, second step is padding
    out = place_step_rewards(torch.tensor([[1.0, 2.0], [3.0, 9.0]]), torch.tensor([[1, 1], [1, 0]]),
                             torch.tensor([[1, 2], [2, 5]]), length=4)
    assert out.tolist() == [[1.0, 0.0, 2.0, 0.0], [0.0, 3.0, 0.0, 0.0]]
    with pytest.raises(InvalidArgument, match="at least one"):
        place_step_rewards(torch.ones(1, 2), torch.ones(1, 2), torch.tensor([[1, 0]]))
    with pytest.raises(InvalidArgument, match="length"):
        place_step_rewards(torch.ones(1, 2), torch.ones(1, 2), torch.tensor([[2, 2]]), length=3)


def test_discounted_returns():
    # G_3 = 2 ; G_2 = 0 + 0.5 * 2 = 1 ; G_1 = 1 + 0.5 * 1 = 1.5 ; padding 0
    G = discounted_returns(torch.tensor([[1.0, 0.0, 2.0, 5.0]]), torch.tensor([[1, 1, 1, 0]]), gamma=0.5)
    assert close(G, [[1.5, 1.0, 2.0, 0.0]])


# ----------------------------------------------------------------------------- normalisation


def test_masked_normalize_over_real_rows_only():
    # real entries 2 4 4 4 5 5 7 9: mean 5, population std 2 -> (x - 5) / 2; padding (100) -> 0
    x = torch.tensor([[2.0, 4.0, 4.0, 4.0, 100.0], [5.0, 5.0, 7.0, 9.0, NAN]])
    m = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 0]])
    out = masked_normalize(x, m)
    assert close(out, [[-1.5, -0.5, -0.5, -0.5, 0.0], [0.0, 0.0, 1.0, 2.0, 0.0]])
    # shift_mean=False only rescales: x / 2
    assert close(masked_normalize(x, m, shift_mean=False)[0, :2], [1.0, 2.0])


def test_masked_normalize_degenerate_cases():
    assert masked_normalize(torch.tensor([3.0]), torch.tensor([1])).tolist() == [0.0]  # single entry
    assert masked_normalize(torch.full((2, 2), 7.0)).abs().max() == 0  # constant batch
    assert masked_normalize(torch.tensor([1.0, 2.0]), torch.tensor([0, 0])).tolist() == [0.0, 0.0]  # empty
    assert masked_mean(torch.tensor([1.0, 3.0, NAN]), torch.tensor([1, 1, 0])).item() == 2.0


def test_reinforce_pp_normalises_batch_returns():
    # real returns 1, 1, 0: mean 2/3, population std sqrt(2/9) = 0.471405
    # -> (1/3)/0.471405 = 0.707107 (twice) and (-2/3)/0.471405 = -1.414214
    out = reinforce_pp_advantages(torch.tensor([[1.0, 1.0], [0.0, 8.0]]), torch.tensor([[1, 1], [1, 0]]))
    assert close(out, [[0.707107, 0.707107], [-1.414214, 0.0]])


# ----------------------------------------------------------------------------- groups

SCORES = torch.tensor([1.0, 0.0, 0.0, 2.0, 4.0, 7.0])
GROUPS = ["a", "a", "a", "b", "b", "c"]  # uneven groups: 3, 2 and a singleton


def test_grpo_uneven_and_singleton_groups():
    # a: mean 1/3, unbiased var ((2/3)^2 + 2 (1/3)^2) / 2 = 1/3, std 0.577350
    #    -> (2/3)/0.57735 = 1.154701 ; (-1/3)/0.57735 = -0.577350
    # b: mean 3, unbiased var (1 + 1) / 1 = 2, std 1.414214 -> -0.707107, 0.707107
    # c: singleton -> 0 (no NaN)
    out = grpo_advantages(SCORES, GROUPS)
    assert close(out, [1.154701, -0.577350, -0.577350, -0.707107, 0.707107, 0.0])
    # without std: s - mean_g
    assert close(grpo_advantages(SCORES, GROUPS, std_normalize=False), [2 / 3, -1 / 3, -1 / 3, -1.0, 1.0, 0.0])
    # tensor ids work the same as hashable lists
    assert torch.equal(out, grpo_advantages(SCORES, torch.tensor([5, 5, 5, 2, 2, 9])))


def test_grpo_equal_scores_give_zero():
    out = grpo_advantages(torch.tensor([1.0, 1.0, 1.0, 0.0]), [0, 0, 0, 1])
    assert torch.isfinite(out).all() and out.abs().max() == 0


def test_rloo_leave_one_out():
    # a: A_1 = 1 - (0 + 0)/2 = 1 ; A_2 = 0 - (1 + 0)/2 = -0.5 ; A_3 = -0.5
    # b: 2 - 4 = -2 ; 4 - 2 = 2 ;  c (singleton): 0
    out = rloo_advantages(SCORES, GROUPS)
    assert close(out, [1.0, -0.5, -0.5, -2.0, 2.0, 0.0])
    # identity: A_i = n/(n-1) (s_i - mean_g) for groups of size n > 1
    assert close(out[:5], (grpo_advantages(SCORES, GROUPS, std_normalize=False) * torch.tensor([1.5, 1.5, 1.5, 2, 2, 1]))[:5])


def test_group_ids_length_checked():
    with pytest.raises(InvalidArgument, match="group_ids"):
        grpo_advantages(SCORES, GROUPS[:-1])
    with pytest.raises(InvalidArgument, match="1-D"):
        rloo_advantages(torch.zeros(2, 2), [0, 1])


def test_group_index_and_broadcast():
    idx, n = group_index([("s", 1), ("t", 0), ("s", 1)])
    assert idx.tolist() == [0, 1, 0] and n == 2
    assert broadcast_to_steps(torch.tensor([0.5, -1.0]), torch.tensor([1, 0, 1])).tolist() == [-1.0, 0.5, -1.0]
    with pytest.raises(InvalidArgument, match="step_traj_index"):
        broadcast_to_steps(torch.tensor([0.5]), torch.tensor([1]))


def test_gigpo_episode_plus_anchor_step_advantage():
    # Group g0: trajectories 0, 1, 2 with scores 1, 0, 1; group g1: trajectory 3 (score 5).
    # Episode term (GRPO): g0 mean 2/3, unbiased std 0.577350 -> [0.577350, -1.154701, 0.577350]; t3 -> 0
    # Anchor groups inside g0 (step returns in brackets):
    #   s0: t0 [1], t1 [0], t2 [1]  -> same numbers as the episode term
    #   s1: t0 [1], t1 [0]          -> mean 0.5, unbiased std 0.707107 -> +0.707107, -0.707107
    #   s2: t1 [0], t2 [1]          -> -0.707107, +0.707107
    # t3's first observation is also "s0" but in another task group -> its own singleton -> 0
    # step_weight 0.5: e.g. t0/s0 = 0.577350 + 0.5 * 0.577350 = 0.866025 ; t0/s1 = 0.577350 + 0.353553 = 0.930904
    steps = [(0, "s0", 1.0), (1, "s0", 0.0), (2, "s0", 1.0), (3, "s0", 5.0),
             (0, "s1", 1.0), (1, "s1", 0.0), (1, "s2", 0.0), (2, "s2", 1.0)]
    out = gigpo_advantages(
        torch.tensor([1.0, 0.0, 1.0, 5.0]), ["g0", "g0", "g0", "g1"],
        torch.tensor([s[2] for s in steps]), [s[1] for s in steps], torch.tensor([s[0] for s in steps]),
        step_weight=0.5,
    )
    expected = [0.866025, -1.732051, 0.866025, 0.0, 0.930904, -1.508254, -1.508254, 0.930904]
    assert close(out, expected)
    # step_weight 0 reduces to GRPO broadcast to steps
    only_ep = gigpo_advantages(torch.tensor([1.0, 0.0, 1.0, 5.0]), ["g0", "g0", "g0", "g1"],
                               torch.tensor([s[2] for s in steps]), [s[1] for s in steps],
                               torch.tensor([s[0] for s in steps]), step_weight=0.0)
    assert close(only_ep, [0.577350, -1.154701, 0.577350, 0.0, 0.577350, -1.154701, -1.154701, 0.577350])


def test_gigpo_all_singletons_no_nan():
    out = gigpo_advantages(torch.tensor([3.0]), [0], torch.tensor([3.0, 1.0]), ["x", "y"], torch.tensor([0, 0]))
    assert out.tolist() == [0.0, 0.0]
    with pytest.raises(InvalidArgument, match="step_anchor_ids"):
        gigpo_advantages(torch.tensor([3.0]), [0], torch.tensor([3.0, 1.0]), ["x"], torch.tensor([0, 0]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_results_match_cpu():
    dev = torch.device("cuda")
    r, v, m = _two_trajs()
    for fn in (step_gae, token_gae):
        cpu = fn(r, v, m, gamma=0.9, lam=0.5, bootstrap=torch.tensor([2.0, 0.0]))
        gpu = fn(r.to(dev), v.to(dev), m.to(dev), gamma=0.9, lam=0.5, bootstrap=torch.tensor([2.0, 0.0]))
        assert all(g.device.type == "cuda" and close(g.cpu(), c) for g, c in zip(gpu, cpu))
    assert close(grpo_advantages(SCORES.to(dev), GROUPS).cpu(), grpo_advantages(SCORES, GROUPS))
    assert close(rloo_advantages(SCORES.to(dev), GROUPS).cpu(), rloo_advantages(SCORES, GROUPS))
    assert close(masked_normalize(r.to(dev), m.to(dev)).cpu(), masked_normalize(r, m))
    out = gigpo_advantages(SCORES[:2].to(dev), [0, 0], torch.tensor([1.0, 0.0], device=dev), ["s", "s"],
                           torch.tensor([0, 1]))
    assert out.device.type == "cuda" and close(out.cpu(), [1.414214, -1.414214])
    placed = place_step_rewards(torch.ones(1, 2, device=dev), torch.ones(1, 2, device=dev), torch.tensor([[1, 2]]))
    assert placed.device.type == "cuda" and placed.cpu().tolist() == [[1.0, 0.0, 1.0]]
