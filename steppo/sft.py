"""Behaviour cloning from an env's expert: the warm start of RL training.

Records ``episodes`` expert episodes (``env.unwrapped.expert_action()``), renders each
step's prompt exactly as the RL rollouts do (:class:`~steppo.rollout.ChatPromptBuilder`),
and trains cross-entropy on the expert's action tokens followed by the end-of-turn token.
The result is a policy folder that ``stepgym train --init DIR`` starts from.

Example:
    >>> import tempfile
    >>> from steppo.config import SFTConfig
    >>> from steppo.sft import run_sft
    >>> res = run_sft(SFTConfig(model="tiny", episodes=2, epochs=1, out=tempfile.mkdtemp(), progress=False))
    >>> res["steps"] > 0 and res["final_loss"] > 0
    True
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from stepgym.agents.evaluate import EvalProgress
from stepgym.errors import InvalidArgument
from stepgym.policy_folder import PolicySettings
from stepgym.progress import episode_progress
from steppo.config import SFTConfig, config_to_dict
from steppo.report import progress_bar
from steppo.batching import plan_micro_batches
from steppo.policy import Policy, adamw, end_of_turn_ids, set_threads
from steppo.rollout import ChatPromptBuilder, make_env_fn

__all__ = ["collect_expert_steps", "run_sft", "sft_train", "evaluate_policy"]

#: SFT task seeds start here (RL training draws seeds from the same range; held-out eval seeds do not).
SFT_SEED_BASE = 500_000


def collect_expert_steps(env_fn, prompt_builder: ChatPromptBuilder, episodes: int, seed: int = 0,
                         eos_id: int | None = None, noise: float = 0.0,
                         on_episode: Callable[[], None] | None = None) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, target ids) of every demonstration step of ``episodes`` episodes.

    The demonstrator is the env's expert. With ``noise`` > 0 it is an epsilon-noisy expert:
    at each step, with probability ``noise``, :class:`~stepgym.agents.RandomAgent` acts
    instead (a random call in the env's own format), and that random action is recorded as
    the target too. The expert recovers from the state it leads to, so the clone learns the
    expert's behaviour plus a share of mistakes: a weaker warm start that leaves RL
    decisions to improve, not only copying. Which steps are noisy depends only on ``seed``.
    ``on_episode`` is called after each recorded episode (progress).
    """
    if not 0.0 <= noise <= 1.0:
        raise InvalidArgument(f"demonstration noise must be in [0, 1], got {noise!r}")
    env = env_fn()
    tok = prompt_builder.tokenizer
    data: list[tuple[list[int], list[int]]] = []
    rng = random.Random(seed * 7_919 + 17)
    randomer = None
    if noise > 0:
        from stepgym.agents import RandomAgent

        randomer = RandomAgent(seed=seed)
    try:
        for e in range(episodes):
            obs, info = env.reset(seed=SFT_SEED_BASE + seed * 10_007 + e)
            observations, actions = [obs], []
            if randomer is not None:
                randomer.reset()
            done = False
            while not done:
                try:
                    action = env.unwrapped.expert_action()
                except NotImplementedError as exc:
                    raise InvalidArgument(f"{type(env.unwrapped).__name__} has no expert_action(); "
                                          "behaviour cloning needs one (or start RL from a model that already acts)") from exc
                if randomer is not None:
                    # Always consult both the coin and the agent, so one step's choice does
                    # not shift the random stream of the steps after it.
                    wrong = randomer.act(obs, info)
                    if rng.random() < noise:
                        action = wrong
                ids, _ = prompt_builder.build(observations, actions)
                target = tok(action, add_special_tokens=False)["input_ids"]
                if eos_id is not None:
                    target = target + [eos_id]
                data.append((ids, target))
                obs, r, term, trunc, info = env.step(action)
                observations.append(obs)
                actions.append(action)
                done = term or trunc
            if on_episode is not None:
                on_episode()
    finally:
        env.close()
    return data


