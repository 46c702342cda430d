"""The algorithm registry: each algorithm is an advantage estimator + a policy loss + a critic kind.

An :class:`Algorithm` names its parts; the parts are plain functions registered by name:

* an **advantage estimator** (:func:`register_advantage`) takes the iteration's
  :class:`StepBatch` (the step records laid out as tensors once) and the config, and returns
  :class:`Advantages`: one per step, one per response token, or both, plus the critic's
  targets when it has one;
* a **policy loss** (:func:`register_policy_loss`) takes :class:`PolicyLossInputs` (current and
  rollout log-probs of a micro-batch, its advantages, the clip range) and returns
  ``(loss, stats)``.

The built-ins below are registered with the same calls a user would make:

======================  ============  ==============  ======  ======
algo                    advantage     policy loss     critic  groups
======================  ============  ==============  ======  ======
steppo                  step_gae      step            step
ppo                     token_gae     token           token
steppo_no_step_gae      token_gae     step            token
steppo_no_step_ratio    step_gae      token           step
grpo                    grpo          token                   yes
rloo                    rloo          token                   yes
reinforce_pp            reinforce_pp  token
gspo                    grpo          sequence                yes
gigpo                   gigpo         token                   yes
======================  ============  ==============  ======  ======

StepPO itself is three things, all in this file: the ``steppo`` row, :func:`step_gae_advantages`
(which calls :func:`steppo.advantages.step_gae`) and the ``step`` loss (which calls
:func:`steppo.losses.step_policy_loss`).

A user algorithm lives in the user's module and runs from the CLI as
``stepgym train --algo mypkg.algos:my_algo`` (see :func:`get_algorithm`).

Example:
    >>> import torch
    >>> from steppo.algos import Advantages, Algorithm, get_algorithm, register_advantage, register_algorithm
    >>> @register_advantage("doc_mean_baseline")
    ... def mean_baseline(batch, cfg):
    ...     scores = batch.traj_scores()          # [B] summed rewards
    ...     return Advantages(step=batch.per_step(scores - scores.mean()))
    >>> algo = register_algorithm(Algorithm("doc_algo", advantage="doc_mean_baseline", policy_loss="token"))
    >>> get_algorithm("doc_algo") is algo, get_algorithm("steppo").critic
    (True, 'step')
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from steppo import advantages as A
from steppo import losses as L
from stepgym.core import StepRecord
from stepgym.errors import InvalidConfig
from stepgym.registration import import_user_module

__all__ = [
    "Algorithm",
    "Advantages",
    "StepBatch",
    "PolicyLossInputs",
    "AdvantageFn",
    "PolicyLossFn",
    "register_advantage",
    "register_policy_loss",
    "register_algorithm",
    "get_algorithm",
    "get_advantage",
    "get_policy_loss",
    "builtin_algorithms",
    "ALGORITHMS",
    "ADVANTAGE_ESTIMATORS",
    "POLICY_LOSSES",
]

CRITICS = ("none", "step", "token")


# ----------------------------------------------------------------------------- the batch layout


@dataclass
class StepBatch:
    """An iteration's step records as tensors: built once, read by every estimator.

    ``M`` steps (rows), ``L`` tokens of the longest response, ``B`` trajectories (in the order
    they first appear), ``T`` steps of the longest trajectory. ``traj[i]`` and ``pos[i]`` place
    step ``i`` in a ``[B, T]`` grid (:meth:`to_grid` / :meth:`from_grid`); its response tokens
    sit back to back with the other steps of its trajectory in ``[B, L_traj]`` token rows
    (:meth:`to_token_rows` / :meth:`from_token_rows`), the layout of token-level GAE.

    Example:
        >>> from stepgym.core import StepRecord
        >>> rec = lambda traj, t, r: StepRecord(prompt_ids=[1], response_ids=[2, 3][: t + 1],
        ...     logprobs=[-1.0] * (t + 1), reward=r, traj_id=traj, step_index=t, done=t == 1)
        >>> b = StepBatch.from_steps([rec(7, 0, 0.0), rec(7, 1, 1.0), rec(9, 0, 0.5)])
        >>> b.to_grid(b.rewards).tolist(), b.traj_scores().tolist()
        ([[0.0, 1.0], [0.5, 0.0]], [1.0, 0.5])
        >>> b.to_token_rows(b.mask).tolist()  # trajectory 7 has 1 + 2 response tokens
        [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]
    """

    steps: list[StepRecord]
    old_logprobs: torch.Tensor  # [M, L] rollout log-probs (0 on padding)
    mask: torch.Tensor  # [M, L] 1.0 on response tokens
    rewards: torch.Tensor  # [M]
    traj: torch.Tensor  # [M] trajectory index in [0, B)
    pos: torch.Tensor  # [M] position of the step in its trajectory
    group_ids: torch.Tensor  # [B] task group of each trajectory
    bootstrap: torch.Tensor  # [B] V(s_T+1) of truncated trajectories, 0 elsewhere
    step_values: torch.Tensor | None = None  # [M] V(s_t) (step critics)
    token_values: torch.Tensor | None = None  # [M, L] V before each response token (token critics)

    @classmethod
    def from_steps(cls, steps: Sequence[StepRecord], *, step_values: Any = None,
                   token_values: Sequence[Sequence[float]] | None = None,
                   bootstrap: dict[int, float] | None = None) -> StepBatch:
        """Lay out ``steps``; ``bootstrap`` maps traj_id -> V(s_T+1) for truncated episodes."""
        steps = list(steps)
        M = len(steps)
        L = max([1] + [len(s.response_ids) for s in steps])
        first_seen: dict[int, int] = {}
        for s in steps:
            first_seen.setdefault(s.traj_id, len(first_seen))
        traj = torch.tensor([first_seen[s.traj_id] for s in steps], dtype=torch.long)
        # position = rank of the step's step_index inside its trajectory
        order = sorted(range(M), key=lambda i: (int(traj[i]), steps[i].step_index))
        pos = torch.zeros(M, dtype=torch.long)
        for prev, i in zip([None] + order, order):
            pos[i] = 0 if prev is None or traj[prev] != traj[i] else pos[prev] + 1
        B = len(first_seen)
        last: dict[int, StepRecord] = {}
        group_ids = torch.zeros(B, dtype=torch.long)
        for i in order:
            last[int(traj[i])] = steps[i]
            group_ids[traj[i]] = steps[i].group_id
        boot = torch.tensor([float((bootstrap or {}).get(last[b].traj_id, 0.0)) if last[b].truncated else 0.0
                             for b in range(B)])
        return cls(
            steps=steps,
            old_logprobs=_pad_rows([s.logprobs for s in steps], L),
            mask=_pad_rows([[1.0] * len(s.response_ids) for s in steps], L),
            rewards=torch.tensor([float(s.reward) for s in steps]),
            traj=traj, pos=pos, group_ids=group_ids, bootstrap=boot,
            step_values=None if step_values is None else torch.as_tensor(step_values, dtype=torch.float32).clone(),
            token_values=None if token_values is None else _pad_rows(token_values, L),
        )

    @property
    def num_trajectories(self) -> int:
        return int(self.group_ids.shape[0])

    def step_mask(self) -> torch.Tensor:
        """``[B, T]`` True on real steps."""
        return self.to_grid(torch.ones(len(self.steps))).bool()

    def to_grid(self, x: torch.Tensor) -> torch.Tensor:
        """``[M]`` per-step values -> ``[B, T]`` (0 on padding)."""
        T = int(self.pos.max()) + 1 if len(self.steps) else 0
        out = torch.zeros((self.num_trajectories, T), dtype=torch.float32)
        out[self.traj, self.pos] = x.float()
        return out

    def from_grid(self, grid: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` -> ``[M]``: each step's entry."""
        return grid[self.traj, self.pos]

    def per_step(self, traj_values: torch.Tensor) -> torch.Tensor:
        """``[B]`` per-trajectory values -> ``[M]`` (each step gets its trajectory's)."""
        return A.broadcast_to_steps(traj_values, self.traj)

    def traj_scores(self) -> torch.Tensor:
        """``[B]`` sum of each trajectory's step rewards."""
        return self.to_grid(self.rewards).sum(dim=1)

    def _token_places(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows, columns (in ``[M, L]``) and columns in the token rows, of every response token."""
        lengths = self.mask.sum(dim=1)
        grid = self.to_grid(lengths)
        offsets = self.from_grid(grid.cumsum(dim=1) - grid).long()  # tokens of earlier steps
        rows, cols = torch.nonzero(self.mask, as_tuple=True)
        return rows, cols, offsets[rows] + cols

    def to_token_rows(self, x: torch.Tensor) -> torch.Tensor:
        """``[M, L]`` -> ``[B, L_traj]``: each trajectory's response tokens back to back."""
        rows, cols, dest = self._token_places()
        width = int(dest.max()) + 1 if dest.numel() else 1
        out = torch.zeros((self.num_trajectories, width), dtype=torch.float32)
        out[self.traj[rows], dest] = x[rows, cols].float()
        return out

    def from_token_rows(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L_traj]`` -> ``[M, L]`` (0 on padding)."""
        rows, cols, dest = self._token_places()
        out = torch.zeros_like(self.mask)
        out[rows, cols] = x[self.traj[rows], dest]
        return out

    def discounted_returns(self, gamma: float) -> torch.Tensor:
        """``[M]`` reward-to-go of each step over its trajectory's steps."""
        return self.from_grid(A.discounted_returns(self.to_grid(self.rewards), self.step_mask(), gamma=gamma))

    def require(self, name: str) -> torch.Tensor:
        value = getattr(self, name)
        if value is None:
            raise InvalidConfig("algo", name, f"an algorithm whose critic provides {name} (set Algorithm.critic)")
        return value


def _pad_rows(rows: Sequence[Sequence[float]], width: int) -> torch.Tensor:
    out = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, r in enumerate(rows):
        if len(r):
            out[i, : len(r)] = torch.tensor(list(r)[:width], dtype=torch.float32)
    return out


@dataclass
class Advantages:
    """What an estimator returns. Give ``step`` or ``token`` (or both); :meth:`complete` fills the other.

    ``step_returns`` / ``token_returns`` are the critic's targets (step or token critics).
    """

    step: torch.Tensor | None = None  # [M]
    token: torch.Tensor | None = None  # [M, L]
    step_returns: torch.Tensor | None = None  # [M]
    token_returns: torch.Tensor | None = None  # [M, L]

    def complete(self, mask: torch.Tensor) -> Advantages:
        """Both views: a step's advantage on each of its tokens; a step's = the mean of its tokens'."""
        if self.step is None and self.token is None:
            raise InvalidConfig("algo", "advantages", "an estimator that returns Advantages(step=...) or (token=...)")
        if self.token is None:
            self.token = self.step.float()[:, None] * mask
        if self.step is None:
            self.step = (self.token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        return self


@dataclass
class PolicyLossInputs:
    """One micro-batch as a policy loss sees it (``m`` rows, ``l`` tokens)."""

    logprobs: torch.Tensor  # [m, l] current policy, with grad
    old_logprobs: torch.Tensor  # [m, l] at rollout time
    mask: torch.Tensor  # [m, l]
    step_advantages: torch.Tensor  # [m]
    token_advantages: torch.Tensor  # [m, l]
    traj_ids: torch.Tensor  # [m]
    clip_low: float
    clip_high: float
    #: StepPO's per-token guard inside a step (0 = off; see steppo.losses.step_policy_loss)
    token_guard: float = 0.0


AdvantageFn = Callable[[StepBatch, Any], Advantages]
PolicyLossFn = Callable[[PolicyLossInputs], "tuple[torch.Tensor, dict[str, float]]"]


@dataclass(frozen=True)
class Algorithm:
    """One training algorithm.

    Args:
        name: the ``--algo`` name.
        advantage: name of a registered advantage estimator.
        policy_loss: name of a registered policy loss.
        critic: ``"none"``, ``"step"`` (one value per step, read at the last prompt token) or
            ``"token"`` (one value per response token). A critic adds the clipped value loss.
        groups: samples several episodes per task seed (``group_size`` defaults to 8).
        clip: default ``(eps_low, eps_high)`` of the ratio clip (``--clip-low/--clip-high`` override).
        token_guard: default of ``--token-guard``, the per-token guard of step-ratio losses
            (0 = off; see :func:`steppo.losses.step_policy_loss`).
        per_trajectory: the loss averages over trajectories (GSPO): minibatches keep whole
            trajectories and weigh micro-batches by their share of trajectories.
        summary: one line for ``--help`` and docs.
    """

    name: str
    advantage: str
    policy_loss: str
    critic: str = "none"
    groups: bool = False
    clip: tuple[float, float] = (0.2, 0.2)
    token_guard: float = 0.0
    per_trajectory: bool = False
    summary: str = ""

    def __post_init__(self) -> None:
        if self.critic not in CRITICS:
            raise InvalidConfig("critic", self.critic, "one of " + ", ".join(repr(c) for c in CRITICS))

    @property
    def default_group_size(self) -> int:
        return 8 if self.groups else 1


# ----------------------------------------------------------------------------- registries

ADVANTAGE_ESTIMATORS: dict[str, AdvantageFn] = {}
POLICY_LOSSES: dict[str, PolicyLossFn] = {}
ALGORITHMS: dict[str, Algorithm] = {}


def register_advantage(name: str) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator: register an advantage estimator ``fn(batch: StepBatch, cfg) -> Advantages``."""
    def deco(fn: AdvantageFn) -> AdvantageFn:
        ADVANTAGE_ESTIMATORS[name] = fn
        return fn
    return deco


def register_policy_loss(name: str) -> Callable[[PolicyLossFn], PolicyLossFn]:
    """Decorator: register a policy loss ``fn(x: PolicyLossInputs) -> (loss, stats)``."""
    def deco(fn: PolicyLossFn) -> PolicyLossFn:
        POLICY_LOSSES[name] = fn
        return fn
    return deco


def register_algorithm(algo: Algorithm) -> Algorithm:
    """Register ``algo`` under ``algo.name`` (its parts must be registered already); returns it."""
    for kind, name, table in (("advantage", algo.advantage, ADVANTAGE_ESTIMATORS),
                              ("policy_loss", algo.policy_loss, POLICY_LOSSES)):
        if name not in table:
            raise InvalidConfig(kind, name, "a registered name: one of " + ", ".join(sorted(table))
                                + f" (register it with register_{'advantage' if kind == 'advantage' else 'policy_loss'})")
    ALGORITHMS[algo.name] = algo
    return algo


def get_algorithm(name: str) -> Algorithm:
    """The algorithm ``name``: a registered name, or ``module:attr`` (imported on first use).

    ``module:attr`` imports ``module`` (which may register algorithms as it loads) and takes
    its attribute ``attr`` if that is an :class:`Algorithm`, else the registered ``attr``.
    """
    if name in ALGORITHMS:
        return ALGORITHMS[name]
    module, sep, attr = name.partition(":")
    if sep and module and attr:
        try:
            import_user_module(module)  # like env ids: the working directory counts too
            mod = importlib.import_module(module)
        except ImportError as exc:
            raise InvalidConfig("algo", name, f"'module:name' with an importable module ({exc})") from None
        obj = getattr(mod, attr, None)
        if isinstance(obj, Algorithm):
            return ALGORITHMS.setdefault(obj.name, obj)
        if attr in ALGORITHMS:
            return ALGORITHMS[attr]
        raise InvalidConfig("algo", name, f"an Algorithm named {attr!r} in {module} "
                            "(define it with steppo.algos.register_algorithm(Algorithm(...)))")
    import difflib

    close = difflib.get_close_matches(name, list(ALGORITHMS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise InvalidConfig("algo", name, "one of " + ", ".join(repr(a) for a in ALGORITHMS)
                        + f", or 'module:name' for your own{hint}")


def get_advantage(name: str) -> AdvantageFn:
    return ADVANTAGE_ESTIMATORS[name]


def get_policy_loss(name: str) -> PolicyLossFn:
    return POLICY_LOSSES[name]


# ----------------------------------------------------------------------------- advantage estimators


@register_advantage("step_gae")
def step_gae_advantages(batch: StepBatch, cfg: Any) -> Advantages:
    """StepPO: GAE over each trajectory's steps, normalised over the batch's step rows."""
    adv, ret = A.step_gae(batch.to_grid(batch.rewards), batch.to_grid(batch.require("step_values")),
                          batch.step_mask(), gamma=cfg.gamma, lam=cfg.lam, bootstrap=batch.bootstrap)
    step_adv = batch.from_grid(adv)
    if cfg.normalize_advantages and A.batch_count(len(batch.steps)) > 1:  # global count when distributed
        step_adv = A.masked_normalize(step_adv)
    return Advantages(step=step_adv, step_returns=batch.from_grid(ret))


@register_advantage("token_gae")
def token_gae_advantages(batch: StepBatch, cfg: Any) -> Advantages:
    """Token-PPO: GAE over response tokens chained across steps, normalised over token rows."""
    lengths = batch.to_grid(batch.mask.sum(dim=1)).long()
    rewards = A.place_step_rewards(batch.to_grid(batch.rewards), batch.step_mask(), lengths,
                                   length=batch.to_token_rows(batch.mask).shape[1])
    values = batch.to_token_rows(batch.require("token_values"))
    adv, ret = A.token_gae(rewards, values, batch.to_token_rows(batch.mask), gamma=cfg.gamma, lam=cfg.lam,
                           bootstrap=batch.bootstrap)
    token_adv = batch.from_token_rows(adv)
    if cfg.normalize_advantages:
        token_adv = A.masked_normalize(token_adv, batch.mask) * batch.mask
    return Advantages(token=token_adv, token_returns=batch.from_token_rows(ret))


@register_advantage("grpo")
def grpo_advantages(batch: StepBatch, cfg: Any) -> Advantages:
    """GRPO / GSPO: the trajectory's score normalised within its group, on every step."""
    adv = A.grpo_advantages(batch.traj_scores(), batch.group_ids, std_normalize=cfg.std_normalize)
    return Advantages(step=batch.per_step(adv))


@register_advantage("rloo")
def rloo_advantages(batch: StepBatch, cfg: Any) -> Advantages:
    """RLOO: the score minus the mean of the other trajectories of its group."""
    return Advantages(step=batch.per_step(A.rloo_advantages(batch.traj_scores(), batch.group_ids)))


@register_advantage("reinforce_pp")
def reinforce_pp_advantages(batch: StepBatch, cfg: Any) -> Advantages:
    """REINFORCE++: each step's reward-to-go, normalised over the batch's steps."""
    grid = A.discounted_returns(batch.to_grid(batch.rewards), batch.step_mask(), gamma=cfg.gamma)
    return Advantages(step=batch.from_grid(A.reinforce_pp_advantages(grid, batch.step_mask())))


@register_advantage("gigpo")
def gigpo_advantages(batch: StepBatch, cfg: Any) -> Advantages:
    """GiGPO: the episode's group advantage + the step's advantage among steps of the same state."""
    anchors = [s.info.get("observation", s.prompt_text) for s in batch.steps]
    adv = A.gigpo_advantages(batch.traj_scores(), batch.group_ids, batch.discounted_returns(cfg.gamma), anchors,
                             batch.traj, step_weight=cfg.gigpo_step_weight)
    return Advantages(step=adv.float())


# ----------------------------------------------------------------------------- policy losses


@register_policy_loss("step")
def step_loss(x: PolicyLossInputs) -> tuple[torch.Tensor, dict[str, float]]:
    """StepPO: one ratio per step (the geometric mean of its token ratios), clipped per step."""
    return L.step_policy_loss(x.logprobs, x.old_logprobs, x.mask, x.step_advantages,
                              clip_low=x.clip_low, clip_high=x.clip_high, token_guard=x.token_guard)


@register_policy_loss("token")
def token_loss(x: PolicyLossInputs) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO: one ratio per token, clipped per token."""
    return L.token_policy_loss(x.logprobs, x.old_logprobs, x.mask, x.token_advantages,
                               clip_low=x.clip_low, clip_high=x.clip_high)


@register_policy_loss("sequence")
def sequence_loss(x: PolicyLossInputs) -> tuple[torch.Tensor, dict[str, float]]:
    """GSPO: one ratio per trajectory (all of its steps' tokens)."""
    return L.sequence_policy_loss(x.logprobs, x.old_logprobs, x.mask, x.step_advantages, x.traj_ids,
                                  clip_low=x.clip_low, clip_high=x.clip_high)


# ----------------------------------------------------------------------------- built-in algorithms

#: StepPO's token guard unless ``--token-guard`` says otherwise (0 = the paper's StepPO);
#: docs/algorithm.md, "The token guard", has the measurements behind the choice.
DEFAULT_TOKEN_GUARD = 0.1

_BUILTINS = (
    Algorithm("steppo", "step_gae", "step", critic="step", token_guard=DEFAULT_TOKEN_GUARD,
              summary="StepPO: step GAE + step ratio, token guard 0.1 (--token-guard 0: the paper's)"),
    Algorithm("ppo", "token_gae", "token", critic="token", summary="token-PPO: token GAE + token ratio"),
    Algorithm("steppo_no_step_gae", "token_gae", "step", critic="token", token_guard=DEFAULT_TOKEN_GUARD,
              summary="ablation: token GAE (mean per step) + step ratio (token guard 0.1)"),
    Algorithm("steppo_no_step_ratio", "step_gae", "token", critic="step", summary="ablation: step GAE + token ratio"),
    Algorithm("grpo", "grpo", "token", groups=True, summary="GRPO: group-normalised trajectory score"),
    Algorithm("rloo", "rloo", "token", groups=True, summary="RLOO: leave-one-out group baseline"),
    Algorithm("reinforce_pp", "reinforce_pp", "token", summary="REINFORCE++: batch-normalised returns"),
    Algorithm("gspo", "grpo", "sequence", groups=True, clip=(L.GSPO_CLIP_LOW, L.GSPO_CLIP_HIGH), per_trajectory=True,
              summary="GSPO: group advantage + trajectory-level ratio"),
    Algorithm("gigpo", "gigpo", "token", groups=True, summary="GiGPO: episode + anchor-state step advantage"),
)
for _algo in _BUILTINS:
    register_algorithm(_algo)


def builtin_algorithms() -> tuple[str, ...]:
    """Names of the built-in algorithms, in table order."""
    return tuple(a.name for a in _BUILTINS)
