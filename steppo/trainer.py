"""The StepPO trainer and its baselines, all on the same rollout and update code.

One iteration = collect ``episodes_per_iteration`` episodes (:mod:`steppo.rollout`), turn
their step records into advantages (:mod:`steppo.advantages`), then ``epochs`` passes of
minibatched clipped-surrogate updates (:mod:`steppo.losses`) with AdamW and gradient
clipping. Algorithms differ only in two choices:

=====================  ==================  =================  ======
algo                   advantage           ratio              critic
=====================  ==================  =================  ======
steppo                 step GAE            step (geo. mean)   step
ppo                    token GAE           token              token
steppo_no_step_gae     token GAE (mean)    step               token
steppo_no_step_ratio   step GAE            token              step
grpo / rloo            group baseline      token              none
gspo                   group baseline      trajectory         none
reinforce_pp           batch-norm returns  token              none
gigpo                  episode + anchor    token              none
=====================  ==================  =================  ======

Runs write ``OUT/metrics.jsonl`` (one row per iteration, stable names), TensorBoard
events in ``OUT/tb``, atomic checkpoints in ``OUT/checkpoints`` and the latest policy in
``OUT/policy`` (``AutoModelForCausalLM.from_pretrained``-loadable).

Example:
    >>> from steppo.config import StepPOConfig
    >>> from steppo.trainer import Trainer
    >>> cfg = StepPOConfig(model="tiny", iterations=1, episodes_per_iteration=2, num_envs=2,
    ...                    max_new_tokens=8, eval_episodes=2, out="/tmp/steppo-doctest", overwrite=True,
    ...                    progress=False, tensorboard=False)
    >>> summary = Trainer(cfg).train()
    >>> summary["iterations_done"]
    1
"""

from __future__ import annotations

import glob
import json
import math
import os
import random
import shutil
import signal
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stepgym.errors import InvalidArgument, InvalidConfig, StepgymError
from steppo.config import TrainConfig, config_to_dict
from steppo.policy import Policy, Sampler, adamw, count_parameters, pack_steps, plan_micro_batches, set_threads
from steppo.rollout import (
    ChatPromptBuilder,
    InProcessCollector,
    LocalGenerator,
    RolloutBatch,
    SamplingParams,
    make_env_fn,
)

__all__ = ["Trainer", "StepTensors", "compute_advantages", "resolve_init", "build_policy", "ALGO_SPEC"]

#: algo -> (advantage kind, ratio kind, critic kind)
ALGO_SPEC: dict[str, tuple[str, str, str]] = {
    "steppo": ("step_gae", "step", "step"),
    "ppo": ("token_gae", "token", "token"),
    "steppo_no_step_gae": ("token_gae", "step", "token"),
    "steppo_no_step_ratio": ("step_gae", "token", "step"),
    "grpo": ("grpo", "token", "none"),
    "rloo": ("rloo", "token", "none"),
    "reinforce_pp": ("reinforce_pp", "token", "none"),
    "gspo": ("grpo", "sequence", "none"),
    "gigpo": ("gigpo", "token", "none"),
}

#: metric keys whose values depend on wall-clock time (excluded from resume-equality checks)
TIME_KEYS = ("perf/", "time/")


class _Interrupted(Exception):
    """Ctrl-C during a rollout: nothing of the current iteration is kept."""


def resolve_init(path: str) -> str:
    """The policy folder inside a ``stepgym sft``/``train`` output dir (or ``path`` itself).

    A path that does not exist is passed on as a Hugging Face model id.
    """
    if not path or not os.path.exists(path):
        return path
    if os.path.isdir(os.path.join(path, "policy")):
        return os.path.join(path, "policy")
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "config.json")):
        raise InvalidConfig("init", path, "a `stepgym sft`/`stepgym train` output dir or a saved model folder "
                            "(it has no policy/ and no config.json)")
    return path


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidConfig("device", name, "'cpu' or 'auto' (no CUDA device is available here)")
    return dev


def build_policy(cfg: Any, critic: str, *, for_reference: bool = False) -> Policy:
    """Load the model of ``cfg`` (``cfg.init`` when set) and wrap it as a :class:`Policy`."""
    from steppo.models import load_model

    spec = resolve_init(cfg.init) if cfg.init else cfg.model
    lm, tok = load_model(spec, seed=cfg.seed, dtype=getattr(torch, cfg.dtype))
    if cfg.lora_r and not for_reference:
        from steppo.models import apply_lora

        lm = apply_lora(lm, r=cfg.lora_r, alpha=cfg.lora_alpha)
    pol = Policy(lm, tok, critic="none" if for_reference else critic, temperature=getattr(cfg, "temperature", 1.0))
    if cfg.init and not for_reference and critic != "none":
        pol.load_critic_from(spec)
    if for_reference:
        for p in pol.parameters():
            p.requires_grad_(False)
        pol.eval()
    elif cfg.train_layers:
        pol.freeze_all_but_last(cfg.train_layers)
    return pol.to(resolve_device(cfg.device))


