"""Advantage estimators for step-level and token-level policy optimisation.

All functions take and return torch tensors, never touch the autograd graph of their inputs
(everything is computed on detached copies; :func:`masked_mean` alone keeps the graph) and put
exact zeros on padding. Shapes use:

* ``B`` trajectories, ``T`` steps per trajectory (padded at the end, ``mask`` 1 on real steps),
* ``L`` response tokens of a trajectory (all its steps' responses concatenated; observation
  and prompt tokens are not in these tensors),
* ``N`` trajectories in a flat list (group-relative estimators) and ``M`` steps in a flat list.

Which estimator each ``--algo`` uses is listed in ``docs/algorithm.md``:

===========================  ===============================================================
``step_gae``                 StepPO: GAE over the steps of a trajectory (one value per step)
``token_gae``                token-PPO: GAE over response tokens, chained across steps
``masked_normalize``         whitening over the real rows of a batch (steps, or tokens)
``grpo_advantages``          GRPO / GSPO: trajectory score normalised within its group
``rloo_advantages``          RLOO: score minus the leave-one-out mean of its group
``reinforce_pp_advantages``  REINFORCE++: returns normalised over the whole batch
``gigpo_advantages``         GiGPO: episode advantage + anchor-state step advantage
===========================  ===============================================================

Example:
    >>> import torch
    >>> adv, ret = step_gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]]),
    ...                     torch.tensor([[1, 1]]))
    >>> adv.tolist(), ret.tolist()
    ([[0.5, 0.5]], [[1.0, 1.0]])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch

from stepgym.errors import InvalidArgument

__all__ = [
    "step_gae",
    "token_gae",
    "discounted_returns",
    "masked_normalize",
    "set_reducer",
    "batch_count",
    "masked_mean",
    "grpo_advantages",
    "rloo_advantages",
    "reinforce_pp_advantages",
    "gigpo_advantages",
    "broadcast_to_steps",
    "place_step_rewards",
    "group_index",
]

GroupIds = torch.Tensor | Sequence[Hashable]


# ----------------------------------------------------------------------------- checks


def _as_float(x: Any, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InvalidArgument(
                f"{name}: expected a tensor (or nested list of numbers), got {type(x).__name__}"
            ) from exc
    x = x.detach()
    return x if x.is_floating_point() else x.float()


def _as_mask(mask: Any, like: torch.Tensor, name: str = "mask") -> torch.Tensor:
    if mask is None:
        return torch.ones_like(like, dtype=torch.bool)
    m = torch.as_tensor(mask, device=like.device).detach()
    if m.shape != like.shape:
        raise InvalidArgument(f"{name}: expected shape {tuple(like.shape)} (same as the data), got {tuple(m.shape)}")
    return m != 0


def _check_same_shape(name: str, x: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if x.shape != ref.shape:
        raise InvalidArgument(
            f"{name}: expected shape {tuple(ref.shape)} (the shape of {ref_name}), got {tuple(x.shape)}"
        )


def _check_2d(name: str, x: torch.Tensor) -> None:
    if x.dim() != 2:
        raise InvalidArgument(f"{name}: expected a 2-D tensor [batch, time], got shape {tuple(x.shape)}")


def _check_discount(gamma: float, lam: float) -> None:
    if not 0.0 <= gamma <= 1.0:
        raise InvalidArgument(f"gamma: expected a discount in [0, 1], got {gamma!r}")
    if not 0.0 <= lam <= 1.0:
        raise InvalidArgument(f"lam: expected a GAE lambda in [0, 1], got {lam!r}")


# ----------------------------------------------------------------------------- GAE


def _masked_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
    bootstrap: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE along dim 1 where masked-out positions are skipped (they do not advance time)."""
    B, T = rewards.shape
    maskf = mask.to(rewards.dtype)
    adv = torch.zeros_like(rewards)
    # Running "next" quantities per row; positions with mask 0 leave them untouched, so the
    # recursion jumps over padding (and over anything else the caller masked out).
    next_value = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    if bootstrap is not None:
        next_value = next_value + bootstrap
    next_adv = torch.zeros_like(next_value)
    for t in range(T - 1, -1, -1):
        m = maskf[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        a = delta + gamma * lam * next_adv
        adv[:, t] = a * m
        next_value = torch.where(mask[:, t], values[:, t], next_value)
        next_adv = torch.where(mask[:, t], a, next_adv)
    returns = (adv + values) * maskf
    return adv, returns


def _prepare_gae(rewards, values, mask, gamma, lam, bootstrap):
    r = _as_float(rewards, "rewards")
    _check_2d("rewards", r)
    v = _as_float(values, "values").to(device=r.device, dtype=r.dtype)
    _check_same_shape("values", v, "rewards", r)
    m = _as_mask(mask, r)
    _check_discount(gamma, lam)
    b = None
    if bootstrap is not None:
        b = _as_float(bootstrap, "bootstrap").to(device=r.device, dtype=r.dtype).reshape(-1)
        if b.shape[0] != r.shape[0]:
            raise InvalidArgument(
                f"bootstrap: expected one value per trajectory, shape ({r.shape[0]},), got {tuple(b.shape)}"
            )
    # Padding may hold garbage (even NaN); it must not leak into real positions.
    r = torch.where(m, r, torch.zeros_like(r))
    v = torch.where(m, v, torch.zeros_like(v))
    return r, v, m, b


def step_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 1.0,
    bootstrap: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the STEPS of each trajectory (StepPO).

    With one critic value per step, ``V_{T+1} = 0`` after the last real step (or
    ``bootstrap[b]`` for a truncated episode)::

        delta_t = r_t + gamma * V_{t+1} - V_t
        A_t     = delta_t + gamma * lam * A_{t+1}
        R_t     = A_t + V_t                       (the critic's target)

    Args:
        rewards: ``[B, T]`` reward of each step.
        values: ``[B, T]`` critic value ``V(s_t)`` of each step.
        mask: ``[B, T]`` 1 on real steps, 0 on padding (padding at the end of a row; masked
            positions inside a row are skipped, they do not advance the recursion).
        gamma: discount per step.
        lam: GAE lambda (1.0 gives Monte-Carlo returns minus the value baseline).
        bootstrap: optional ``[B]`` value ``V(s_{T+1})`` of the state after the last real step,
            for episodes cut by a step limit; use 0 (or ``None``) for terminated ones.

    Returns:
        ``(advantages, returns)``, both ``[B, T]``, unnormalised, exactly 0 on padding, detached.

    Example:
        >>> import torch
        >>> # r = [0, 0, 1], V = [0.2, 0.4, 0.6], gamma = lam = 1:
        >>> # A_3 = 1 - 0.6 = 0.4; A_2 = (0 + 0.6 - 0.4) + A_3 = 0.6; A_1 = (0.4 - 0.2) + 0.6 = 0.8
        >>> adv, ret = step_gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.2, 0.4, 0.6]]),
        ...                     torch.tensor([[1, 1, 1]]))
        >>> [round(a, 4) for a in adv[0].tolist()], [round(x, 4) for x in ret[0].tolist()]
        ([0.8, 0.6, 0.4], [1.0, 1.0, 1.0])
    """
    r, v, m, b = _prepare_gae(rewards, values, mask, gamma, lam, bootstrap)
    return _masked_gae(r, v, m, gamma, lam, b)


def token_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 1.0,
    bootstrap: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over the response TOKENS of each trajectory, chained across steps (token-PPO).

    Row ``b`` holds the response tokens of every step of trajectory ``b`` concatenated in order;
    observation/prompt tokens are not in the tensors, so they do not advance the recursion. Each
    step's reward sits on that step's last response token (see :func:`place_step_rewards`), and
    ``values`` is the token value head's output at every response token. The recursion is the
    one of :func:`step_gae` with tokens as the time axis (``gamma`` is per token)::

        delta_i = r_i + gamma * V_{i+1} - V_i ;  A_i = delta_i + gamma * lam * A_{i+1} ;  R_i = A_i + V_i

    Args:
        rewards: ``[B, L]`` token rewards (zeros except on each step's last token).
        values: ``[B, L]`` token values.
        mask: ``[B, L]`` 1 on response tokens; 0 positions (padding, or observation tokens if
            the caller kept them in the layout) are skipped.
        gamma: discount per token.
        lam: GAE lambda.
        bootstrap: optional ``[B]`` value of the state after the last token (truncated episodes).

    Returns:
        ``(advantages, returns)``, both ``[B, L]``, zeros where ``mask`` is 0, detached.

    Example:
        >>> import torch
        >>> # two steps of 2 and 1 tokens; reward 1 on the last token; V = 0.5 everywhere:
        >>> # A_3 = 1 - 0.5 = 0.5; A_2 = (0 + 0.5 - 0.5) + 0.5 = 0.5; A_1 = 0.5
        >>> adv, _ = token_gae(torch.tensor([[0.0, 0.0, 1.0, 0.0]]), torch.full((1, 4), 0.5),
        ...                    torch.tensor([[1, 1, 1, 0]]))
        >>> adv.tolist()
        [[0.5, 0.5, 0.5, 0.0]]
    """
    r, v, m, b = _prepare_gae(rewards, values, mask, gamma, lam, bootstrap)
    return _masked_gae(r, v, m, gamma, lam, b)


