"""StepPO vs token-PPO vs GRPO vs GiGPO (and the StepPO ablations) on several env families.

One command runs the whole comparison: for each family, one warm start (behaviour cloning of
an epsilon-noisy expert on the tiny model), then every algorithm x seed from that same warm
start until the same env-step budget is spent, with held-out success measured sampled (at
the rollout temperature) during training and greedy at the end. Runs go in parallel
processes (``--jobs``, one thread each). Writes ``OUT/results.json``, a markdown table (final
success mean ± std, sampled and greedy, and the area under the sampled held-out curve per env
step) and one PNG with a panel per family.

    python bench/compare_families.py --families errands tooluse --algos steppo ppo grpo gigpo --seeds 0 1 2

``--algos`` takes ``ALGO+guard=G`` too (``steppo+guard=0`` is the paper's StepPO, without the
token guard). Finished runs are kept in ``OUT/results.json`` and skipped when the command is
run again, so an interrupted comparison continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from compare_algos import curve, greedy_success, run_one, warm_start  # noqa: E402

#: Each family: the env and its kwargs, generation settings, the warm start, the run settings.
FAMILIES: dict[str, dict] = {
    # the trainer tests' two-step toy (open the named box, then say done): cheap, and the tiny
    # model's warm start (16 expert episodes x 6 epochs) leaves ~0.33 sampled success
    "boxes": dict(
        env="tests.steppo.toy:steppotest/Boxes-v0", env_kw={}, stop=(), max_new=6,
        warm=dict(episodes=16, epochs=6, noise=0.0, lr=3e-3, batch_size=8),
        run=dict(lr=3e-4, temperature=1.0, episodes=32, gamma=1.0),
    ),
    # the long-horizon family (docs/envs/Errands.md): one item to fetch plus the key, 11 expert
    # steps, dense progress rewards (the tiny model's clone of the 2-item errand never succeeds)
    "errands": dict(
        env="stepgym/Errands-v0", env_kw={"difficulty": "easy", "num_items": 1}, stop=(), max_new=12,
        warm=dict(episodes=512, epochs=6, noise=0.2, lr=3e-3, batch_size=16),
        run=dict(lr=5e-5, temperature=1.0, episodes=16, gamma=1.0),
    ),
    # the short family: a lookup then an answer; the warm start of docs/benchmarks.md "Headline
    # (2026-11-26)" (2,048 noisy-expert episodes x 8 epochs: ~0.15 sampled, ~0.40 greedy)
    "tooluse": dict(
        env="stepgym/ToolUse-v0", env_kw={"difficulty": "easy", "tools": ["lookup"], "compact": True},
        stop=("</tool_call>",), max_new=48,
        warm=dict(episodes=2048, epochs=8, noise=0.2, lr=3e-3, batch_size=16),
        run=dict(lr=5e-5, temperature=1.0, episodes=32, gamma=1.0),
    ),
}


def _job(family: str, algo: str, seed: int, init: str, out: str, budget: int, eval_episodes: int,
         eval_every: int, lr: float | None = None) -> tuple[str, str, int, dict]:
    import torch

    torch.set_num_threads(1)
    fam = FAMILIES[family]
    run = fam["run"]
    t = time.time()
    rows = run_one(algo, seed, init, out, budget, 1, run["lr"] if lr is None else lr, run["temperature"], fam["env"], fam["env_kw"],
                   fam["stop"], fam["max_new"], run["episodes"], run["temperature"], run["gamma"],
                   eval_episodes=eval_episodes, eval_every=eval_every)
    xs, ys = curve(rows)
    from steppo.report import auc

    # held-out return too: on the long-horizon family the progress rewards move before success does
    rets = [float(r["eval/episode_return"]) for r in rows if "eval/episode_return" in r]
    res = {"env_steps": xs, "eval_success": ys, "final": ys[-1], "initial": ys[0], "auc": auc(xs, ys),
           "eval_return": rets, "final_return": rets[-1], "initial_return": rets[0],
           "seconds": time.time() - t, "iterations": max(r["iteration"] for r in rows),
           "greedy_final": greedy_success(os.path.join(out, "policy"), fam["env"], fam["env_kw"], fam["stop"],
                                          fam["max_new"], eval_episodes)}
    shutil.rmtree(os.path.join(out, "policy"), ignore_errors=True)
    shutil.rmtree(os.path.join(out, "checkpoints"), ignore_errors=True)
    return family, algo, seed, res


def _warm(family: str, out: str) -> tuple[str, str]:
    import torch

    torch.set_num_threads(1)
    fam = FAMILIES[family]
    w = fam["warm"]
    path = warm_start(os.path.join(out, family, "warm"), w["episodes"], w["epochs"], 1, fam["env"], fam["env_kw"],
                      fam["stop"], batch_size=w["batch_size"], noise=w["noise"], lr=w["lr"])
    return family, path


def table(results: dict, families: list[str], algos: list[str], seeds: list[int]) -> str:
    sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
    lines = []
    for fam in families:
        r = results.get(fam, {})
        warm = r.get("warm", {})
        # the warm start's sampled success: every run evaluates it first (row 0), on the same seeds
        ini = [x["initial"] for a in algos for x in r.get(a, {}).values()]
        lines += [f"**{fam}** ({FAMILIES[fam]['env']}): warm start sampled "
                  f"{statistics.mean(ini) if ini else float('nan'):.3f} (mean of the runs' first evaluation), "
                  f"greedy {warm.get('greedy', float('nan')):.3f}", "",
                  "| algo | final sampled, mean ± std | final greedy, mean ± std | AUC (sampled), mean ± std "
                  "| held-out return (sampled): first -> final, mean ± std | seeds |",
                  "|---|---|---|---|---|---|"]
        for algo in algos:
            rs = [r[algo][str(s)] for s in seeds if str(s) in r.get(algo, {})]
            if not rs:
                continue
            fin, gr, au = ([x[k] for x in rs] for k in ("final", "greedy_final", "auc"))
            ret0, ret = [x.get("initial_return") for x in rs], [x.get("final_return") for x in rs]
            returns = (f"{statistics.mean(ret0):.3f} -> {statistics.mean(ret):.3f} ± {sd(ret):.3f}"
                       if None not in ret else "n/a")  # runs saved before returns were recorded
            lines.append(f"| {algo} | {statistics.mean(fin):.3f} ± {sd(fin):.3f} | {statistics.mean(gr):.3f} ± "
                         f"{sd(gr):.3f} | {statistics.mean(au):.3f} ± {sd(au):.3f} | {returns} | {len(rs)} |")
        lines.append("")
    return "\n".join(lines)


def plot(results: dict, families: list[str], algos: list[str], seeds: list[int], png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(families), figsize=(5.5 * len(families), 3.8), squeeze=False)
    for ax, fam in zip(axes[0], families):
        for k, algo in enumerate(algos):
            runs = [results.get(fam, {}).get(algo, {}).get(str(s)) for s in seeds]
            runs = [r for r in runs if r]
            for j, r in enumerate(runs):
                ax.plot(r["env_steps"], r["eval_success"], "-", color=f"C{k}", alpha=0.35)
            if runs:  # the mean curve over seeds (evaluations fall on the same iterations)
                n = min(len(r["eval_success"]) for r in runs)
                ax.plot(runs[0]["env_steps"][:n], [statistics.mean(r["eval_success"][i] for r in runs) for i in range(n)],
                        "-o", color=f"C{k}", markersize=3, label=algo)
        ax.set_title(f"{FAMILIES[fam]['env']}", fontsize=9)
        ax.set_xlabel("env steps")
        ax.set_ylabel("held-out success (sampled)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(png) or ".", exist_ok=True)
    fig.savefig(png, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--algos", nargs="+", default=["steppo", "ppo", "grpo", "gigpo"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--budget", type=int, default=1500, help="env steps per run (the same for every algorithm)")
    ap.add_argument("--eval-episodes", type=int, default=128, help="held-out seeds per evaluation")
    ap.add_argument("--eval-every", type=int, default=4, help="iterations between held-out evaluations")
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel (one thread each)")
    ap.add_argument("--lr", type=float, default=None,
                    help="every family's learning rate (default: the family's own); --lr 0 is the control run")
    ap.add_argument("--out", default="runs/compare_families")
    ap.add_argument("--png", default="docs/img/compare_families.png")
    args = ap.parse_args()

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "results.json")
    results: dict = {}
    if os.path.exists(path):
        with open(path) as fh:
            results = json.load(fh)

    def save() -> None:
        with open(path, "w") as fh:
            json.dump(results, fh, indent=1)

    t0 = time.time()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        inits = {}
        for fut in as_completed([pool.submit(_warm, f, args.out) for f in args.families]):
            fam, init = fut.result()
            inits[fam] = init
        print(f"warm starts ready ({time.time() - t0:.0f}s)", flush=True)
        for fam in args.families:
            warm = results.setdefault(fam, {}).setdefault("warm", {})
            if "greedy" not in warm:
                f = FAMILIES[fam]
                pdir = os.path.join(inits[fam], "policy")
                warm["greedy"] = greedy_success(pdir, f["env"], f["env_kw"], f["stop"], f["max_new"], args.eval_episodes)
                save()
        jobs = [pool.submit(_job, fam, algo, seed, inits[fam],
                            os.path.join(args.out, fam, f"{algo.replace('+guard=', '_g')}_s{seed}"),
                            args.budget, args.eval_episodes, args.eval_every, args.lr)
                for seed in args.seeds for fam in args.families for algo in args.algos
                if str(seed) not in results.get(fam, {}).get(algo, {})]
        for fut in as_completed(jobs):
            fam, algo, seed, res = fut.result()
            results[fam].setdefault(algo, {})[str(seed)] = res
            save()
            print(f"{fam} {algo} seed {seed}: sampled {res['initial']:.3f} -> {res['final']:.3f}, greedy "
                  f"{results[fam]['warm']['greedy']:.3f} -> {res['greedy_final']:.3f}, auc {res['auc']:.3f} "
                  f"({res['seconds']:.0f}s, {res['iterations']} iterations)", flush=True)
    print(table(results, args.families, args.algos, args.seeds))
    plot(results, args.families, args.algos, args.seeds, args.png)
    print(f"wrote {args.png} and {path} ({time.time() - t0:.0f}s)")


if __name__ == "__main__":
    main()
