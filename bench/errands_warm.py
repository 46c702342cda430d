"""Errands-v0: expert statistics per difficulty, and how well a behaviour-cloned tiny model does.

    python bench/errands_warm.py --expert                       # expert success and length per difficulty
    python bench/errands_warm.py --episodes 256 --epochs 6      # clone a noisy expert, then evaluate it
    python bench/errands_warm.py --policy runs/errands/policy   # only evaluate a saved policy

The warm start is ``stepgym sft`` with the options given here (the tiny model, ``--demo-noise``,
2 turns of history, stop at the end of the turn). The evaluation runs the policy on held-out
seeds from 1,000,000 (the trainer's evaluation seeds), greedy and sampled at T=1, and prints
success, mean return, mean episode length, invalid-action rate and mean share of the
progress units reached (``info["progress"] / info["progress_total"]`` at the episode end).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ENV = "stepgym/Errands-v0"


def expert_table(episodes: int) -> None:
    import gymnasium as gym

    import stepgym  # noqa: F401

    print("| difficulty | kwargs | expert success | mean steps (min-max) | mean return | step limit |")
    print("|---|---|---:|---|---:|---:|")
    for difficulty in ("easy", "medium", "hard"):
        for extra in ({}, {"note": False}):
            kw = {"difficulty": difficulty, **extra}
            if extra:
                kw["max_steps"] = 60
            env = gym.make(ENV, **kw)
            wins, lengths, returns = 0, [], []
            for seed in range(episodes):
                env.reset(seed=seed)
                n, ret = 0, 0.0
                while True:
                    _, r, te, tr, info = env.step(env.unwrapped.expert_action())
                    n, ret = n + 1, ret + r
                    if te or tr:
                        break
                wins += bool(info["success"])
                lengths.append(n)
                returns.append(ret)
            print(f"| {difficulty} | `{json.dumps(extra)}` | {wins}/{episodes} | {statistics.mean(lengths):.1f} "
                  f"({min(lengths)}-{max(lengths)}) | {statistics.mean(returns):.2f} | {env.unwrapped.max_steps} |")


def evaluate(policy_dir: str, env_kw: dict, episodes: int, threads: int, max_new: int, history: int) -> None:
    import torch

    torch.set_num_threads(threads)
    from stepgym.models import load_model
    from steppo.config import TrainConfig
    from steppo.policy import Policy
    from steppo.rollout import ChatPromptBuilder, InProcessCollector, LocalGenerator, SamplingParams, make_env_fn
    from steppo.sampling import Sampler

    lm, tok = load_model(policy_dir)
    seeds = [TrainConfig().eval_seed + i for i in range(episodes)]
    print("| policy | decoding | success | mean return | mean length | invalid-action rate | progress reached |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for temperature in (0.0, 1.0):
        pol = Policy(lm, tok, critic="none", temperature=temperature or 1.0)
        col = InProcessCollector(make_env_fn(ENV, env_kw), LocalGenerator(Sampler(pol, stop_strings=()), batch_size=16),
                                 ChatPromptBuilder(tok, history), 16)
        t0 = time.perf_counter()
        batch = col.collect(seeds, [-1] * episodes, SamplingParams(max_new, temperature or 1.0, 1.0,
                                                                   greedy=temperature == 0, seed=0))
        col.close()
        m = batch.metrics("eval")
        last = {}
        for s in batch.steps:
            if s.done:
                last[s.traj_id] = s.info
        reached = [i.get("progress", 0) / max(1, i.get("progress_total", 1)) for i in last.values()]
        name = "greedy" if temperature == 0 else f"T={temperature:g}"
        print(f"| {policy_dir} | {name} | {m['eval/success_rate']:.3f} | {m['eval/episode_return']:.3f} | "
              f"{m['eval/episode_length']:.1f} | {m['eval/invalid_action_rate']:.3f} | "
              f"{statistics.mean(reached) if reached else float('nan'):.3f} |  ({time.perf_counter() - t0:.0f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--expert", action="store_true", help="print the expert table and stop")
    ap.add_argument("--expert-episodes", type=int, default=500)
    ap.add_argument("--env-kwargs", default='{"difficulty": "easy"}')
    ap.add_argument("--policy", help="evaluate this policy folder instead of training one")
    ap.add_argument("--out", default="runs/errands_warm")
    ap.add_argument("--episodes", type=int, default=256, help="demonstration episodes")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--demo-noise", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--history", type=int, default=2, help="max_history_turns of the prompts")
    ap.add_argument("--max-new-tokens", type=int, default=12)
    ap.add_argument("--eval-episodes", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.expert:
        expert_table(args.expert_episodes)
        return
    env_kw = json.loads(args.env_kwargs)
    policy = args.policy
    if policy is None:
        from steppo.config import SFTConfig
        from steppo.sft import run_sft

        t0 = time.perf_counter()
        run_sft(SFTConfig(model="tiny", env=ENV, env_kwargs=env_kw, episodes=args.episodes, epochs=args.epochs,
                          lr=args.lr, demo_noise=args.demo_noise, seed=args.seed, batch_size=16,
                          max_history_turns=args.history, stop_strings=(), max_new_tokens=args.max_new_tokens,
                          out=args.out, progress=False, threads=args.threads))
        print(f"sft: {args.episodes} episodes x {args.epochs} epochs in {time.perf_counter() - t0:.0f} s")
        policy = os.path.join(args.out, "policy")
    evaluate(policy, env_kw, args.eval_episodes, args.threads, args.max_new_tokens, args.history)


if __name__ == "__main__":
    main()
