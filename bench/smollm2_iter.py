"""One StepPO iteration with SmolLM2-135M on ToolUse-v0 easy: 8 episodes, rollout + update, timed.

    python bench/smollm2_iter.py --threads 2                       # the base model
    python bench/smollm2_iter.py --threads 2 --init runs/demo/sft  # after the demo's warm start

Prints episodes, env steps, generated tokens, rollout / update / total seconds and
episodes per second. ``--compact`` uses the short observation of the demo preset. By
default it runs the trainer as shipped and then without the per-episode KV cache and
trajectory packing (``--variants default no-reuse``), same seeds, one after the other.
``stride2`` is the default with ``--history-stride 2``: old turns leave two at a time, so the
prompt's start stays the same for two steps (a different prompt, hence different episodes:
compare per env step).
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
    ap.add_argument("--variants", nargs="+", default=["default", "no-reuse"], choices=["default", "no-reuse", "stride2"],
                    help="default: the trainer as shipped; no-reuse: without the per-episode KV cache "
                         "(--no-kv-reuse) and without trajectory packing (--no-pack-trajectories); "
                         "; stride2: the default with --history-stride 2; run side by side, same seeds")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from rich.console import Console

    from steppo.config import StepPOConfig
    from steppo.trainer import Trainer

    env_kw = {"difficulty": "easy"}
    if args.compact:
        env_kw.update({"tools": ["lookup"], "compact": True})
    results = []
    for variant in args.variants:
        reuse = variant != "no-reuse"
        cfg = StepPOConfig(model=args.model, init=args.init, env_kwargs=env_kw, iterations=2,
                           episodes_per_iteration=args.episodes, num_envs=args.episodes,
                           max_new_tokens=args.max_new_tokens, epochs=1, minibatch_size=args.episodes * 10,
                           micro_batch_size=8, train_layers=args.train_layers, out="runs/bench_smollm2_iter",
                           overwrite=True, progress=False, tensorboard=False, eval_before=False, threads=args.threads,
                           kv_reuse=reuse, pack_trajectories=reuse, history_stride=2 if variant == "stride2" else 1)
        tr = Trainer(cfg, console=Console(quiet=True))
        t0 = time.perf_counter()
        tr.setup()
        t_setup = time.perf_counter() - t0
        t = time.perf_counter()
        row = tr.run_iteration(1)
        total = time.perf_counter() - t
        res = {
            "variant": variant, "model": args.model, "init": args.init or None, "threads": args.threads,
            "episodes": args.episodes, "env_steps": tr.env_steps, "success_rate": row["charts/success_rate"],
            "invalid_action_rate": row["charts/invalid_action_rate"],
            "generated_tokens_per_step": row["charts/response_tokens"], "rollout_s": row["perf/rollout_s"],
            "generation_tokens_per_s": row["perf/tokens_per_s"], "update_s": row["perf/update_s"],
            "update_step_tokens_per_s": row["perf/update_tokens_per_s"], "iteration_s": total,
            "episodes_per_s": args.episodes / total, "setup_s": t_setup,
            "prompt_tokens_reused": tr.sampler.reused_tokens, "prompt_tokens_prefilled": tr.sampler.prefilled_tokens,
        }
        print(json.dumps(res, indent=1), flush=True)
        results.append(res)
        del tr
    print("| variant | env steps | prompt tokens from caches | rollout s | generated tok/s | update s | iteration s "
          "| s per env step | episodes/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        hit = r["prompt_tokens_reused"] / max(1, r["prompt_tokens_reused"] + r["prompt_tokens_prefilled"])
        print(f"| {r['variant']} | {r['env_steps']} | {hit:.0%} | {r['rollout_s']:.1f} | "
              f"{r['generation_tokens_per_s']:.1f} | {r['update_s']:.1f} | {r['iteration_s']:.1f} | "
              f"{r['iteration_s'] / max(1, r['env_steps']):.2f} | {r['episodes_per_s']:.3f} |")


if __name__ == "__main__":
    main()
