"""One StepPO iteration with SmolLM2-135M on ToolUse-v0 easy: 8 episodes, rollout + update, timed.

    python bench/smollm2_iter.py --threads 2                       # the base model
    python bench/smollm2_iter.py --threads 2 --init runs/demo/sft  # after the demo's warm start

Prints episodes, env steps, generated tokens, rollout / update / total seconds and
episodes per second. ``--compact`` uses the short observation of the demo preset.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--init", default="")
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--train-layers", type=int, default=0)
    ap.add_argument("--compact", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from rich.console import Console

    from steppo.config import StepPOConfig
    from steppo.trainer import Trainer

    env_kw = {"difficulty": "easy"}
    if args.compact:
        env_kw.update({"tools": ["lookup"], "compact": True})
    cfg = StepPOConfig(model=args.model, init=args.init, env_kwargs=env_kw, iterations=2, episodes_per_iteration=args.episodes,
                       num_envs=args.episodes, max_new_tokens=args.max_new_tokens, epochs=1, minibatch_size=args.episodes * 10,
                       micro_batch_size=8, train_layers=args.train_layers, out="runs/bench_smollm2_iter", overwrite=True,
                       progress=False, tensorboard=False, eval_before=False, threads=args.threads)
    tr = Trainer(cfg, console=Console(quiet=True))
    t0 = time.perf_counter()
    tr.setup()
    t_setup = time.perf_counter() - t0
    t = time.perf_counter()
    row = tr.run_iteration(1)
    total = time.perf_counter() - t
    res = {
        "model": args.model, "init": args.init or None, "threads": args.threads, "episodes": args.episodes,
        "env_steps": tr.env_steps, "success_rate": row["charts/success_rate"],
        "invalid_action_rate": row["charts/invalid_action_rate"],
        "generated_tokens_per_step": row["charts/response_tokens"], "rollout_s": row["perf/rollout_s"],
        "generation_tokens_per_s": row["perf/tokens_per_s"], "update_s": row["perf/update_s"],
        "update_tokens_per_s": row["perf/update_tokens_per_s"], "iteration_s": total,
        "episodes_per_s": args.episodes / total, "setup_s": t_setup,
    }
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