@dataclass
class StepTensors:
    """Per-step training targets, padded to the longest response of the batch."""

    old_logprobs: torch.Tensor  # [M, L]
    mask: torch.Tensor  # [M, L]
    step_adv: torch.Tensor | None = None  # [M]
    token_adv: torch.Tensor | None = None  # [M, L]
    step_returns: torch.Tensor | None = None  # [M]
    step_old_values: torch.Tensor | None = None  # [M]
    token_returns: torch.Tensor | None = None  # [M, L]
    token_old_values: torch.Tensor | None = None  # [M, L]
    ref_logprobs: torch.Tensor | None = None  # [M, L]


def _pad_rows(rows: list[list[float]], L: int) -> torch.Tensor:
    out = torch.zeros((len(rows), L), dtype=torch.float32)
    for i, r in enumerate(rows):
        if r:
            out[i, : len(r)] = torch.tensor(r[:L], dtype=torch.float32)
    return out


def _trajectories(steps: list) -> list[list[int]]:
    """Step indices of each trajectory, ordered by step index (trajectories in first-seen order)."""
    by: dict[int, list[int]] = {}
    for i, s in enumerate(steps):
        by.setdefault(s.traj_id, []).append(i)
    return [sorted(v, key=lambda i: steps[i].step_index) for v in by.values()]


def _discounted_returns(rewards: list[float], gamma: float) -> list[float]:
    out, g = [0.0] * len(rewards), 0.0
    for t in range(len(rewards) - 1, -1, -1):
        g = rewards[t] + gamma * g
        out[t] = g
    return out