def discounted_returns(
    rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, bootstrap: torch.Tensor | None = None
) -> torch.Tensor:
    """Reward-to-go ``G_t = r_t + gamma * G_{t+1}`` over the real positions of each row.

    Equal to the returns of :func:`step_gae` with zero values (and ``lam = 1``).

    Example:
        >>> import torch
        >>> discounted_returns(torch.tensor([[1.0, 0.0, 2.0, 0.0]]), torch.tensor([[1, 1, 1, 0]]),
        ...                    gamma=0.5).tolist()
        [[1.5, 1.0, 2.0, 0.0]]
    """
    r = _as_float(rewards, "rewards")
    _, ret = step_gae(r, torch.zeros_like(r), mask, gamma=gamma, lam=1.0, bootstrap=bootstrap)
    return ret


# ----------------------------------------------------------------------------- normalisation


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is nonzero; 0 when there are none.

    ``sum(x where mask != 0) / max(1, count(mask != 0))`` over all entries (``mask`` has the
    shape of ``x``); ``mask=None`` is plain ``x.mean()``. The one function here that works on
    ``x`` itself rather than a detached copy: gradients flow back to ``x``.

    Example:
        >>> import torch
        >>> # real entries 1 and 3 -> 2.0; the padded 100 is left out
        >>> masked_mean(torch.tensor([1.0, 3.0, 100.0]), torch.tensor([1, 1, 0])).item()
        2.0
        >>> masked_mean(torch.tensor([5.0, 7.0]), torch.tensor([0, 0])).item()  # no real entry
        0.0
        >>> x = torch.tensor([2.0, 4.0], requires_grad=True)
        >>> masked_mean(x, torch.tensor([1, 0])).backward()
        >>> x.grad.tolist()
        [1.0, 0.0]
    """
    if mask is None:
        return x.mean()
    keep = mask != 0
    return torch.where(keep, x, torch.zeros_like(x)).sum() / keep.sum().clamp(min=1).to(x.dtype)


def masked_normalize(
    x: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-8, shift_mean: bool = True
) -> torch.Tensor:
    """Whiten ``x`` with the mean and standard deviation of its real entries.

    ``(x - mean) / (std + eps)`` where mean and (population) std are taken over positions with
    ``mask != 0`` only, so padding does not bias them; padding comes out as exactly 0. Pass the
    step mask to normalise StepPO advantages over step rows, the token mask for token-PPO.

    Args:
        x: any shape.
        mask: same shape as ``x``; ``None`` means every entry is real.
        eps: added to the std (a batch of equal values maps to 0, not NaN).
        shift_mean: subtract the mean (``False`` only rescales).

    Example:
        >>> import torch
        >>> # real entries 1 and 3: mean 2, std 1 -> [-1, 1]; the padded 9 becomes 0
        >>> masked_normalize(torch.tensor([1.0, 3.0, 9.0]), torch.tensor([1, 1, 0])).tolist()
        [-1.0, 1.0, 0.0]
    """
    xf = _as_float(x, "x")
    m = _as_mask(mask, xf)
    if _REDUCER is not None:
        return _masked_normalize_reduced(xf, m, eps, shift_mean)
    n = m.sum()
    if n == 0:
        return torch.zeros_like(xf)
    xz = torch.where(m, xf, torch.zeros_like(xf))
    mean = xz.sum() / n
    var = (torch.where(m, xf - mean, torch.zeros_like(xf)) ** 2).sum() / n
    centred = xf - mean if shift_mean else xf
    out = centred / (var.sqrt() + eps)
    return torch.where(m, out, torch.zeros_like(out))


#: sums a tensor over the processes of a distributed run (None: one process, nothing to sum)
_REDUCER: Callable[[torch.Tensor], torch.Tensor] | None = None


def set_reducer(fn: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
    """Make batch-wide statistics global: ``fn(t)`` returns ``t`` summed over the processes.

    :mod:`steppo.distributed` installs an ``all_reduce`` here when ``WORLD_SIZE > 1``;
    :func:`masked_normalize` and :func:`batch_count` then use the statistics of the whole
    (global) batch. Group statistics (GRPO, RLOO, GiGPO) never need it: a group stays on one
    process. ``None`` (the default) restores the one-process code path exactly.
    """
    global _REDUCER
    _REDUCER = fn


def batch_count(n: int) -> int:
    """``n`` summed over the processes (``n`` itself in one process).

    Example:
        >>> batch_count(3)
        3
    """
    if _REDUCER is None:
        return n
    return int(_REDUCER(torch.tensor([float(n)], dtype=torch.float64))[0])


def _masked_normalize_reduced(xf: torch.Tensor, m: torch.Tensor, eps: float, shift_mean: bool) -> torch.Tensor:
    """:func:`masked_normalize` with count, sum and sum of squared deviations summed by ``_REDUCER``.

    Two passes as in one process (mean first, then squared deviations from the global mean),
    accumulated in float64, so the result matches one process over the union of the batches.
    """
    if _REDUCER is None:  # pragma: no cover - only called while a reducer is set
        raise RuntimeError("internal error: the distributed normalisation needs a reducer (set_reducer)")
    xz = torch.where(m, xf, torch.zeros_like(xf))
    n, total = _REDUCER(torch.stack([m.sum().double(), xz.double().sum()]).cpu()).tolist()
    if n == 0:
        return torch.zeros_like(xf)
    mean = torch.tensor(total / n, dtype=xf.dtype, device=xf.device)
    sq = (torch.where(m, xf - mean, torch.zeros_like(xf)).double() ** 2).sum()
    var = _REDUCER(sq.reshape(1).cpu())[0] / n
    std = torch.tensor(math.sqrt(float(var)), dtype=xf.dtype, device=xf.device)
    centred = xf - mean if shift_mean else xf
    out = centred / (std + eps)
    return torch.where(m, out, torch.zeros_like(out))


# ----------------------------------------------------------------------------- groups


def group_index(group_ids: GroupIds) -> tuple[torch.Tensor, int]:
    """Map arbitrary group ids (ints, strings, tuples, or a 1-D tensor) to ``0..G-1``.

    Returns:
        ``(index, G)``: a long tensor with the group number of each element, and the number
        of groups, numbered in order of first appearance.

    Example:
        >>> group_index(["b", "a", "b"])
        (tensor([0, 1, 0]), 2)
    """
    if isinstance(group_ids, torch.Tensor):
        if group_ids.dim() != 1:
            raise InvalidArgument(f"group ids: expected a 1-D tensor, got shape {tuple(group_ids.shape)}")
        keys: list[Hashable] = group_ids.detach().cpu().tolist()
    else:
        keys = list(group_ids)
    numbers: dict[Hashable, int] = {}
    index = [numbers.setdefault(k, len(numbers)) for k in keys]
    return torch.tensor(index, dtype=torch.long), len(numbers)


def _group_stats(x: torch.Tensor, idx: torch.Tensor, n_groups: int):
    """Per-element group size, group sum and unbiased group std (0 for singletons)."""
    idx = idx.to(x.device)
    count = torch.zeros(n_groups, dtype=x.dtype, device=x.device).index_add_(0, idx, torch.ones_like(x))
    total = torch.zeros(n_groups, dtype=x.dtype, device=x.device).index_add_(0, idx, x)
    mean = total / count
    sq = torch.zeros(n_groups, dtype=x.dtype, device=x.device).index_add_(0, idx, (x - mean[idx]) ** 2)
    # Unbiased (n - 1) like GRPO's reference code; a singleton group has no spread -> std 0.
    std = torch.where(count > 1, (sq / (count - 1).clamp(min=1.0)).sqrt(), torch.zeros_like(sq))
    return count[idx], total[idx], mean[idx], std[idx]


def _group_normalize(x: torch.Tensor, idx: torch.Tensor, n_groups: int, std_normalize: bool, eps: float):
    count, _, mean, std = _group_stats(x, idx, n_groups)
    centred = x - mean
    if std_normalize:
        centred = centred / (std + eps)
    # A singleton group has no baseline to compare with: its advantage is 0, never NaN.
    return torch.where(count > 1, centred, torch.zeros_like(centred))


def _check_1d(name: str, x: torch.Tensor, n: int | None = None) -> None:
    if x.dim() != 1:
        raise InvalidArgument(f"{name}: expected a 1-D tensor, got shape {tuple(x.shape)}")
    if n is not None and x.shape[0] != n:
        raise InvalidArgument(f"{name}: expected {n} entries, got {x.shape[0]}")


def _group_len_check(name: str, group_ids: GroupIds, n: int) -> None:
    if len(group_ids) != n:
        raise InvalidArgument(f"{name}: expected {n} ids (one per element), got {len(group_ids)}")


def grpo_advantages(
    scores: torch.Tensor, group_ids: GroupIds, std_normalize: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """GRPO: each trajectory's score normalised within its group (episodes of one task seed).

    ``A_i = (s_i - mean_g(s)) / (std_g(s) + eps)`` with the unbiased std of group ``g``
    (``std_normalize=False`` gives Dr.GRPO's ``s_i - mean_g``). Groups may have different sizes;
    a singleton group gets 0. The score of a trajectory is the sum of its step rewards; the
    trainer broadcasts ``A_i`` to all its steps (:func:`broadcast_to_steps`). GSPO uses the same
    trajectory advantage with a step/sequence-level ratio (see ``steppo.losses``).

    Args:
        scores: ``[N]`` trajectory scores.
        group_ids: ``[N]`` group of each trajectory (tensor or list of hashables).
        std_normalize: divide by the group std.
        eps: added to the std.

    Example:
        >>> import torch
        >>> # group 0: scores 1, 0 -> mean 0.5, std sqrt(0.5) = 0.7071 -> +-0.7071; group 1 singleton -> 0
        >>> [round(a, 4) for a in grpo_advantages(torch.tensor([1.0, 0.0, 5.0]), [0, 0, 1]).tolist()]
        [0.7071, -0.7071, 0.0]
    """
    s = _as_float(scores, "scores")
    _check_1d("scores", s)
    _group_len_check("group_ids", group_ids, s.shape[0])
    idx, g = group_index(group_ids)
    return _group_normalize(s, idx, g, std_normalize, eps)


def rloo_advantages(scores: torch.Tensor, group_ids: GroupIds) -> torch.Tensor:
    """RLOO: each score minus the mean score of the OTHER members of its group.

    ``A_i = s_i - (sum_g(s) - s_i) / (n_g - 1)``, which equals ``n_g / (n_g - 1) * (s_i - mean_g)``.
    A singleton group has no other member: its advantage is 0.

    Example:
        >>> import torch
        >>> # group of 3 with scores 1, 0, 0: A_1 = 1 - (0 + 0) / 2 = 1; A_2 = 0 - (1 + 0) / 2 = -0.5
        >>> rloo_advantages(torch.tensor([1.0, 0.0, 0.0]), [7, 7, 7]).tolist()
        [1.0, -0.5, -0.5]
    """
    s = _as_float(scores, "scores")
    _check_1d("scores", s)
    _group_len_check("group_ids", group_ids, s.shape[0])
    idx, g = group_index(group_ids)
    count, total, _, _ = _group_stats(s, idx, g)
    others = (total - s) / (count - 1).clamp(min=1.0)
    return torch.where(count > 1, s - others, torch.zeros_like(s))


def reinforce_pp_advantages(returns: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """REINFORCE++: returns (reward-to-go) whitened over the whole batch, no critic.

    ``A = (G - mean(G)) / (std(G) + eps)`` over the real entries (steps or tokens) of the batch,
    i.e. :func:`masked_normalize`; compute ``G`` with :func:`discounted_returns`.

    Example:
        >>> import torch
        >>> G = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
        >>> reinforce_pp_advantages(G, torch.ones(2, 2)).tolist()
        [[1.0, 1.0], [-1.0, -1.0]]
    """
    return masked_normalize(returns, mask, eps=eps)


def broadcast_to_steps(traj_values: torch.Tensor, step_traj_index: torch.Tensor) -> torch.Tensor:
    """Give each step the value of its trajectory: ``out[j] = traj_values[step_traj_index[j]]``.

    Example:
        >>> import torch
        >>> broadcast_to_steps(torch.tensor([0.5, -1.0]), torch.tensor([0, 0, 1])).tolist()
        [0.5, 0.5, -1.0]
    """
    v = _as_float(traj_values, "traj_values")
    idx = torch.as_tensor(step_traj_index, dtype=torch.long, device=v.device)
    if idx.numel() and (idx.min() < 0 or idx.max() >= v.shape[0]):
        raise InvalidArgument(
            f"step_traj_index: expected indices in [0, {v.shape[0] - 1}], got range "
            f"[{int(idx.min())}, {int(idx.max())}]"
        )
    return v[idx]


def gigpo_advantages(
    traj_scores: torch.Tensor,
    traj_group_ids: GroupIds,
    step_returns: torch.Tensor,
    step_anchor_ids: GroupIds,
    step_traj_index: torch.Tensor,
    step_weight: float = 1.0,
    std_normalize: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """GiGPO: episode-level group advantage plus an anchor-state step advantage.

    * Episode level: ``A^E_i = grpo(traj_scores)_i`` within each group of trajectories.
    * Step level: steps whose observation is identical ("anchor state") AND whose trajectories
      share a group are compared; ``A^S_j = (G_j - mean_a(G)) / (std_a(G) + eps)`` where ``G_j``
      is the step's discounted return and ``a`` its anchor group (0 for a singleton anchor).
    * ``A_j = A^E_{traj(j)} + step_weight * A^S_j``.

    Args:
        traj_scores: ``[N]`` score of each trajectory.
        traj_group_ids: ``[N]`` group (task seed) of each trajectory.
        step_returns: ``[M]`` discounted return from each step (:func:`discounted_returns`).
        step_anchor_ids: ``[M]`` id of each step's observation (e.g. a hash of the prompt text or
            the observation string itself); combined with the trajectory's group internally.
        step_traj_index: ``[M]`` index into the ``N`` trajectories of each step.
        step_weight: weight ``omega`` of the step-level term.
        std_normalize: divide both terms by their group std.
        eps: added to the stds.

    Returns:
        ``[M]`` advantage of each step.

    Example:
        >>> import torch
        >>> # two episodes of one task: scores 1 and 0 -> A^E = +-0.7071 (see grpo_advantages).
        >>> # Their first steps share the start observation "s0" with returns 1 and 0 -> A^S = +-0.7071;
        >>> # the second steps ("x", "y") are singleton anchors -> A^S = 0.
        >>> a = gigpo_advantages(torch.tensor([1.0, 0.0]), [0, 0], torch.tensor([1.0, 1.0, 0.0, 0.0]),
        ...                      ["s0", "x", "s0", "y"], torch.tensor([0, 0, 1, 1]))
        >>> [round(v, 4) for v in a.tolist()]
        [1.4142, 0.7071, -1.4142, -0.7071]
    """
    scores = _as_float(traj_scores, "traj_scores")
    _check_1d("traj_scores", scores)
    _group_len_check("traj_group_ids", traj_group_ids, scores.shape[0])
    G = _as_float(step_returns, "step_returns").to(device=scores.device, dtype=scores.dtype)
    _check_1d("step_returns", G)
    _group_len_check("step_anchor_ids", step_anchor_ids, G.shape[0])
    tidx = torch.as_tensor(step_traj_index, dtype=torch.long, device=scores.device)
    _check_1d("step_traj_index", tidx, G.shape[0])

    episode = grpo_advantages(scores, traj_group_ids, std_normalize=std_normalize, eps=eps)
    per_step_episode = broadcast_to_steps(episode, tidx)

    groups = _as_list(traj_group_ids)
    anchors = _as_list(step_anchor_ids)
    # The same observation in two different tasks is not the same state: key on (group, anchor).
    keys = [(groups[t], a) for t, a in zip(tidx.tolist(), anchors)]
    aidx, n_anchor = group_index(keys)
    step = _group_normalize(G, aidx, n_anchor, std_normalize, eps)
    return per_step_episode + step_weight * step


def _as_list(ids: GroupIds) -> list[Hashable]:
    return ids.detach().cpu().tolist() if isinstance(ids, torch.Tensor) else list(ids)


def place_step_rewards(
    step_rewards: torch.Tensor,
    step_mask: torch.Tensor,
    tokens_per_step: torch.Tensor,
    length: int | None = None,
) -> torch.Tensor:
    """Lay out step rewards on the concatenated response tokens, for :func:`token_gae`.

    Row ``b`` of the result has the response tokens of trajectory ``b``'s steps back to back
    (``tokens_per_step[b, t]`` tokens for step ``t``) and step ``t``'s reward on its last token.

    Args:
        step_rewards: ``[B, T]`` reward of each step.
        step_mask: ``[B, T]`` 1 on real steps.
        tokens_per_step: ``[B, T]`` response length of each step (>= 1 on real steps).
        length: width ``L`` of the output (default: the longest trajectory).

    Example:
        >>> import torch
        >>> place_step_rewards(torch.tensor([[0.0, 1.0]]), torch.tensor([[1, 1]]),
        ...                    torch.tensor([[2, 3]])).tolist()
        [[0.0, 0.0, 0.0, 0.0, 1.0]]
    """
    r = _as_float(step_rewards, "step_rewards")
    _check_2d("step_rewards", r)
    m = _as_mask(step_mask, r, "step_mask")
    n = torch.as_tensor(tokens_per_step, dtype=torch.long, device=r.device)
    _check_same_shape("tokens_per_step", n, "step_rewards", r)
    n = torch.where(m, n, torch.zeros_like(n))
    if bool(((n < 1) & m).any()):
        raise InvalidArgument("tokens_per_step: every real step needs at least one response token, got 0")
    ends = n.cumsum(dim=1) - 1  # index of each step's last token within its row
    width = int(n.sum(dim=1).max()) if length is None else length
    if width < int(n.sum(dim=1).max()):
        raise InvalidArgument(f"length: expected at least {int(n.sum(dim=1).max())} tokens, got {width}")
    out = torch.zeros(r.shape[0], width, dtype=r.dtype, device=r.device)
    rows, cols = torch.nonzero(m, as_tuple=True)
    out[rows, ends[rows, cols]] = r[rows, cols]
    return out
