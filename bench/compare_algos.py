"""StepPO vs token-PPO vs GRPO on ToolUse-v0 easy with the tiny model, same weak warm start.

Every run starts from the same behaviour-cloned tiny model (512 expert episodes, 10 epochs:
a weak policy, ~20 % greedy success on 64 held-out seeds; ``--warm-*`` options make another,
``--warm-noise`` clones an epsilon-noisy expert, ``--init`` takes a ready one), and trains until
the same env-step budget is spent. Held-out success is measured on 64 seeds
every 2 iterations (``--eval-episodes``, ``--eval-every``; at ``--eval-temperature``, greedy by
default; ``--greedy-final`` adds a greedy evaluation of the warm start and of each final policy). Writes a table (mean and spread over seeds of the final held-out success
and of the area under the held-out success curve, per env step) and a curve PNG.

    python bench/compare_algos.py --algos steppo ppo grpo --seeds 0 1 2 --budget 480 --threads 1

Results go to runs/compare_algos/ (per-run folders, results.json, compare_algos.png).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time

ENV_KW = {"difficulty": "easy", "tools": ["lookup"], "compact": True}


def warm_start(out: str, episodes: int, epochs: int, threads: int, env: str, env_kw: dict, stop: tuple,
               batch_size: int = 16, noise: float = 0.0, lr: float = 3e-3) -> str:
    from steppo.config import SFTConfig
    from steppo.sft import run_sft

    if os.path.isdir(os.path.join(out, "policy")):
        return out
    run_sft(SFTConfig(model="tiny", env=env, env_kwargs=env_kw, episodes=episodes, epochs=epochs, lr=lr, demo_noise=noise,
                      batch_size=batch_size, max_history_turns=2, out=out, progress=False, threads=threads,
                      stop_strings=stop))
    return out


def run_one(algo: str, seed: int, init: str, out: str, budget: int, threads: int, lr: float,
            temperature: float = 1.0, env: str = "stepgym/ToolUse-v0", env_kw: dict | None = None,
            stop: tuple = ("</tool_call>",), max_new: int = 48, episodes: int = 16,
            eval_temperature: float = 0.0, gamma: float = 1.0, critic: str = "shared",
            kl_coef: float = 0.0, bootstrap_truncated: bool = True, clip: tuple = (-1.0, -1.0),
            epochs: int = 2, minibatch_size: int = 16, eval_episodes: int = 64, eval_every: int = 2) -> list[dict]:
    from steppo.config import make_train_config
    from steppo.report import read_metrics
    from steppo.trainer import Trainer

    algo, _, guard = algo.partition("+guard=")  # e.g. steppo+guard=0: the paper's StepPO (no token guard)
    group = {"grpo": 4, "rloo": 4, "gspo": 4, "gigpo": 4}.get(algo, 1)
    critic_free = algo in ("grpo", "rloo", "gspo", "gigpo", "reinforce_pp")
    cfg = make_train_config(dict(
        algo=algo, model="tiny", init=init, env=env, env_kwargs=ENV_KW if env_kw is None else env_kw, seed=seed,
        iterations=100, max_env_steps=budget, stop_strings=stop,
        episodes_per_iteration=episodes, group_size=group, num_envs=16, max_new_tokens=max_new, max_history_turns=2, lr=lr, temperature=temperature,
        eval_every=eval_every, eval_episodes=eval_episodes, eval_temperature=eval_temperature, out=out, overwrite=True, progress=False, tensorboard=False, save_every=0,
        threads=threads, gamma=gamma, kl_coef=kl_coef, clip_low=clip[0], clip_high=clip[1], epochs=epochs,
        minibatch_size=minibatch_size, **({"token_guard": float(guard)} if guard else {}),
        **({} if critic_free else {"critic": critic, "bootstrap_truncated": bootstrap_truncated}),
    ))
    from rich.console import Console

    Trainer(cfg, console=Console(quiet=True)).train()
    return read_metrics(os.path.join(out, "metrics.jsonl"))


def greedy_success(policy_dir: str, env: str, env_kw: dict, stop: tuple, max_new: int, episodes: int) -> float:
    """Greedy held-out success of a saved policy on the trainer's evaluation seeds."""
    from steppo.config import TrainConfig
    from stepgym.models import load_model
    from steppo.policy import Policy
    from steppo.rollout import ChatPromptBuilder, make_env_fn
    from steppo.sft import evaluate_policy

    lm, tok = load_model(policy_dir)
    m = evaluate_policy(Policy(lm, tok, critic="none"), make_env_fn(env, env_kw), ChatPromptBuilder(tok, 2), episodes,
                        seed_start=TrainConfig().eval_seed, max_new_tokens=max_new, stop_strings=stop, num_envs=16)
    return float(m["eval/success_rate"])


