"""Iteration time of ``stepgym train`` with and without ``--async-rollout``, side by side.

For each setting, sync and async runs alternate (``--repeats`` pairs), each a tiny-model
StepPO run of ``--iterations`` iterations. The figure is the median ``perf/iteration_s`` over
the iterations from 2 to N-1 (iteration 1 of an async run collects in the foreground, and the
last iteration also evaluates). In async mode an iteration's time is the wait for its rollout
(started in the background during the previous update) plus its update.

Settings (the envs of ``bench/ray_rollout.py``):

* ``gen-bound``: the toy Boxes env, 32-token actions: the rollout is all decoding;
* ``env-bound``: Boxes plus one sandboxed ``python`` tool call per step (a child process each),
  4-token actions: the rollout mostly waits for the env.

Usage (from the repository root):
    python bench/async_speed.py --repeats 2 --threads 1 --markdown
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SETTINGS = {
    "gen-bound": dict(env="tests.steppo.toy:steppotest/Boxes-v0", max_new_tokens=32),
    "env-bound": dict(env="bench.ray_rollout:benchray/BoxesPython-v0", max_new_tokens=4),
}


def run(setting: str, async_rollout: bool, args: argparse.Namespace) -> dict[str, float]:
    from rich.console import Console

    from steppo.config import make_train_config
    from steppo.report import read_metrics
    from steppo.trainer import Trainer

    out = tempfile.mkdtemp(prefix=f"async_{setting}_")
    cfg = make_train_config(dict(
        model="tiny", env_kwargs={"max_steps": 4}, stop_strings=(), iterations=args.iterations,
        episodes_per_iteration=args.episodes, num_envs=args.num_envs, epochs=args.epochs, minibatch_size=16,
        eval_every=0, eval_before=False, eval_episodes=4, save_every=0, out=out, progress=False, tensorboard=False,
        threads=args.threads, lr=1e-4, async_rollout=async_rollout, **SETTINGS[setting]))
    t0 = time.perf_counter()
    Trainer(cfg, console=Console(quiet=True)).train()
    wall = time.perf_counter() - t0
    rows = [r for r in read_metrics(os.path.join(out, "metrics.jsonl")) if 2 <= r["iteration"] < args.iterations]
    return {"iteration_s": statistics.median(r["perf/iteration_s"] for r in rows),
            "rollout_s": statistics.median(r["perf/rollout_s"] for r in rows),
            "update_s": statistics.median(r["perf/update_s"] for r in rows),
            "wait_s": statistics.median(r["perf/rollout_wait_s"] for r in rows),
            "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--episodes", type=int, default=16)
    ap.add_argument("--num-envs", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    print("| setting | mode | iteration s | rollout s | update s | learner waits s | run wall s | async vs sync |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for setting in args.settings:
        for rep in range(args.repeats):
            res = {}
            for mode in ((False, True) if rep % 2 == 0 else (True, False)):  # alternate the order too
                res[mode] = run(setting, mode, args)
            for mode in (False, True):
                r = res[mode]
                ratio = res[False]["iteration_s"] / r["iteration_s"]
                print(f"| {setting} (pair {rep + 1}) | {'async' if mode else 'sync'} | {r['iteration_s']:.2f} | "
                      f"{r['rollout_s']:.2f} | {r['update_s']:.2f} | {r['wait_s']:.2f} | {r['wall_s']:.1f} | "
                      f"{'' if not mode else f'{ratio:.2f}x'} |", flush=True)


if __name__ == "__main__":
    main()
