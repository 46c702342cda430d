"""Update throughput of one process vs N gloo ranks (torch.distributed) on the same global batch.

Every configuration runs ``Trainer.update`` over the same synthetic global batch (``--episodes``
episodes of ``--steps`` steps, ``--prompt`` + ``--response`` random tokens per step, StepPO with
its shared value head): one process holds all of it, or ``torchrun`` ranks each hold their
share (:func:`steppo.distributed.shard_seeds`) and all-reduce gradients per minibatch. Reported:
the best update wall time of ``--repeats`` (after one warm-up update) and update tokens/s over
the global batch. Each configuration is ``RANKSxTHREADS`` (torch CPU threads per rank), e.g.
``1x2`` one process with 2 threads vs ``2x1`` two ranks with 1 thread each on a 2-core machine.

    python bench/ddp_speed.py --model smollm2-135m --train-layers 4 --configs 1x1 1x2 2x1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(args) -> None:
    import random

    import torch

    import tests.steppo.toy  # noqa: F401  (registers steppotest/Boxes-v0, needed by setup)
    from stepgym.core import StepRecord
    from steppo import distributed
    from steppo.config import make_train_config
    from steppo.rollout import EpisodeStats, RolloutBatch
    from steppo.trainer import Trainer

    cfg = make_train_config(dict(
        model=args.model, env="tests.steppo.toy:steppotest/Boxes-v0", env_kwargs={}, stop_strings=(),
        train_layers=args.train_layers, episodes_per_iteration=args.episodes, minibatch_size=args.minibatch_size,
        epochs=1, micro_batch_size=8, threads=args.threads, out=args.out, progress=False, tensorboard=False,
        overwrite=True, eval_episodes=1))
    trainer = Trainer(cfg)
    trainer.setup()
    d = trainer.dist
    rng = random.Random(0)  # the same global batch on every rank
    vocab = min(p.shape[0] for n, p in trainer.policy.named_parameters() if "embed" in n and p.dim() == 2)
    V = min(5000, vocab)
    steps, episodes = [], []
    for e in range(args.episodes):
        prompt = [rng.randrange(5, V) for _ in range(args.prompt)]
        for t in range(args.steps):
            resp = [rng.randrange(5, V) for _ in range(args.response)]
            steps.append(StepRecord(prompt_ids=list(prompt), response_ids=resp,
                                    logprobs=[-rng.uniform(0.5, 3.0) for _ in resp],
                                    reward=float(t == args.steps - 1 and e % 2), traj_id=args.episodes + e,
                                    step_index=t, done=t == args.steps - 1, terminated=t == args.steps - 1,
                                    truncated=False, group_id=e, info={"value": rng.uniform(-0.5, 0.5)}))
            prompt = prompt + resp + [rng.randrange(5, V) for _ in range(8)]  # the next step's prompt continues
        episodes.append(EpisodeStats(args.episodes + e, e, e, 0.0, args.steps, False, 0, True, False))
    lo, hi = distributed.shard_seeds(args.episodes, 1, d.rank, d.world)
    mine = range(args.episodes + lo, args.episodes + hi)
    shard = RolloutBatch(steps=[s for s in steps if s.traj_id in mine],
                         episodes=[e for e in episodes if e.traj_id in mine])
    times = []
    for r in range(args.repeats + 1):
        d.total(0)  # start together
        t0 = time.perf_counter()
        trainer.update(shard, 1)
        d.total(0)
        if r:
            times.append(time.perf_counter() - t0)
    tokens = sum(len(s.prompt_ids) + len(s.response_ids) for s in steps)
    if d.is_main:
        print("RESULT " + json.dumps({"update_s": min(times), "tokens": tokens,
                                      "tokens_per_s": tokens / min(times)}), flush=True)
    d.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--train-layers", type=int, default=0)
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=96)
    ap.add_argument("--response", type=int, default=24)
    ap.add_argument("--minibatch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--configs", nargs="+", default=["1x1", "1x2", "2x1"])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    base = [a for a in sys.argv[1:] if a != "--configs" and a not in args.configs]
    results = {}
    for conf in args.configs:
        ranks, threads = (int(x) for x in conf.split("x"))
        out = tempfile.mkdtemp(prefix="ddp_speed_")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
               os.path.abspath(__file__), *base, "--child", "--threads", str(threads), "--out", out]
        env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS=str(threads))
        if ranks == 1:  # one process: no torchrun, no process group (the single-process path)
            cmd = [sys.executable, os.path.abspath(__file__), *base, "--child", "--threads", str(threads), "--out", out]
            for k in ("RANK", "WORLD_SIZE"):
                env.pop(k, None)
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            print(proc.stdout[-2000:], proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{conf} failed")
        results[conf] = json.loads(line[0][7:])
        print(f"{conf:>5}: update {results[conf]['update_s']:.3f} s, {results[conf]['tokens_per_s']:.0f} tokens/s",
              flush=True)
    ref = results[args.configs[0]]["update_s"]
    print("ratios (update time vs " + args.configs[0] + "): "
          + ", ".join(f"{c} {r['update_s'] / ref:.2f}" for c, r in results.items()))


if __name__ == "__main__":
    main()