def curve(rows: list[dict]) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        if "eval/success_rate" in r:
            xs.append(float(r.get("charts/env_steps", 0)))
            ys.append(float(r["eval/success_rate"]))
    return xs, ys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--algos", nargs="+", default=["steppo", "ppo", "grpo"],
                    help="algorithm names; ALGO+guard=G sets StepPO's token guard (steppo+guard=0 = the paper's)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--budget", type=int, default=480, help="env steps per run")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--temperature", type=float, default=0.7, help="rollout sampling temperature")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/compare_algos")
    ap.add_argument("--warm-episodes", type=int, default=512)
    ap.add_argument("--warm-epochs", type=int, default=10)
    ap.add_argument("--init", default="", help="use this warm start (a `stepgym sft` output) instead of making one")
    ap.add_argument("--png", default="docs/img/compare_algos.png")
    ap.add_argument("--env", default="stepgym/ToolUse-v0")
    ap.add_argument("--env-kwargs", default=json.dumps(ENV_KW))
    ap.add_argument("--stop-strings", nargs="*", default=["</tool_call>"])
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--episodes-per-iteration", type=int, default=16)
    ap.add_argument("--warm-batch-size", type=int, default=16)
    ap.add_argument("--warm-noise", type=float, default=0.0,
                    help="demo noise of the warm start made here (`stepgym sft --demo-noise`)")
    ap.add_argument("--warm-lr", type=float, default=3e-3)
    ap.add_argument("--eval-episodes", type=int, default=64, help="held-out seeds per evaluation")
    ap.add_argument("--eval-every", type=int, default=2, help="iterations between evaluations")
    ap.add_argument("--keep-policies", action="store_true", help="keep each run's final policy folder")
    ap.add_argument("--greedy-final", action="store_true",
                    help="also evaluate the warm start and each final policy greedily (table columns)")
    ap.add_argument("--eval-temperature", type=float, default=0.0, help="0 = greedy held-out evaluation")
    ap.add_argument("--gamma", type=float, default=1.0, help="discount over steps")
    ap.add_argument("--critic", default="shared", choices=["shared", "separate"], help="critic of steppo/ppo")
    ap.add_argument("--kl-coef", type=float, default=0.0, help="KL penalty to the warm start")
    ap.add_argument("--clip", nargs=2, type=float, default=[-1.0, -1.0], metavar=("LOW", "HIGH"),
                    help="ratio clip eps_low eps_high (-1 = the algorithm's default)")
    ap.add_argument("--epochs", type=int, default=2, help="passes over each iteration's steps")
    ap.add_argument("--minibatch-size", type=int, default=16, help="steps per optimizer step")
    ap.add_argument("--no-bootstrap-truncated", dest="bootstrap_truncated", action="store_false",
                    help="steppo/ppo: treat the env's step limit as the end of the task (value 0)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from steppo.report import auc

    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    env_kw = json.loads(args.env_kwargs)
    stop = tuple(args.stop_strings)
    init = args.init or warm_start(os.path.join(args.out, "warm"), args.warm_episodes, args.warm_epochs, args.threads,
                                   args.env, env_kw, stop, args.warm_batch_size, args.warm_noise, args.warm_lr)
    print(f"warm start ready ({time.time() - t0:.0f}s)", flush=True)
    results: dict[str, dict[int, dict]] = {}
    path = os.path.join(args.out, "results.json")
    if os.path.exists(path):
        with open(path) as fh:
            results = {a: {int(k): v for k, v in d.items()} for a, d in json.load(fh).items() if a != "warm"}
    warm_greedy = None
    if args.greedy_final:
        pdir = os.path.join(init, "policy") if os.path.isdir(os.path.join(init, "policy")) else init
        warm_greedy = greedy_success(pdir, args.env, env_kw, stop, args.max_new_tokens, args.eval_episodes)
        print(f"warm start: greedy held-out success {warm_greedy:.3f}", flush=True)
    for algo in args.algos:
        for seed in args.seeds:
            if seed in results.get(algo, {}):
                continue
            t = time.time()
            rows = run_one(algo, seed, init, os.path.join(args.out, f"{algo}_s{seed}"), args.budget, args.threads, args.lr,
                          args.temperature, args.env, env_kw, stop, args.max_new_tokens, args.episodes_per_iteration,
                          args.eval_temperature, args.gamma, args.critic, args.kl_coef, args.bootstrap_truncated,
                          tuple(args.clip), args.epochs, args.minibatch_size, args.eval_episodes, args.eval_every)
            xs, ys = curve(rows)
            res = {"env_steps": xs, "eval_success": ys, "final": ys[-1], "initial": ys[0], "auc": auc(xs, ys),
                   "seconds": time.time() - t, "iterations": max(r["iteration"] for r in rows)}
            if args.greedy_final:
                res["greedy_final"] = greedy_success(os.path.join(args.out, f"{algo}_s{seed}", "policy"), args.env,
                                                     env_kw, stop, args.max_new_tokens, args.eval_episodes)
            results.setdefault(algo, {})[seed] = res
            print(f"{algo} seed {seed}: eval success {res['initial']:.2f} -> {res['final']:.2f}, auc {res['auc']:.3f} "
                  f"({res['seconds']:.0f}s, {res['iterations']} iterations)", flush=True)
            with open(path, "w") as fh:
                json.dump({**results, "warm": {"greedy": warm_greedy}}, fh, indent=1)
            if not args.keep_policies:
                shutil.rmtree(os.path.join(args.out, f"{algo}_s{seed}", "policy"), ignore_errors=True)
            shutil.rmtree(os.path.join(args.out, f"{algo}_s{seed}", "checkpoints"), ignore_errors=True)
    # table
    greedy_cols = args.greedy_final and args.eval_temperature != 0
    lines = ["| algo | warm start (held-out success) | final success, mean ± std | AUC, mean ± std | seeds |"
             + (" greedy: warm start -> final, mean ± std |" if greedy_cols else ""),
             "|---|---|---|---|---|" + ("---|" if greedy_cols else "")]
    for algo in args.algos:
        rs = [results[algo][s] for s in args.seeds if s in results.get(algo, {})]
        if not rs:
            continue
        fin = [r["final"] for r in rs]
        au = [r["auc"] for r in rs]
        ini = [r["initial"] for r in rs]
        sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
        lines.append(f"| {algo} | {statistics.mean(ini):.3f} | {statistics.mean(fin):.3f} ± {sd(fin):.3f} | "
                     f"{statistics.mean(au):.3f} ± {sd(au):.3f} | {len(rs)} |"
                     + (f" {warm_greedy:.3f} -> {statistics.mean(g := [r['greedy_final'] for r in rs]):.3f} ± {sd(g):.3f} |"
                        if greedy_cols else ""))
    print("\n".join(lines))
    # curves
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for k, algo in enumerate(args.algos):
        for j, s in enumerate(args.seeds):
            r = results.get(algo, {}).get(s)
            if r:
                ax.plot(r["env_steps"], r["eval_success"], "-o", color=f"C{k}", alpha=0.7, markersize=3,
                        label=algo if j == 0 else None)
    ax.set_xlabel("env steps")
    ax.set_ylabel("held-out success" + (" (greedy)" if args.eval_temperature == 0 else f" (T={args.eval_temperature})"))
    ax.set_title(f"{args.env.split(':')[-1]}, tiny model, same warm start", fontsize=9)
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.png) or ".", exist_ok=True)
    fig.savefig(args.png, dpi=90)
    print(f"wrote {args.png} and {path}")


if __name__ == "__main__":
    main()
