"""Policy, value and KL losses for step-level and token-level PPO-style updates.

Shapes: ``N`` steps (one row per step record, i.e. per model response), ``L`` tokens of the
longest response in the batch; ``response_mask[N, L]`` is 1 on the response tokens the step
generated and 0 on padding. Every loss averages over the tokens of a step first and then over
the steps (a long response does not weigh more than a short one), and padding never receives
gradient, whatever values it holds.

=====================  ===============================================================
``step_policy_loss``   StepPO: one ratio per step (geometric mean of token ratios)
``sequence_policy_loss`` GSPO: one ratio per sequence made of several step rows (a trajectory)
``token_policy_loss``  token-PPO: one ratio per token
``value_loss``         clipped critic loss, per step ``[N]`` or per token ``[N, L]``
``kl_penalty``         k3 estimate of KL(pi_theta || pi_ref)
=====================  ===============================================================

Each policy/value loss returns ``(loss, stats)``: ``loss`` a scalar tensor to backpropagate,
``stats`` a ``dict[str, float]`` of diagnostics (clip fractions, approximate KL to the
behaviour policy, ratio statistics) for logging.

Example:
    >>> import torch
    >>> lp = torch.zeros(1, 2, requires_grad=True)
    >>> loss, stats = step_policy_loss(lp, torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([1.0]))
    >>> loss.item(), stats["ratio_mean"]
    (-1.0, 1.0)
"""

from __future__ import annotations

import math

from typing import Any

import torch

from stepgym.errors import InvalidArgument

__all__ = [
    "step_policy_loss",
    "sequence_policy_loss",
    "token_policy_loss",
    "value_loss",
    "kl_penalty",
    "GSPO_CLIP_LOW",
    "GSPO_CLIP_HIGH",
]

#: The tiny clips the GSPO / sequence-level runs of the StepPO reference used.
GSPO_CLIP_LOW = 3e-4
GSPO_CLIP_HIGH = 4e-4

# exp() of a log-ratio above this overflows float32 / is meaningless; the clamp only touches
# the (detached) value, never the gradient path.
_MAX_LOG_RATIO = 20.0


def _check_token_tensors(logprobs: torch.Tensor, old_logprobs: torch.Tensor, response_mask: Any) -> torch.Tensor:
    if not isinstance(logprobs, torch.Tensor) or logprobs.dim() != 2:
        shape = tuple(logprobs.shape) if isinstance(logprobs, torch.Tensor) else type(logprobs).__name__
        raise InvalidArgument(f"logprobs: expected a [N steps, L tokens] tensor, got {shape}")
    if old_logprobs.shape != logprobs.shape:
        raise InvalidArgument(
            f"old_logprobs: expected shape {tuple(logprobs.shape)} (the shape of logprobs), "
            f"got {tuple(old_logprobs.shape)}"
        )
    mask = torch.as_tensor(response_mask, device=logprobs.device)
    if mask.shape != logprobs.shape:
        raise InvalidArgument(
            f"response_mask: expected shape {tuple(logprobs.shape)} (the shape of logprobs), got {tuple(mask.shape)}"
        )
    return mask != 0


def _check_clips(clip_low: float, clip_high: float) -> None:
    if not 0.0 <= clip_low < 1.0:
        raise InvalidArgument(f"clip_low: expected a value in [0, 1), got {clip_low!r}")
    if clip_high < 0.0:
        raise InvalidArgument(f"clip_high: expected a value >= 0, got {clip_high!r}")


