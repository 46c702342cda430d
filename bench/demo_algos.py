"""The README demo with each algorithm: StepPO vs token-PPO vs GRPO on SmolLM2-135M.

For each seed, the StepPO run is the README's main job itself (``stepgym train --preset demo
--seed S``), which makes the demo's warm start (128 episodes of an expert that acts at random
on 20% of its steps) in ``OUT/steppo_sS/sft``. Every other algorithm then starts from that same
warm start with the demo's RL phase unchanged (4 iterations of 48 episodes, lr 2e-4, the same
held-out seeds): ``stepgym train --preset demo --init OUT/steppo_sS/sft --algo A --seed S``.
Held-out success is sampled at T=1 on 128 seeds before and after the RL phase and paired by
seed (:func:`steppo.report.paired_gain`); the same policies are then evaluated greedily on the
same seeds (``--greedy``).

Runs go one after the other (each uses ``--threads`` cores); a finished run is kept and
skipped when the command is run again. Writes ``OUT/results.json`` and prints a markdown
table (per run, then mean ± std per algorithm)::

    python bench/demo_algos.py --algos steppo ppo grpo --seeds 0 1 2 --out runs/demo_algos --greedy

The lr (2e-4) and the minibatch size are the ones chosen for StepPO (docs/benchmarks.md,
"Third attempt"); the other algorithms get them as they are, not tuned.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time


def _run(cmd: list[str], log: str) -> float:
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}; see {log}")
    return time.perf_counter() - t0


def _evals(out: str) -> list[dict]:
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return [r for r in rows if "eval/successes" in r]


def _greedy(policy: str, episodes: int, threads: int) -> float:
    """Greedy held-out success of ``policy`` on the demo's held-out seeds."""
    from rich.console import Console

    from steppo.config import PRESET_EXTRAS, PRESETS, make_train_config
    from steppo.trainer import Trainer

    p = {k: v for k, v in PRESETS["demo"].items() if k not in PRESET_EXTRAS}
    with tempfile.TemporaryDirectory() as tmp:  # the trainer wants an output folder; nothing in it is kept
        p.update(init=policy, out=tmp, overwrite=True, eval_episodes=episodes, eval_temperature=0.0, progress=False,
                 threads=threads, tensorboard=False)
        tr = Trainer(make_train_config(p), console=Console(quiet=True))
        tr.setup()
        return float(tr.evaluate()["eval/success_rate"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--algos", nargs="+", default=["steppo", "ppo", "grpo"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--greedy", action="store_true", help="also evaluate each warm start and policy greedily")
    ap.add_argument("--out", default="runs/demo_algos")
    ap.add_argument("--extra", default="", help="more `stepgym train` options for every run, e.g. a smaller model "
                                                 "for a quick check: --extra '--model tiny --sft-episodes 8'")
    args = ap.parse_args()
    if "steppo" not in args.algos:
        raise SystemExit("--algos must include steppo: its run makes each seed's warm start")
    from steppo.report import paired_gain

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "results.json")
    results: dict = json.load(open(path)) if os.path.exists(path) else {}
    base = ["stepgym", "train", "--preset", "demo", "--threads", str(args.threads), "--no-progress",
            *shlex.split(args.extra)]
    for seed in args.seeds:
        for algo in ["steppo"] + [a for a in args.algos if a != "steppo"]:
            key = f"{algo}_s{seed}"
            out = os.path.join(args.out, key)
            if key not in results or (args.greedy and "greedy_after" not in results[key]):
                if key not in results:
                    cmd = base + ["--seed", str(seed), "--out", out, "--overwrite"]
                    if algo != "steppo":
                        cmd += ["--init", os.path.join(args.out, f"steppo_s{seed}", "sft"), "--algo", algo]
                    print("$ " + " ".join(cmd), flush=True)
                    wall = _run(cmd, out + ".log")
                    ev = _evals(out)
                    g = paired_gain(ev[0]["eval/successes"], ev[-1]["eval/successes"])
                    results[key] = {"algo": algo, "seed": seed, "wall_s": round(wall, 1), **g}
                if args.greedy:
                    warm = os.path.join(args.out, f"steppo_s{seed}", "sft", "policy")
                    results[key]["greedy_before"] = _greedy(warm, 128, args.threads)
                    results[key]["greedy_after"] = _greedy(os.path.join(out, "policy"), 128, args.threads)
                with open(path, "w") as fh:
                    json.dump(results, fh, indent=1)
            r = results[key]
            print(f"{key}: {r['before']:.2f} -> {r['after']:.2f}, gain {r['gain']:+.2f} "
                  f"[{r['gain_low']:+.2f}, {r['gain_high']:+.2f}]", flush=True)
    print("\n| algo | seed | held-out T=1: before -> after | gain [95%] (seeds gained / lost) | greedy before -> after | wall |")
    print("|---|---:|---|---|---|---:|")
    for key, r in results.items():
        greedy = f"{r['greedy_before']:.3f} -> {r['greedy_after']:.3f}" if "greedy_after" in r else ""
        wall = f"{r['wall_s']:.0f} s" if r.get("wall_s") is not None else "(not timed)"
        print(f"| {r['algo']} | {r['seed']} | {r['before']:.3f} -> {r['after']:.3f} | {r['gain']:+.3f} "
              f"[{r['gain_low']:+.3f}, {r['gain_high']:+.3f}] ({r['gained']} / {r['lost']}) | {greedy} | {wall} |")
    print("\n| algo | seeds | after, mean ± std | gain, mean ± std | seeds whose gain interval excludes 0 |")
    print("|---|---:|---|---|---:|")
    for algo in args.algos:
        rs = [r for r in results.values() if r["algo"] == algo]
        if not rs:
            continue
        after = [r["after"] for r in rs]
        gain = [r["gain"] for r in rs]
        sd = (lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0)
        print(f"| {algo} | {len(rs)} | {statistics.mean(after):.3f} ± {sd(after):.3f} | "
              f"{statistics.mean(gain):+.3f} ± {sd(gain):.3f} | {sum(r['gain_low'] > 0 for r in rs)} of {len(rs)} |")


if __name__ == "__main__":
    sys.exit(main())