def compute_advantages(cfg: TrainConfig, steps: list, *, step_values: torch.Tensor | None = None,
                       token_values: list[list[float]] | None = None,
                       bootstrap: dict[int, float] | None = None) -> StepTensors:
    """Advantages and value targets of ``steps`` for ``cfg.algo`` (see the module table).

    Args:
        cfg: the training config (algo, gamma, lam, normalisation, group options).
        steps: the batch's :class:`~stepgym.core.StepRecord` list.
        step_values: ``[M]`` V(s_t) of each step (step critics).
        token_values: per-step lists of V before each response token (token critics).
        bootstrap: traj_id -> V(s_{T+1}) for truncated trajectories.
    """
    from steppo import advantages as A

    kind = ALGO_SPEC[cfg.algo][0]
    M = len(steps)
    L = max(1, max(len(s.response_ids) for s in steps))
    mask = _pad_rows([[1.0] * len(s.response_ids) for s in steps], L)
    st = StepTensors(old_logprobs=_pad_rows([s.logprobs for s in steps], L), mask=mask)
    trajs = _trajectories(steps)
    B, T = len(trajs), max(len(t) for t in trajs)
    gamma = float(cfg.gamma)
    lam = float(getattr(cfg, "lam", 1.0))
    bootstrap = bootstrap or {}
    normalize = bool(getattr(cfg, "normalize_advantages", True))

    if kind == "step_gae":
        if step_values is None:
            raise RuntimeError("internal error: step values missing for a step-level critic")
        R = torch.zeros((B, T))
        V = torch.zeros((B, T))
        mk = torch.zeros((B, T))
        boot = torch.zeros(B)
        for b, tr in enumerate(trajs):
            for t, i in enumerate(tr):
                R[b, t] = steps[i].reward
                V[b, t] = float(step_values[i])
                mk[b, t] = 1.0
            last = steps[tr[-1]]
            if last.truncated:
                boot[b] = float(bootstrap.get(last.traj_id, 0.0))
        adv, ret = A.step_gae(R, V, mk, gamma=gamma, lam=lam, bootstrap=boot)
        sa, sr = torch.zeros(M), torch.zeros(M)
        for b, tr in enumerate(trajs):
            for t, i in enumerate(tr):
                sa[i], sr[i] = adv[b, t], ret[b, t]
        if normalize and M > 1:
            sa = A.masked_normalize(sa, torch.ones(M))
        st.step_adv, st.step_returns = sa, sr
        st.step_old_values = torch.as_tensor(step_values, dtype=torch.float32).clone()
    elif kind == "token_gae":
        if token_values is None:
            raise RuntimeError("internal error: token values missing for a token-level critic")
        lens = [len(s.response_ids) for s in steps]
        Ltot = max(sum(lens[i] for i in tr) for tr in trajs)
        R = torch.zeros((B, Ltot))
        V = torch.zeros((B, Ltot))
        mk = torch.zeros((B, Ltot))
        boot = torch.zeros(B)
        for b, tr in enumerate(trajs):
            off = 0
            for i in tr:
                n = lens[i]
                if n:
                    V[b, off:off + n] = torch.tensor(token_values[i][:n], dtype=torch.float32)
                    R[b, off + n - 1] += steps[i].reward
                    mk[b, off:off + n] = 1.0
                off += n
            last = steps[tr[-1]]
            if last.truncated:
                boot[b] = float(bootstrap.get(last.traj_id, 0.0))
        adv, ret = A.token_gae(R, V, mk, gamma=gamma, lam=lam, bootstrap=boot)
        ta, tr_, tv = torch.zeros((M, L)), torch.zeros((M, L)), torch.zeros((M, L))
        for b, tr in enumerate(trajs):
            off = 0
            for i in tr:
                n = lens[i]
                ta[i, :n], tr_[i, :n], tv[i, :n] = adv[b, off:off + n], ret[b, off:off + n], V[b, off:off + n]
                off += n
        if normalize:
            ta = A.masked_normalize(ta, mask) * mask
        st.token_adv, st.token_returns, st.token_old_values = ta, tr_, tv
        if ALGO_SPEC[cfg.algo][1] == "step":
            # token GAE + step ratio: one advantage per step, the mean of its token advantages
            st.step_adv = (ta * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    else:
        scores = torch.tensor([sum(steps[i].reward for i in tr) for tr in trajs], dtype=torch.float32)
        gids = torch.tensor([steps[tr[0]].group_id for tr in trajs], dtype=torch.long)
        traj_of = torch.zeros(M, dtype=torch.long)
        for b, tr in enumerate(trajs):
            for i in tr:
                traj_of[i] = b
        if kind == "grpo":
            sa = A.grpo_advantages(scores, gids, std_normalize=bool(getattr(cfg, "std_normalize", True)))[traj_of]
        elif kind == "rloo":
            sa = A.rloo_advantages(scores, gids)[traj_of]
        elif kind == "reinforce_pp":
            rets = torch.zeros((B, T))
            mk = torch.zeros((B, T))
            for b, tr in enumerate(trajs):
                g = _discounted_returns([steps[i].reward for i in tr], gamma)
                rets[b, : len(tr)] = torch.tensor(g)
                mk[b, : len(tr)] = 1.0
            adv = A.reinforce_pp_advantages(rets, mk)
            sa = torch.zeros(M)
            for b, tr in enumerate(trajs):
                for t, i in enumerate(tr):
                    sa[i] = adv[b, t]
        elif kind == "gigpo":
            step_ret = torch.zeros(M)
            for tr in trajs:
                g = _discounted_returns([steps[i].reward for i in tr], gamma)
                for t, i in enumerate(tr):
                    step_ret[i] = g[t]
            anchors: dict[tuple[int, str], int] = {}
            anchor_ids = torch.tensor([
                anchors.setdefault((s.group_id, s.info.get("observation", s.prompt_text)), len(anchors)) for s in steps
            ], dtype=torch.long)
            sa = A.gigpo_advantages(scores, gids, step_ret, anchor_ids, traj_of,
                                    step_weight=float(getattr(cfg, "gigpo_step_weight", 1.0)))
        else:  # pragma: no cover - ALGO_SPEC is closed
            raise InvalidArgument(f"unknown advantage kind {kind}")
        st.step_adv = sa.float()
    if ALGO_SPEC[cfg.algo][1] == "token" and st.token_adv is None:
        st.token_adv = st.step_adv[:, None] * mask  # type: ignore[index]
    return st


def _rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def _atomic_write_text(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_metrics(path: str) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl`` file (a torn last line from a kill is skipped)."""
    rows: list[dict[str, Any]] = []
    if not os.path.exists(path):
        return rows
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except ValueError:
                break
    return rows


class Trainer:
    """Runs ``cfg.iterations`` of rollout + update; see the module docstring.

    Args:
        cfg: a :class:`~steppo.config.StepPOConfig` or :class:`~steppo.config.GRPOConfig`.
        console: a ``rich.console.Console`` for progress output (default: a new one).
    """

    def __init__(self, cfg: TrainConfig, console: Any = None):
        self.cfg = cfg
        from rich.console import Console

        self.console = console or Console(highlight=False)
        self.adv_kind, self.ratio_kind, self.critic_kind = ALGO_SPEC[cfg.algo]
        self.out = cfg.out
        self.metrics_path = os.path.join(self.out, "metrics.jsonl")
        self.ckpt_dir = os.path.join(self.out, "checkpoints")
        self.rows: list[dict[str, Any]] = []
        self.start_iteration = 1
        self.env_steps = 0
        self.episodes_done = 0
        self._stop = False
        self._setup_done = False
        self.writer = None

    # -- setup ------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        set_threads(cfg.threads)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.env_fn = make_env_fn(cfg.env, cfg.env_kwargs)
        self._prepare_out_dir()
        critic = {"none": "none"}.get(self.critic_kind, getattr(cfg, "critic", "shared"))
        self.policy = build_policy(cfg, critic)
        self.device = self.policy.device
        self.ref: Policy | None = build_policy(cfg, "none", for_reference=True) if cfg.kl_coef > 0 else None
        groups = [{"params": self.policy.policy_parameters(), "lr": cfg.lr}]
        cps = self.policy.critic_parameters()
        if cps:
            clr = getattr(cfg, "critic_lr", 0.0) or cfg.lr * 10
            groups.append({"params": cps, "lr": clr})
        if not groups[0]["params"]:
            raise InvalidConfig("train_layers", cfg.train_layers, "a setting that leaves some parameters trainable")
        self.optimizer = adamw(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        tok = self.policy.tokenizer
        self.prompt_builder = ChatPromptBuilder(tok, cfg.max_history_turns, cfg.max_prompt_tokens,
                                                 history_stride=cfg.history_stride)
        self.sampler = Sampler(self.policy, stop_strings=cfg.stop_strings, speculate=cfg.speculate)
        gen_values = "none"
        if critic == "shared":
            gen_values = self.critic_kind  # "step" or "token": read for free while sampling
        self.generator = LocalGenerator(self.sampler, values=gen_values, batch_size=cfg.num_envs,
                                        reuse_cache=cfg.kv_reuse)
        self.collector = InProcessCollector(self.env_fn, self.generator, self.prompt_builder, cfg.num_envs)
        self.collector.should_stop = lambda: self._stop  # type: ignore[attr-defined]
        self.collector.read_bootstrap = self.critic_kind != "none" and getattr(cfg, "bootstrap_truncated", True)
        if cfg.resume:
            self._load_latest_checkpoint()
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(os.path.join(self.out, "tb"), purge_step=self.start_iteration)
            except ImportError:  # pragma: no cover - tensorboard is in the train extra
                self.writer = None
        self._setup_done = True

    def _prepare_out_dir(self) -> None:
        cfg = self.cfg
        # A run that failed at start leaves config.json and an empty checkpoints/: no run yet.
        has_run = os.path.exists(self.metrics_path) or (os.path.isdir(self.ckpt_dir) and bool(os.listdir(self.ckpt_dir)))
        if has_run and not cfg.resume:
            if not cfg.overwrite:
                raise InvalidConfig("out", cfg.out, "an empty or new directory: it already holds a run "
                                    "(pass --resume to continue it, or --overwrite to start over)")
            for name in ("metrics.jsonl", "checkpoints", "tb", "policy", "learning_curve.png", "summary.json"):
                p = os.path.join(self.out, name)
                if os.path.isdir(p):
                    shutil.rmtree(p)
                elif os.path.exists(p):
                    os.remove(p)
        os.makedirs(self.out, exist_ok=True)
        os.makedirs(self.ckpt_dir, exist_ok=True)
        _atomic_write_text(os.path.join(self.out, "config.json"), json.dumps(config_to_dict(cfg), indent=2))

    # -- checkpoints --------------------------------------------------------------------
    def _trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().clone() for n, p in self.policy.named_parameters() if p.requires_grad}

    def save_checkpoint(self, iteration: int) -> str:
        """Atomically write ``checkpoints/iter_NNNNNN.pt`` and refresh ``policy/``."""
        state = {
            "iteration": iteration,
            "trainable": self._trainable_state(),
            "optimizer": self.optimizer.state_dict(),
            "rng": _rng_state(),
            "env_steps": self.env_steps,
            "episodes": self.episodes_done,
            "config": config_to_dict(self.cfg),
        }
        path = os.path.join(self.ckpt_dir, f"iter_{iteration:06d}.pt")
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)
        old = sorted(glob.glob(os.path.join(self.ckpt_dir, "iter_*.pt")))
        for p in old[: -self.cfg.keep_checkpoints]:
            os.remove(p)
        self.save_policy()
        return path

    def save_policy(self) -> None:
        """Refresh ``OUT/policy`` (written to a temp folder, then swapped in)."""
        final = os.path.join(self.out, "policy")
        tmp = final + ".tmp"
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
        extra = config_to_dict(self.cfg)
        extra["prompt"] = {"max_history_turns": self.cfg.max_history_turns, "history_stride": self.cfg.history_stride,
                           "max_prompt_tokens": self.cfg.max_prompt_tokens,
                           "stop_strings": list(self.cfg.stop_strings), "max_new_tokens": self.cfg.max_new_tokens}
        self.policy.save_pretrained(tmp, extra=extra)
        old = final + ".old"
        if os.path.isdir(old):
            # left by a run killed inside the rmtree below: the swap needs the name free
            shutil.rmtree(old)
        if os.path.isdir(final):
            os.replace(final, old)
        os.replace(tmp, final)
        if os.path.isdir(old):
            shutil.rmtree(old)

    def _load_latest_checkpoint(self) -> None:
        ckpts = sorted(glob.glob(os.path.join(self.ckpt_dir, "iter_*.pt")))
        if not ckpts:
            self.console.print(f"[yellow]no checkpoint in {self.ckpt_dir}; starting from iteration 1[/]")
            self._truncate_metrics(0 if not self.cfg.eval_before else -1)
            return
        state = torch.load(ckpts[-1], map_location="cpu", weights_only=False)
        missing = self.policy.load_state_dict(state["trainable"], strict=False)
        if missing.unexpected_keys:
            raise StepgymError(f"checkpoint {ckpts[-1]} does not match this model/config "
                               f"(unexpected keys such as {missing.unexpected_keys[:3]}); resume with the same options")
        self.optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
        it = int(state["iteration"])
        self.start_iteration = it + 1
        self.env_steps = int(state.get("env_steps", 0))
        self.episodes_done = int(state.get("episodes", 0))
        self._truncate_metrics(it)
        self.console.print(f"resumed from {ckpts[-1]} (iteration {it})")

    def _truncate_metrics(self, iteration: int) -> None:
        """Keep the metric rows up to ``iteration`` (rows of a killed run's later iterations go)."""
        rows = [r for r in read_metrics(self.metrics_path) if int(r.get("iteration", 0)) <= iteration]
        _atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))
        self.rows = rows

    # -- seeds ------------------------------------------------------------------------------
    def iteration_seeds(self, it: int) -> tuple[list[int], list[int]]:
        """Task seeds and group ids of iteration ``it`` (a pure function of seed and it)."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, it, 7])
        G = cfg.group_size
        n_groups = cfg.episodes_per_iteration // G
        tasks = rng.integers(0, cfg.eval_seed, size=n_groups)
        seeds = [int(s) for s in tasks for _ in range(G)]
        groups = [it * 100_000 + g for g in range(n_groups) for _ in range(G)]
        return seeds, groups

    # -- one iteration ------------------------------------------------------------------------
    def evaluate(self, n: int | None = None) -> dict[str, float]:
        """Success/return/length on held-out seeds ``eval_seed ...`` (greedy by default)."""
        cfg = self.cfg
        n = n or cfg.eval_episodes
        seeds = [cfg.eval_seed + i for i in range(n)]
        params = SamplingParams(cfg.max_new_tokens, cfg.eval_temperature or 1.0, 1.0,
                                greedy=cfg.eval_temperature == 0, seed=cfg.seed + 999_983)
        batch = self.collector.collect(seeds, [-1] * n, params, traj_id_start=-10_000_000)
        m = batch.metrics("eval")
        return m

    def _old_values(self, steps: list) -> tuple[torch.Tensor | None, list[list[float]] | None]:
        if self.critic_kind == "none":
            return None, None
        if self.critic_kind == "step":
            if all("value" in s.info for s in steps):
                return torch.tensor([float(s.info["value"]) for s in steps]), None
        elif all(s.info.get("token_values") is not None and len(s.info["token_values"]) == len(s.response_ids)
                 for s in steps):
            return None, [list(s.info["token_values"]) for s in steps]
        # separate critic (or a backend that does not return values): one no-grad pass
        sv: list[float] = []
        tv: list[list[float]] = []
        mb = self.cfg.micro_batch_size
        with torch.no_grad():
            for k in range(0, len(steps), mb):
                chunk = steps[k:k + mb]
                out = self.policy.score([s.prompt_ids for s in chunk], [s.response_ids for s in chunk],
                                        values=self.critic_kind, logprobs=False)
                if self.critic_kind == "step":
                    sv += out.step_values.cpu().tolist()
                else:
                    tvals = out.token_values.cpu()
                    tv += [tvals[j, : len(s.response_ids)].tolist() for j, s in enumerate(chunk)]
        return (torch.tensor(sv), None) if self.critic_kind == "step" else (None, tv)

    def _ref_logprobs(self, steps: list, L: int) -> torch.Tensor:
        if self.ref is None:
            raise RuntimeError("internal error: KL needs the reference policy")
        out = torch.zeros((len(steps), L))
        mb = self.cfg.micro_batch_size
        with torch.no_grad():
            for k in range(0, len(steps), mb):
                chunk = steps[k:k + mb]
                lp = self.ref.score([s.prompt_ids for s in chunk], [s.response_ids for s in chunk]).logprobs.cpu()
                out[k:k + len(chunk), : lp.shape[1]] = lp
        return out

    def _minibatches(self, steps: list, lengths: list[int], rng: np.random.Generator):
        """One epoch's ``(minibatch, [(micro-batch row indices, loss weight), ...])`` list.

        With ``pack_trajectories`` (and always for sequence-level ratios, GSPO) whole
        trajectories are shuffled: every row of a trajectory lands in the same micro-batch,
        where :meth:`Policy.score` runs its steps as one sequence. Otherwise rows are shuffled
        one by one. Micro-batches group units of similar length, capped by ``micro_batch_size``
        steps and ``micro_batch_tokens`` padded tokens (:func:`plan_micro_batches`). A
        micro-batch's loss weighs by its share of the minibatch's rows (its share of
        trajectories for GSPO, whose loss is a mean over trajectories).
        """
        cfg = self.cfg
        M = len(steps)
        budget = cfg.micro_batch_tokens
        out = []
        if self.ratio_kind != "sequence" and not getattr(cfg, "pack_trajectories", False):
            perm = rng.permutation(M)
            for m0 in range(0, M, cfg.minibatch_size):
                mb = perm[m0:m0 + cfg.minibatch_size].tolist()
                chunks = plan_micro_batches([(1, [lengths[i]]) for i in mb], cfg.micro_batch_size, budget)
                micro = [([mb[u] for u in c], len(c) / len(mb)) for c in chunks]
                out.append((mb, micro))
            return out
        rows_of: dict[int, list[int]] = defaultdict(list)
        for i, s in enumerate(steps):
            rows_of[s.traj_id].append(i)
        trajs = list(rows_of.values())
        order = [trajs[k] for k in rng.permutation(len(trajs))]

        def pack(units: list[list[int]], size: int) -> list[list[list[int]]]:
            groups: list[list[list[int]]] = [[]]
            for u in units:
                if groups[-1] and sum(len(x) for x in groups[-1]) + len(u) > size:
                    groups.append([])
                groups[-1].append(u)
            return [g for g in groups if g]

        per_traj = self.ratio_kind == "sequence"
        for mb_units in pack(order, cfg.minibatch_size):
            mb = [i for u in mb_units for i in u]
            sizes = []
            for u in mb_units:  # the sequences each episode's steps pack into
                seqs, _ = pack_steps([steps[i].prompt_ids for i in u], [steps[i].response_ids for i in u])
                sizes.append((len(u), [len(q) for q in seqs]))
            micro = []
            for c in plan_micro_batches(sizes, cfg.micro_batch_size, budget):
                idx = [i for k in c for i in mb_units[k]]
                micro.append((idx, len(c) / len(mb_units) if per_traj else len(idx) / len(mb)))
            out.append((mb, micro))
        return out

    def update(self, batch: RolloutBatch, it: int) -> dict[str, float]:
        """Advantages + ``epochs`` x minibatch clipped-surrogate updates; returns loss stats."""
        from steppo import losses as Lf

        cfg = self.cfg
        steps = [s for s in batch.steps if s.response_ids]
        if not steps:
            return {}
        t0 = time.perf_counter()
        sv, tv = self._old_values(steps)
        boot: dict[int, float] = {}
        if self.critic_kind != "none" and getattr(cfg, "bootstrap_truncated", True):
            # values read during the rollout (same weights) first; a forward pass for the rest
            boot = {s.traj_id: float(s.info["bootstrap_value"]) for s in steps
                    if s.truncated and "bootstrap_value" in s.info}
            trunc = [s for s in steps if s.truncated and "bootstrap_prompt_ids" in s.info and s.traj_id not in boot]
            if trunc:
                vals = self.policy.prompt_values([s.info["bootstrap_prompt_ids"] for s in trunc])
                boot.update({s.traj_id: float(v) for s, v in zip(trunc, vals)})
        st = compute_advantages(cfg, steps, step_values=sv, token_values=tv, bootstrap=boot)
        if self.ref is not None:
            st.ref_logprobs = self._ref_logprobs(steps, st.mask.shape[1])
        clip_low, clip_high = cfg.clip_range()
        vclip = getattr(cfg, "value_clip", 0.0) or None
        vf_coef = float(getattr(cfg, "vf_coef", 0.0))
        rng = np.random.default_rng([cfg.seed, it, 11])
        dev = self.device
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, float] = defaultdict(float)
        tokens = 0
        tok_min = 0.0
        self.policy.train()
        M = len(steps)
        lengths = [len(s.prompt_ids) + len(s.response_ids) for s in steps]
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        traj_ids = torch.tensor([s.traj_id for s in steps])
        for _epoch in range(cfg.epochs):
            for mb, micro in self._minibatches(steps, lengths, rng):
                self.optimizer.zero_grad(set_to_none=True)
                for idx, w in micro:
                    chunk = [steps[i] for i in idx]
                    vmode = self.critic_kind if self.critic_kind != "none" else "none"
                    out = self.policy.score([s.prompt_ids for s in chunk], [s.response_ids for s in chunk],
                                            values=vmode, entropy=cfg.entropy_coef > 0)
                    Lc = out.logprobs.shape[1]
                    ii = torch.tensor(idx)
                    old = st.old_logprobs[ii, :Lc].to(dev)
                    mask = st.mask[ii, :Lc].to(dev)
                    if self.ratio_kind == "sequence":
                        pl, pstats = Lf.sequence_policy_loss(out.logprobs, old, mask, st.step_adv[ii].to(dev),
                                                             traj_ids[ii].to(dev), clip_low=clip_low,
                                                             clip_high=clip_high)
                    elif self.ratio_kind == "step":
                        pl, pstats = Lf.step_policy_loss(out.logprobs, old, mask, st.step_adv[ii].to(dev),
                                                         clip_low=clip_low, clip_high=clip_high)
                    else:
                        pl, pstats = Lf.token_policy_loss(out.logprobs, old, mask, st.token_adv[ii, :Lc].to(dev),
                                                          clip_low=clip_low, clip_high=clip_high)
                    loss = pl
                    sums["losses/policy"] += float(pl.detach()) * w
                    for k in ("clip_frac", "approx_kl", "ratio_mean"):
                        if k in pstats:
                            sums[f"losses/{k}"] += float(pstats[k]) * w
                    if "token_log_ratio_min" in pstats:
                        tok_min = min(tok_min, float(pstats["token_log_ratio_min"]))
                    if self.critic_kind == "step":
                        vl, vstats = Lf.value_loss(out.step_values, st.step_old_values[ii].to(dev),
                                                   st.step_returns[ii].to(dev), clip=vclip)
                    elif self.critic_kind == "token":
                        vl, vstats = Lf.value_loss(out.token_values, st.token_old_values[ii, :Lc].to(dev),
                                                   st.token_returns[ii, :Lc].to(dev), mask, clip=vclip)
                    else:
                        vl, vstats = None, {}
                    if vl is not None:
                        loss = loss + vf_coef * vl
                        sums["losses/value"] += float(vl.detach()) * w
                        for k in ("explained_variance", "value_mean"):
                            if k in vstats:
                                sums[f"losses/{k}"] += float(vstats[k]) * w
                    if self.ref is not None:
                        kl = Lf.kl_penalty(out.logprobs, st.ref_logprobs[ii, :Lc].to(dev), mask)
                        loss = loss + cfg.kl_coef * kl
                        sums["losses/kl"] += float(kl.detach()) * w
                    if out.entropy is not None:
                        ent = (out.entropy * mask).sum() / mask.sum().clamp(min=1.0)
                        loss = loss - cfg.entropy_coef * ent
                        sums["losses/entropy"] += float(ent.detach()) * w
                    (loss * w).backward()
                    tokens += sum(lengths[i] for i in idx)
                if cfg.max_grad_norm > 0:
                    gn = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                    sums["losses/grad_norm"] += float(gn)
                self.optimizer.step()
                counts["mb"] += 1
        self.policy.eval()
        n = max(1.0, counts["mb"])
        stats = {k: v / n for k, v in sums.items()}
        if self.ref is None:
            # still report how far the policy moved from its rollout policy
            stats.setdefault("losses/kl", stats.get("losses/approx_kl", 0.0))
        # the policy's largest single-token move during this update (scored before each optimizer step)
        stats["losses/token_log_ratio_min"] = tok_min
        dt = time.perf_counter() - t0
        stats["perf/update_s"] = dt
        stats["perf/update_tokens_per_s"] = tokens / max(dt, 1e-9)
        adv = st.step_adv if st.step_adv is not None else st.token_adv
        if adv is not None:
            stats["charts/advantage_std"] = float(adv.float().std()) if adv.numel() > 1 else 0.0
        return stats

    def run_iteration(self, it: int) -> dict[str, Any]:
        cfg = self.cfg
        t0 = time.perf_counter()
        seeds, groups = self.iteration_seeds(it)
        params = SamplingParams(cfg.max_new_tokens, cfg.temperature, cfg.top_p,
                                seed=int(np.random.default_rng([cfg.seed, it, 3]).integers(2**31)))
        reused0, prefilled0 = self.sampler.reused_tokens, self.sampler.prefilled_tokens
        drafted0, accepted0 = self.sampler.drafted_tokens, self.sampler.accepted_tokens
        batch = self.collector.collect(seeds, groups, params, traj_id_start=it * cfg.episodes_per_iteration)
        if self._stop:
            raise _Interrupted()
        reused = self.sampler.reused_tokens - reused0
        prompt_tokens = reused + self.sampler.prefilled_tokens - prefilled0
        row: dict[str, Any] = {"iteration": it}
        row.update(batch.metrics("charts"))
        stats = self.update(batch, it)
        self.env_steps += len(batch.steps)
        self.episodes_done += len(batch.episodes)
        row.update(stats)
        row["charts/env_steps"] = self.env_steps
        row["charts/episodes"] = self.episodes_done
        row["charts/response_tokens"] = batch.generated_tokens / max(1, len(batch.steps))
        row["perf/tokens_per_s"] = batch.generated_tokens / max(batch.generation_s, 1e-9)
        row["perf/rollout_s"] = batch.wall_s
        # share of prompt tokens served from KV caches instead of prefilled (kv_reuse, shared prefixes)
        row["perf/prompt_cache_hit"] = reused / max(1, prompt_tokens)
        if cfg.speculate:
            # share of prompt-lookup draft tokens the policy accepted (speculative sampling)
            drafted = self.sampler.drafted_tokens - drafted0
            row["perf/draft_acceptance"] = (self.sampler.accepted_tokens - accepted0) / max(1, drafted)
        if (cfg.eval_every and it % cfg.eval_every == 0) or it == cfg.iterations:
            row.update(self.evaluate())
        row["perf/iteration_s"] = time.perf_counter() - t0
        return row

    def _log_row(self, row: dict[str, Any]) -> None:
        row = {k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in row.items()}
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.rows.append(row)
        if self.writer is not None:
            for k, v in row.items():
                if k != "iteration" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.writer.add_scalar(k, v, row["iteration"])
            self.writer.flush()

    def _rewrite_metrics(self) -> None:
        _atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in self.rows))
        if self.writer is not None:
            r = self.rows[-1]
            for k, v in r.items():
                if k.startswith("eval/"):
                    self.writer.add_scalar(k, v, r["iteration"])

    def _metrics_line(self, row: dict[str, Any]) -> str:
        def g(k: str, fmt: str = "{:.2f}") -> str:
            return fmt.format(row[k]) if k in row else "-"

        parts = [
            f"it {row['iteration']}/{self.cfg.iterations}",
            f"success {g('charts/success_rate')}",
            f"return {g('charts/episode_return')}",
            f"steps/ep {g('charts/episode_length', '{:.1f}')}",
            f"invalid {g('charts/invalid_action_rate')}",
            f"kl {g('losses/kl', '{:.4f}')}",
            f"pg {g('losses/policy', '{:+.3f}')}",
            f"vf {g('losses/value', '{:.3f}')}",
            f"{g('perf/tokens_per_s', '{:.0f}')} tok/s",
        ]
        if "eval/success_rate" in row:
            parts.append(f"[bold]eval {row['eval/success_rate']:.2f}[/]")
        if "perf/iteration_s" in row:
            parts.append(f"{row['perf/iteration_s']:.1f}s")
        return " | ".join(parts)

    # -- the loop ---------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Run the remaining iterations; returns a summary dict (also written to summary.json)."""
        if not self._setup_done:
            self.setup()
        cfg = self.cfg
        tr, tot = count_parameters(self.policy)
        self.console.print(f"[bold]stepgym train[/] {cfg.algo} on {cfg.env} {cfg.env_kwargs or ''} | model {cfg.model}"
                           f"{' (init ' + cfg.init + ')' if cfg.init else ''} | {tr / 1e6:.2f}M/{tot / 1e6:.2f}M "
                           f"trainable params | {self.device} | out {cfg.out}")
        prev = signal.getsignal(signal.SIGINT)
        installed = False
        try:
            signal.signal(signal.SIGINT, self._on_sigint)
            installed = True
        except ValueError:  # not the main thread
            pass
        interrupted = False
        last_done = self.start_iteration - 1
        try:
            if cfg.eval_before and self.start_iteration == 1 and not any(r.get("iteration") == 0 for r in self.rows):
                row0 = {"iteration": 0, **self.evaluate()}
                self._log_row(row0)
                self.console.print(f"before training: eval success {row0['eval/success_rate']:.2f} "
                                   f"return {row0['eval/episode_return']:.2f} "
                                   f"steps/ep {row0['eval/episode_length']:.1f}")
            progress = self._progress()
            with progress:
                task = progress.add_task("training", total=cfg.iterations, completed=self.start_iteration - 1)
                for it in range(self.start_iteration, cfg.iterations + 1):
                    try:
                        row = self.run_iteration(it)
                    except _Interrupted:
                        interrupted = True
                        break
                    self._log_row(row)
                    last_done = it
                    progress.console.print(self._metrics_line(row))
                    progress.update(task, advance=1)
                    if cfg.save_every and it % cfg.save_every == 0 and it != cfg.iterations:
                        self.save_checkpoint(it)
                    if self._stop:
                        interrupted = True
                        break
                    if cfg.max_env_steps and self.env_steps >= cfg.max_env_steps:
                        if "eval/success_rate" not in row:
                            # the budget ends the run: close it with an evaluation like the last iteration
                            extra = self.evaluate()
                            self.rows[-1].update(extra)
                            self._rewrite_metrics()
                        break
        finally:
            if installed:
                signal.signal(signal.SIGINT, prev)
        if last_done >= self.start_iteration or interrupted or last_done == cfg.iterations:
            if last_done >= 1:
                self.save_checkpoint(last_done)
        summary = self._finish(last_done, interrupted)
        return summary

    def _on_sigint(self, signum, frame) -> None:  # pragma: no cover - exercised via subprocess tests
        if self._stop:
            raise KeyboardInterrupt
        self._stop = True
        self.console.print("[yellow]Ctrl-C: saving a checkpoint and stopping (Ctrl-C again to abort without saving)[/]")

    def _progress(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        return Progress(SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
                        disable=not self.cfg.progress, transient=False)

    def _finish(self, last_done: int, interrupted: bool) -> dict[str, Any]:
        from steppo import report

        png = os.path.join(self.out, "learning_curve.png")
        try:
            report.plot_learning_curve(self.rows, png, title=f"{self.cfg.algo} on {self.cfg.env}")
        except Exception as exc:  # noqa: BLE001 - a plot must never lose a finished run
            self.console.print(f"[yellow]could not draw the learning curve: {exc}[/]")
            png = ""
        summary = report.summarize(self.rows)
        summary.update({"iterations_done": last_done, "interrupted": interrupted, "out": self.out,
                        "learning_curve": png, "algo": self.cfg.algo})
        _atomic_write_text(os.path.join(self.out, "summary.json"), json.dumps(summary, indent=2))
        self.console.print(report.summary_table(self.rows, title=f"{self.cfg.algo}: {self.out}"))
        if self.writer is not None:
            self.writer.close()
        self.collector.close()
        return summary