def sft_train(policy: Policy, data: list[tuple[list[int], list[int]]], *, epochs: int, batch_size: int, lr: float,
              micro_batch_size: int = 8, weight_decay: float = 0.0, max_grad_norm: float = 1.0, seed: int = 0,
              log=None, micro_batch_tokens: int = 0, on_step: Callable[[], None] | None = None) -> list[float]:
    """Cross-entropy on the target tokens; returns the mean loss of each epoch (``on_step``: after each optimizer step)."""
    params = policy.policy_parameters()
    opt = adamw(params, lr=lr, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    losses: list[float] = []
    policy.train()
    lengths = [len(p) + len(t) for p, t in data]
    for ep in range(epochs):
        perm = rng.permutation(len(data)).tolist()
        tot, n = 0.0, 0
        for b0 in range(0, len(perm), batch_size):
            mb = perm[b0:b0 + batch_size]
            opt.zero_grad(set_to_none=True)
            ntok = sum(len(data[i][1]) for i in mb)
            for chunk in plan_micro_batches([(1, [lengths[i]]) for i in mb], micro_batch_size, micro_batch_tokens):
                idx = [mb[u] for u in chunk]
                out = policy.score([data[i][0] for i in idx], [data[i][1] for i in idx])
                loss = -(out.logprobs * out.mask).sum() / ntok  # token-mean over the minibatch
                loss.backward()
                tot += float(loss.detach()) * ntok
                n += int(out.mask.sum())
            if max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            opt.step()
            if on_step is not None:
                on_step()
        losses.append(tot / max(1, n))
        if log is not None:
            log(f"sft epoch {ep + 1}/{epochs}: loss {losses[-1]:.4f}")
    policy.eval()
    return losses


def evaluate_policy(policy: Policy, env_fn, prompt_builder: ChatPromptBuilder, episodes: int, *, seed_start: int,
                    max_new_tokens: int, stop_strings: tuple[str, ...], num_envs: int = 8,
                    on_progress: Callable[[EvalProgress], None] | None = None) -> dict[str, float]:
    """Greedy success / return / length / invalid rate of ``policy`` on seeds ``seed_start ...``.

    ``on_progress`` hears how the episodes go (:func:`stepgym.progress.episode_progress` shows it).
    """
    from steppo.sampling import Sampler
    from steppo.rollout import InProcessCollector, LocalGenerator, SamplingParams

    col = InProcessCollector(env_fn, LocalGenerator(Sampler(policy, stop_strings=stop_strings), batch_size=num_envs),
                             prompt_builder, num_envs)
    try:
        batch = col.collect([seed_start + i for i in range(episodes)], [-1] * episodes,
                            SamplingParams(max_new_tokens, 1.0, 1.0, greedy=True, seed=0), on_progress=on_progress)
    finally:
        col.close()
    return batch.metrics("eval")


def run_sft(cfg: SFTConfig, console: Any = None, eval_episodes: int = 0, eval_seed: int = 1_000_000) -> dict[str, Any]:
    """Record expert episodes, clone them, save ``OUT/policy`` (+ ``OUT/sft_metrics.json``).

    With ``eval_episodes`` the model is first evaluated (greedy, held-out seeds from
    ``eval_seed``) so a run can show where it started before the warm start.
    """
    from steppo.loading import build_policy

    log = console.print if console is not None else (lambda *a, **k: None)
    set_threads(cfg.threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    env_fn = make_env_fn(cfg.env, cfg.env_kwargs)
    policy = build_policy(cfg, "none")
    pb = ChatPromptBuilder(policy.tokenizer, cfg.max_history_turns, cfg.max_prompt_tokens,
                           history_stride=cfg.history_stride)
    eos = end_of_turn_ids(policy.tokenizer, policy.lm)
    eot = policy.tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in policy.tokenizer.get_vocab() else None
    eos_id = eot if eot is not None else (eos[0] if eos else None)
    base_eval: dict[str, float] = {}
    timings = {"load": time.perf_counter() - t0}
    if eval_episodes:
        t_eval = time.perf_counter()
        with episode_progress(console, "eval (held-out) before the warm start", eval_episodes,
                              cfg.progress) as on_progress:
            base_eval = evaluate_policy(policy, env_fn, pb, eval_episodes, seed_start=eval_seed,
                                        max_new_tokens=cfg.max_new_tokens, stop_strings=cfg.stop_strings,
                                        on_progress=on_progress)
        timings["eval"] = time.perf_counter() - t_eval
        log(f"before the warm start ({cfg.model}): eval success {base_eval['eval/success_rate']:.2f} "
            f"invalid-action rate {base_eval['eval/invalid_action_rate']:.2f} "
            f"({eval_episodes} episodes, {timings['eval']:.1f}s)")
    t_record = time.perf_counter()
    with progress_bar(console, cfg.progress and console is not None) as bar:
        task = bar.add_task("sft: recording expert episodes", total=cfg.episodes)
        data = collect_expert_steps(env_fn, pb, cfg.episodes, cfg.seed, eos_id, noise=cfg.demo_noise,
                                    on_episode=lambda: bar.update(task, advance=1))
    t_data = timings["record"] = time.perf_counter() - t_record
    ntok = sum(len(p) + len(t) for p, t in data)
    kind = f"expert episodes (demo noise {cfg.demo_noise:g})" if cfg.demo_noise else "expert episodes"
    log(f"sft: {cfg.episodes} {kind}, {len(data)} steps, {ntok} tokens ({t_data:.1f}s to record)")
    t_train = time.perf_counter()
    with progress_bar(console, cfg.progress and console is not None) as bar:
        task = bar.add_task("sft: training", total=cfg.epochs * -(-len(data) // cfg.batch_size))
        losses = sft_train(policy, data, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                           micro_batch_size=cfg.micro_batch_size, micro_batch_tokens=cfg.micro_batch_tokens,
                           weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, seed=cfg.seed,
                           log=bar.console.print if console is not None else None,
                           on_step=lambda: bar.update(task, advance=1))
    timings["train"] = time.perf_counter() - t_train
    t_save = time.perf_counter()
    os.makedirs(cfg.out, exist_ok=True)
    final = policy.save_pretrained(os.path.join(cfg.out, "policy"), extra=config_to_dict(cfg),
                                   settings=PolicySettings.from_config(cfg))
    res = {"episodes": cfg.episodes, "steps": len(data), "tokens": ntok, "epoch_losses": losses,
           "final_loss": losses[-1] if losses else float("nan"), "seconds": time.perf_counter() - t0,
           "policy": final, "base_eval": base_eval}
    timings["save"] = time.perf_counter() - t_save
    res["timings_s"] = timings
    with open(os.path.join(cfg.out, "sft_metrics.json"), "w") as fh:
        json.dump(res, fh, indent=2)
    log(f"sft: saved {final} ({res['seconds']:.1f}s in all: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
        + ")")
    return res