def _step_mean(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over the tokens of each step, then over steps that have at least one token.

    Returns ``(scalar, per_step_means)``; ``x`` must already be 0 where ``mask`` is False.
    """
    n_tok = mask.sum(dim=-1)
    per_step = x.sum(dim=-1) / n_tok.clamp(min=1).to(x.dtype)
    real = n_tok > 0
    return per_step[real].sum() / real.sum().clamp(min=1).to(x.dtype), per_step


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    # bf16/fp16 log-probs are summed over hundreds of tokens: accumulate in float32 (float64 stays).
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def _zero_pad(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # torch.where (not x * mask): padding may hold -inf / NaN log-probs, and 0 * inf = NaN.
    return torch.where(mask, x, torch.zeros_like(x))


def _ppo_surrogate(ratio: torch.Tensor, adv: torch.Tensor, clip_low: float, clip_high: float):
    """Elementwise ``-min(r A, clip(r, 1 - lo, 1 + hi) A)`` and where the clipped term is active."""
    surr1 = ratio * adv
    surr2 = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    loss = -torch.minimum(surr1, surr2)
    r = ratio.detach()
    clipped_high = (r > 1.0 + clip_high) & (adv > 0)
    clipped_low = (r < 1.0 - clip_low) & (adv < 0)
    return loss, clipped_low, clipped_high


def step_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    advantages: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    token_guard: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped PPO surrogate with ONE importance ratio per step (StepPO; also GSPO).

    For step ``t`` with ``L_t`` response tokens and token log-ratios
    ``log w_i = log pi_theta(a_i) - log pi_old(a_i)``, the step ratio is their geometric mean::

        w_t = exp( (1 / L_t) * sum_i log w_i )
        loss_t = -min( w_t * A_t, clip(w_t, 1 - clip_low, 1 + clip_high) * A_t )

    It is implemented per token with ``r_i = exp(sg[log w_t] + logp_i - sg[logp_i])``: the value
    of every ``r_i`` is ``w_t`` (``sg`` = stop-gradient), and the gradient reaches each token's
    log-prob directly. Averaging ``loss`` over the step's tokens then gives exactly the gradient
    of the sequence-level objective, ``d loss_t / d logp_i = -A_t * w_t / L_t`` while unclipped.
    The loss is the mean over tokens within a step, then the mean over steps.

    GSPO takes the same ratio over a whole trajectory instead of one step: see
    :func:`sequence_policy_loss`.

    **Token guard** (``token_guard = g > 0``). The step clip bounds only the step's mean
    log-ratio, so inside a step with ``A_t < 0`` a single uncertain token (a name, a digit) can
    keep falling while the others barely move (docs/algorithm.md, "The token guard"). The
    guard stops the gradient of each token whose own ratio ``rho_i = exp(log w_i)`` has already
    left ``[1 - g, 1 + g]`` in the direction the advantage pushes it (``rho_i < 1 - g`` with
    ``A_t < 0``, ``rho_i > 1 + g`` with ``A_t > 0``), exactly where token-PPO's clip would stop it.
    The loss value, the step ratio and its clip are unchanged; while every token is inside the
    band the gradient is the paper's. ``g = 0`` is the reference StepPO.

    Args:
        logprobs: ``[N, L]`` log-probs of the response tokens under the current policy (with grad).
        old_logprobs: ``[N, L]`` log-probs recorded when the step was generated.
        response_mask: ``[N, L]`` 1 on response tokens, 0 on padding (no gradient goes there).
        advantages: ``[N]`` one advantage per step.
        clip_low: ``eps_low``; the ratio is clipped below at ``1 - clip_low``.
        clip_high: ``eps_high``; the ratio is clipped above at ``1 + clip_high``.
        token_guard: ``g``; 0 turns the guard off (see above).

    Returns:
        ``(loss, stats)``; stats keys: ``loss``, ``clip_frac`` (steps whose clipped term is
        active), ``token_guard_frac`` (tokens whose gradient the guard stopped), ``clip_frac_low``, ``clip_frac_high``, ``approx_kl`` (k3 estimate of
        KL(old || new) per token), ``ratio_mean``, ``ratio_min``, ``ratio_max`` (step ratios),
        ``token_log_ratio_min`` (the lowest single-token log-ratio), ``n_steps``, ``n_tokens``.

    Example:
        >>> import torch
        >>> # one step, 2 tokens, log-ratios 0.2 and 0.0 -> w = exp(0.1) = 1.1052 (no clip at 0.2)
        >>> lp = torch.tensor([[0.2, 0.0]], requires_grad=True)
        >>> loss, s = step_policy_loss(lp, torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([2.0]))
        >>> round(loss.item(), 4), round(s["ratio_mean"], 4)
        (-2.2103, 1.1052)
        >>> loss.backward(); [round(g, 4) for g in lp.grad[0].tolist()]  # -A * w / L = -1.1052
        [-1.1052, -1.1052]
        >>> # A < 0: the first token already fell to ratio e^-0.5 = 0.61 < 1 - 0.2; the guard stops it
        >>> lp = torch.tensor([[-0.5, 0.1]], requires_grad=True)
        >>> loss, s = step_policy_loss(lp, torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([-1.0]), token_guard=0.2)
        >>> loss.backward(); [round(g, 4) for g in lp.grad[0].tolist()], s["token_guard_frac"]
        ([0.0, 0.4094], 0.5)
    """
    mask = _check_token_tensors(logprobs, old_logprobs, response_mask)
    _check_clips(clip_low, clip_high)
    if not 0.0 <= token_guard < 1.0:
        raise InvalidArgument(f"token_guard: expected a value in [0, 1) (0 = off), got {token_guard!r}")
    adv = torch.as_tensor(advantages, dtype=_acc_dtype(logprobs), device=logprobs.device).detach()
    if adv.shape != logprobs.shape[:1]:
        raise InvalidArgument(
            f"advantages: expected one value per step, shape ({logprobs.shape[0]},), got {tuple(adv.shape)}"
        )
    lp = _zero_pad(logprobs.to(_acc_dtype(logprobs)), mask)
    old = _zero_pad(old_logprobs.detach().to(lp.dtype), mask)
    n_tok = mask.sum(dim=-1)
    log_ratio_tok = lp - old
    log_w = log_ratio_tok.detach().sum(dim=-1) / n_tok.clamp(min=1).to(lp.dtype)  # [N], no grad
    log_w = log_w.clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    # value w_t on every token, gradient w_t * d logp_i
    ratio_tok = torch.exp(log_w[:, None] + lp - lp.detach())
    loss_tok, _, _ = _ppo_surrogate(ratio_tok, adv[:, None].expand_as(lp), clip_low, clip_high)
    guarded = torch.zeros_like(mask)
    if token_guard > 0:
        lr_tok = log_ratio_tok.detach()
        guarded = mask & (((adv[:, None] < 0) & (lr_tok < math.log1p(-token_guard)))
                          | ((adv[:, None] > 0) & (lr_tok > math.log1p(token_guard))))
        loss_tok = torch.where(guarded, loss_tok.detach(), loss_tok)
    loss, _ = _step_mean(_zero_pad(loss_tok, mask), mask)

    real = n_tok > 0
    w = log_w.exp()[real]
    a = adv[real]
    _, cl_low, cl_high = _ppo_surrogate(w, a, clip_low, clip_high)
    stats = _ratio_stats(loss, w, cl_low, cl_high, log_ratio_tok.detach(), mask)
    stats["token_guard_frac"] = float(guarded.sum()) / max(float(mask.sum()), 1.0)
    return loss, stats


def sequence_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    advantages: torch.Tensor,
    seq_ids: torch.Tensor,
    clip_low: float = GSPO_CLIP_LOW,
    clip_high: float = GSPO_CLIP_HIGH,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GSPO: one importance ratio per SEQUENCE, where a sequence is several step rows.

    In a multi-step episode the model's "sequence" is every response token of the
    trajectory. Rows sharing a ``seq_ids`` value form one sequence ``y`` with ``|y|`` response
    tokens in all; its ratio is the geometric mean of all their token ratios::

        s = exp( (1 / |y|) * sum_{rows of y} sum_i log w_i )
        loss_y = -min( s * A_y, clip(s, 1 - clip_low, 1 + clip_high) * A_y )

    The loss is the mean over sequences (each weighs the same, however many steps or tokens
    it has). As in :func:`step_policy_loss`, the ratio is applied per token with value ``s``
    and a direct gradient to each token's log-prob, so ``d loss_y / d logp_i = -A_y s / |y|``
    while unclipped. With one row per sequence this is exactly :func:`step_policy_loss`.
    Every row of a sequence must be in the same call (the trainer batches whole trajectories).

    Args:
        logprobs: ``[N, L]`` log-probs of the response tokens under the current policy (with grad).
        old_logprobs: ``[N, L]`` log-probs recorded at generation.
        response_mask: ``[N, L]`` 1 on response tokens, 0 on padding.
        advantages: ``[N]`` the sequence's advantage on each of its rows (they must agree).
        seq_ids: ``[N]`` integer sequence (trajectory) id of each row.
        clip_low: ``eps_low`` (default: GSPO's 3e-4).
        clip_high: ``eps_high`` (default: GSPO's 4e-4).

    Returns:
        ``(loss, stats)`` with the keys of :func:`step_policy_loss`, ratio statistics taken over
        sequences, plus ``n_seqs``.

    Example:
        >>> import torch
        >>> # one trajectory of two steps: token log-ratios 0.3 | 0.0, 0.0 -> s = exp(0.3 / 3) = 1.1052
        >>> lp = torch.tensor([[0.3, 0.0], [0.0, 0.0]], requires_grad=True)
        >>> mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
        >>> loss, s = sequence_policy_loss(lp, torch.zeros(2, 2), mask, torch.tensor([1.0, 1.0]),
        ...                                torch.tensor([7, 7]), clip_low=0.2, clip_high=0.2)
        >>> round(loss.item(), 4), round(s["ratio_mean"], 4), s["n_seqs"]
        (-1.1052, 1.1052, 1.0)
        >>> loss.backward(); [round(g, 4) for g in (lp.grad * mask).flatten().tolist()]  # -s / 3
        [-0.3684, 0.0, -0.3684, -0.3684]
    """
    mask = _check_token_tensors(logprobs, old_logprobs, response_mask)
    _check_clips(clip_low, clip_high)
    N = logprobs.shape[0]
    adv = torch.as_tensor(advantages, dtype=_acc_dtype(logprobs), device=logprobs.device).detach()
    if adv.shape != (N,):
        raise InvalidArgument(f"advantages: expected one value per row, shape ({N},), got {tuple(adv.shape)}")
    sid = torch.as_tensor(seq_ids, device=logprobs.device)
    if sid.shape != (N,) or sid.is_floating_point():
        raise InvalidArgument(f"seq_ids: expected an integer tensor of shape ({N},), got {tuple(sid.shape)} {sid.dtype}")
    uniq, inv = torch.unique(sid, return_inverse=True)
    S = uniq.numel()
    adv_seq = torch.zeros(S, dtype=adv.dtype, device=adv.device).scatter_reduce_(0, inv, adv, "amax", include_self=False)
    adv_min = torch.zeros(S, dtype=adv.dtype, device=adv.device).scatter_reduce_(0, inv, adv, "amin", include_self=False)
    if not torch.allclose(adv_seq, adv_min, atol=1e-6):
        raise InvalidArgument("advantages: rows of the same sequence must share one advantage (GSPO)")
    lp = _zero_pad(logprobs.to(_acc_dtype(logprobs)), mask)
    old = _zero_pad(old_logprobs.detach().to(lp.dtype), mask)
    log_ratio_tok = lp - old
    n_row = mask.sum(dim=-1).to(lp.dtype)
    n_seq = torch.zeros(S, dtype=lp.dtype, device=lp.device).index_add_(0, inv, n_row)
    lr_seq = torch.zeros(S, dtype=lp.dtype, device=lp.device).index_add_(0, inv, log_ratio_tok.detach().sum(-1))
    log_s = (lr_seq / n_seq.clamp(min=1)).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    ratio_tok = torch.exp(log_s[inv][:, None] + lp - lp.detach())
    loss_tok, _, _ = _ppo_surrogate(ratio_tok, adv[:, None].expand_as(lp), clip_low, clip_high)
    loss_row = _zero_pad(loss_tok, mask).sum(-1)
    loss_seq = torch.zeros(S, dtype=lp.dtype, device=lp.device).index_add(0, inv, loss_row) / n_seq.clamp(min=1)
    real = n_seq > 0
    loss = loss_seq[real].sum() / real.sum().clamp(min=1).to(lp.dtype)

    w = log_s.exp()[real]
    _, cl_low, cl_high = _ppo_surrogate(w, adv_seq[real], clip_low, clip_high)
    stats = _ratio_stats(loss, w, cl_low, cl_high, log_ratio_tok.detach(), mask)
    stats["n_seqs"] = float(real.sum())
    return loss, stats


def token_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    advantages: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped PPO surrogate with one importance ratio per TOKEN (token-PPO).

    ``w_i = exp(logp_i - old_logp_i)``; ``loss_i = -min(w_i A_i, clip(w_i, 1 - lo, 1 + hi) A_i)``,
    averaged over the tokens of a step, then over steps (as :func:`step_policy_loss`, so the
    ``steppo_no_step_ratio`` ablation changes only the ratio).

    Args:
        logprobs: ``[N, L]`` current log-probs (with grad).
        old_logprobs: ``[N, L]`` behaviour log-probs.
        response_mask: ``[N, L]`` 1 on response tokens.
        advantages: ``[N, L]`` per-token advantages (token GAE), or ``[N]`` per-step advantages
            given to every token of the step (step GAE with a token ratio).
        clip_low: lower clip ``eps_low``.
        clip_high: upper clip ``eps_high``.

    Returns:
        ``(loss, stats)`` with the keys of :func:`step_policy_loss`; ratio and clip statistics
        are over tokens.

    Example:
        >>> import torch
        >>> # token ratios e^0.5 = 1.6487 (clipped to 1.2, A > 0: no gradient) and 1.0
        >>> lp = torch.tensor([[0.5, 0.0]], requires_grad=True)
        >>> loss, s = token_policy_loss(lp, torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([1.0]))
        >>> round(loss.item(), 4), s["clip_frac"]   # -(1.2 + 1.0) / 2
        (-1.1, 0.5)
        >>> loss.backward(); lp.grad.tolist()
        [[0.0, -0.5]]
    """
    mask = _check_token_tensors(logprobs, old_logprobs, response_mask)
    _check_clips(clip_low, clip_high)
    adv = torch.as_tensor(advantages, dtype=_acc_dtype(logprobs), device=logprobs.device).detach()
    if adv.shape == logprobs.shape[:1]:
        adv = adv[:, None].expand_as(logprobs)
    elif adv.shape != logprobs.shape:
        raise InvalidArgument(
            f"advantages: expected shape {tuple(logprobs.shape)} (per token) or ({logprobs.shape[0]},) "
            f"(per step), got {tuple(adv.shape)}"
        )
    adv = _zero_pad(adv, mask)
    lp = _zero_pad(logprobs.to(_acc_dtype(logprobs)), mask)
    old = _zero_pad(old_logprobs.detach().to(lp.dtype), mask)
    log_ratio = lp - old
    # clamp keeps exp finite; clamp's gradient is 1 inside the range, so normal tokens are unaffected
    ratio = torch.exp(log_ratio.clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO))
    loss_tok, cl_low, cl_high = _ppo_surrogate(ratio, adv, clip_low, clip_high)
    loss, _ = _step_mean(_zero_pad(loss_tok, mask), mask)
    stats = _ratio_stats(loss, ratio.detach()[mask], cl_low[mask], cl_high[mask], log_ratio.detach(), mask)
    return loss, stats


def _ratio_stats(loss, ratios, cl_low, cl_high, log_ratio_tok, mask) -> dict[str, float]:
    n = max(int(ratios.numel()), 1)
    # samples come from the old policy: KL(old || new) ~ (r - 1) - log r with r = new / old
    lr = log_ratio_tok.clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    kl = _zero_pad(torch.expm1(lr) - lr, mask)
    any_ratio = ratios.numel() > 0
    return {
        "loss": float(loss.detach()),
        "clip_frac": float((cl_low | cl_high).sum()) / n,
        "clip_frac_low": float(cl_low.sum()) / n,
        "clip_frac_high": float(cl_high.sum()) / n,
        "approx_kl": float(_step_mean(kl, mask)[0]),
        "ratio_mean": float(ratios.mean()) if any_ratio else 1.0,
        "ratio_min": float(ratios.min()) if any_ratio else 1.0,
        "ratio_max": float(ratios.max()) if any_ratio else 1.0,
        # how far the single most-moved token went (a step ratio bounds only the step's mean)
        "token_log_ratio_min": float(log_ratio_tok[mask].min()) if bool(mask.any()) else 0.0,
        "n_steps": float((mask.sum(dim=-1) > 0).sum()),
        "n_tokens": float(mask.sum()),
    }


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor | None = None,
    clip: float | None = 0.5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped critic loss ``0.5 * max((V - R)^2, (V_clip - R)^2)``.

    ``V_clip = V_old + clip(V - V_old, -clip, clip)`` keeps the critic near the values it had
    when the batch was collected (``clip=None`` disables clipping). Works per step (``[N]``
    values, StepPO: one value per step) and per token (``[N, L]``, token-PPO: averaged over the
    tokens of a step, then over steps).

    Args:
        values: ``[N]`` or ``[N, L]`` current critic outputs (with grad).
        old_values: same shape, critic outputs at collection time.
        returns: same shape, targets ``R = A + V_old`` from the GAE functions.
        mask: same shape, 1 on real entries (``None``: all real).
        clip: ``eps_v``, default 0.5.

    Returns:
        ``(loss, stats)``; stats keys ``loss``, ``clip_frac`` (entries where the clipped term is
        larger), ``value_mean``, ``return_mean``, ``explained_variance`` (1 - Var[R - V] / Var[R]; 0 when
        Var[R] < 1e-8).

    Example:
        >>> import torch
        >>> # V = 2, V_old = 0, R = 2: V_clip = 0.5, max((2-2)^2, (0.5-2)^2) = 2.25 -> 0.5 * 2.25
        >>> loss, s = value_loss(torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([2.0]))
        >>> loss.item(), s["clip_frac"]
        (1.125, 1.0)
    """
    if not isinstance(values, torch.Tensor) or values.dim() not in (1, 2):
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise InvalidArgument(f"values: expected a [N] (per step) or [N, L] (per token) tensor, got {shape}")
    for name, t in (("old_values", old_values), ("returns", returns)):
        shape = tuple(torch.as_tensor(t).shape)
        if shape != tuple(values.shape):
            raise InvalidArgument(f"{name}: expected shape {tuple(values.shape)} (the shape of values), got {shape}")
    if clip is not None and clip < 0:
        raise InvalidArgument(f"clip: expected a value >= 0 or None, got {clip!r}")
    values = values.to(_acc_dtype(values))
    m = torch.ones_like(values, dtype=torch.bool) if mask is None else torch.as_tensor(mask, device=values.device) != 0
    if m.shape != values.shape:
        raise InvalidArgument(f"mask: expected shape {tuple(values.shape)} (the shape of values), got {tuple(m.shape)}")
    v = _zero_pad(values, m)
    old = _zero_pad(torch.as_tensor(old_values, dtype=values.dtype, device=values.device).detach(), m)
    ret = _zero_pad(torch.as_tensor(returns, dtype=values.dtype, device=values.device).detach(), m)
    err = (v - ret) ** 2
    if clip is None:
        per = 0.5 * err
        clipped = torch.zeros_like(m)
    else:
        v_clip = old + torch.clamp(v - old, -clip, clip)
        err_clip = (v_clip - ret) ** 2
        per = 0.5 * torch.maximum(err, err_clip)
        clipped = (err_clip.detach() > err.detach()) & m
    per = _zero_pad(per, m)
    if values.dim() == 2:
        loss, _ = _step_mean(per, m)
    else:
        loss = per.sum() / m.sum().clamp(min=1).to(per.dtype)
    n = max(int(m.sum()), 1)
    rv, vv = ret[m], v.detach()[m]
    var_r = float(rv.var(unbiased=False)) if rv.numel() > 1 else 0.0
    # Undefined when the targets (nearly) do not vary, e.g. a minibatch of equal returns; report 0
    # rather than a huge negative number made of rounding noise.
    ev = float(1.0 - (rv - vv).var(unbiased=False) / var_r) if var_r > 1e-8 else 0.0
    stats = {
        "loss": float(loss.detach()),
        "clip_frac": float(clipped.sum()) / n,
        "value_mean": float(vv.mean()) if vv.numel() else 0.0,
        "return_mean": float(rv.mean()) if rv.numel() else 0.0,
        "explained_variance": ev,
    }
    return loss, stats


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Low-variance (k3) estimate of KL(pi_theta || pi_ref) on sampled tokens.

    Per token ``k3 = exp(d) - d - 1`` with ``d = log pi_ref - log pi_theta`` (always >= 0, unbiased
    for tokens sampled from pi_theta), averaged over the tokens of a step, then over steps. Add
    ``coef * kl_penalty(...)`` to the loss (coef 0.001 in the StepPO reference).

    Args:
        logprobs: ``[N, L]`` current log-probs (with grad).
        ref_logprobs: ``[N, L]`` log-probs of the reference policy.
        mask: ``[N, L]`` 1 on response tokens.

    Returns:
        A scalar tensor (with grad through ``logprobs``).

    Example:
        >>> import torch
        >>> # d = -0.5 on the real token: e^-0.5 + 0.5 - 1 = 0.1065; padding ignored
        >>> round(kl_penalty(torch.tensor([[0.5, 9.0]]), torch.zeros(1, 2), torch.tensor([[1, 0]])).item(), 4)
        0.1065
    """
    mask = _check_token_tensors(logprobs, ref_logprobs, mask)
    lp = logprobs.to(_acc_dtype(logprobs))
    d = _zero_pad(ref_logprobs.detach().to(lp.dtype), mask) - _zero_pad(lp, mask)
    d = d.clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    k3 = _zero_pad(torch.expm1(d) - d, mask)
    return _step_mean(k3, mask)[0]
