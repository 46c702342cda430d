"""How micro-batch chunking changes the time of one StepPO update on real rollouts.

Collects one iteration's rollout (``--episodes`` episodes of ToolUse-v0 easy, ``lookup`` only,
compact, 4-step limit: the setting of ``bench/vs_trl.py``) with ``--model``, then times
``Trainer.update`` on that same batch for each ``--micro-batch-tokens`` value, alternating
over ``--repeats`` rounds. Every update starts from the same weights and a fresh optimizer, so
each does the same arithmetic; only the grouping of sequences into forward/backward chunks
differs. Reports the best and median time, the number of chunks and their padded tokens.
``--unsorted`` adds a variant that keeps the shuffled order and caps chunks by
``--micro-batch-size`` steps only (the grouping before length-sorted chunks).

    python bench/update_chunks.py --model runs/demo/sft/policy --threads 2 --unsorted --micro-batch-tokens 0 1024
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="'tiny', 'smollm2-135m' or an HF id/path")
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--micro-batch-size", type=int, default=8, help="steps per chunk (the other cap)")
    ap.add_argument("--micro-batch-tokens", type=int, nargs="+", default=[0, 512, 1024, 2048])
    ap.add_argument("--unsorted", action="store_true", help="also time the unsorted, step-capped grouping")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import numpy as np
    import torch
    from rich.console import Console
    from rich.table import Table

    from steppo.batching import pack_steps
    from steppo.config import StepPOConfig
    from steppo.rollout import SamplingParams
    from steppo import trainer as trainer_mod
    from steppo.trainer import Trainer

    sorted_plan = trainer_mod.plan_micro_batches

    def unsorted_plan(units, max_rows, max_tokens=0):  # shuffled order, step cap only
        chunks: list[list[int]] = [[]]
        rows = 0
        for u, (r, _lens) in enumerate(units):
            if chunks[-1] and rows + r > max_rows:
                chunks.append([])
                rows = 0
            chunks[-1].append(u)
            rows += r
        return chunks

    variants = (["unsorted"] if args.unsorted else []) + [str(b) for b in args.micro_batch_tokens]

    def use(v: str) -> None:
        trainer_mod.plan_micro_batches = unsorted_plan if v == "unsorted" else sorted_plan
        tr.cfg.micro_batch_tokens = 0 if v == "unsorted" else int(v)

    torch.manual_seed(args.seed)
    cfg = StepPOConfig(
        model=args.model, env="stepgym/ToolUse-v0",
        env_kwargs={"difficulty": "easy", "tools": ["lookup"], "compact": True, "max_steps": 4},
        episodes_per_iteration=args.episodes, num_envs=args.episodes, max_new_tokens=args.max_new_tokens,
        epochs=1, minibatch_size=args.episodes * 4, micro_batch_size=args.micro_batch_size,
        out=tempfile.mkdtemp(prefix="update_chunks_"), overwrite=True, progress=False, tensorboard=False,
        eval_before=False, eval_every=0, save_every=0, threads=args.threads, seed=args.seed)
    tr = Trainer(cfg, console=Console(quiet=True))
    tr.setup()
    seeds, groups = tr.iteration_seeds(1)
    batch = tr.collector.collect(seeds, groups, SamplingParams(args.max_new_tokens, 1.0, 1.0, seed=args.seed),
                                 traj_id_start=0)
    steps = [s for s in batch.steps if s.response_ids]
    seqs, _ = pack_steps([s.prompt_ids for s in steps], [s.response_ids for s in steps])
    real = sum(len(q) for q in seqs)
    print(f"{len(steps)} steps, {len(seqs)} packed sequences, {real} tokens "
          f"({sum(len(s.response_ids) for s in steps)} response tokens)", flush=True)
    weights = copy.deepcopy(tr.policy.state_dict())
    opt_state = copy.deepcopy(tr.optimizer.state_dict())

    def layout(v: str) -> tuple[int, int]:
        use(v)
        chunks = padded = 0
        for _mb, micro in tr.plan_minibatches(steps, np.random.default_rng(0)):
            for idx, _w in micro:
                sq, _ = pack_steps([steps[i].prompt_ids for i in idx], [steps[i].response_ids for i in idx])
                chunks += 1
                padded += len(sq) * max(len(q) for q in sq)
        return chunks, padded

    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.repeats):
        for v in variants:
            tr.policy.load_state_dict(weights)
            tr.optimizer.load_state_dict(opt_state)
            use(v)
            t0 = time.perf_counter()
            tr.update(batch, 1)
            times[v].append(time.perf_counter() - t0)
            print(f"micro_batch_tokens={v}: {times[v][-1]:.2f} s", flush=True)
    base = min(times[variants[0]])
    t = Table(title=f"one StepPO update, {args.model}, {args.episodes} episodes, threads={args.threads}")
    for c in ("micro_batch_tokens", "chunks", "padded tokens", "best s", "median s",
              f"speed vs {variants[0]}"):
        t.add_column(c, justify="right")
    for v in variants:
        n, pad = layout(v)
        t.add_row(v, str(n), str(pad), f"{min(times[v]):.2f}", f"{statistics.median(times[v]):.2f}",
                  f"{base / min(times[v]):.2f}x")
    Console().print(t)


if __name__ == "__main__":
    main()
