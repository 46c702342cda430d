"""Rollout throughput: the in-process generator vs generation on a local `stepgym serve` server.

Episodes per second of a collection (the median of ``--repeats`` timed collections after one
warm-up) with the tiny model on the toy Boxes env, side by side in one run:

* ``local``: :class:`~steppo.rollout.LocalGenerator` (the trainer's sampler, per-episode KV caches);
* ``local, no KV reuse``: the same, every step prefilling its whole prompt (as the server does);
* ``server``: :class:`~steppo.remote_generator.OpenAIServerGenerator` against a ``stepgym serve
  --model tiny`` subprocess on 127.0.0.1: one ``/v1/completions`` request per prompt (token ids
  in, token ids and log-probs out), ``--num-envs`` in flight, batched by the server.

It also times the full-weight sync (write the weights, ``POST /update_weights_from_disk``).
Both processes get ``--threads`` torch threads. Run from the repository root:

    python bench/remote_generator.py --episodes 32 --repeats 3 --markdown
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

TOY = "tests.steppo.toy:steppotest/Boxes-v0"


def start_server(threads: int, batch: int) -> tuple[subprocess.Popen, str]:
    """A `stepgym serve --model tiny` subprocess and its base URL."""
    proc = subprocess.Popen([sys.executable, "-m", "stepgym.cli", "serve", "--model", "tiny", "--name", "tiny",
                             "--port", "0", "--threads", str(threads), "--batch-size", str(batch), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    for line in proc.stdout:
        m = re.search(r"at (http://127\.0\.0\.1:\d+/v1)", line)
        if m:
            return proc, m.group(1)
    raise SystemExit("the server did not start")


def episodes_per_s(collector, n: int, params, repeats: int) -> tuple[float, list[float]]:
    collector.collect(list(range(n)), list(range(n)), params)  # warm-up
    rates = []
    for r in range(repeats):
        t0 = time.perf_counter()
        batch = collector.collect([1000 * (r + 1) + k for k in range(n)], list(range(n)), params)
        rates.append(len(batch.episodes) / (time.perf_counter() - t0))
    return statistics.median(rates), rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--episodes", type=int, default=32)
    ap.add_argument("--num-envs", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import tests.steppo.toy  # noqa: F401  (registers the toy env)
    from stepgym.models import load_model
    from steppo.policy import Policy
    from steppo.remote_generator import OpenAIServerGenerator
    from steppo.rollout import ChatPromptBuilder, InProcessCollector, LocalGenerator, SamplingParams, make_env_fn
    from steppo.sampling import Sampler

    proc, url = start_server(args.threads, args.num_envs)
    try:
        lm, tok = load_model("tiny", seed=0)
        policy = Policy(lm, tok, critic="none").eval()
        sampler = Sampler(policy, stop_strings=())
        env_fn = make_env_fn(TOY, {})
        params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=1.0, seed=0)
        remote = OpenAIServerGenerator("tiny", url, tok, eos_ids=sampler.eos_ids, concurrency=args.num_envs)
        gens = {
            "local": LocalGenerator(sampler, batch_size=args.num_envs),
            "local, no KV reuse": LocalGenerator(sampler, batch_size=args.num_envs, reuse_cache=False),
            "server": remote,
        }
        results = {}
        for name, gen in gens.items():
            col = InProcessCollector(env_fn, gen, ChatPromptBuilder(tok), args.num_envs)
            results[name] = episodes_per_s(col, args.episodes, params, args.repeats)
            col.close()
        with tempfile.TemporaryDirectory() as d:
            syncs = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                remote.sync_weights(policy, d)
                syncs.append(time.perf_counter() - t0)
        remote.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    base = results["local"][0]
    if args.markdown:
        print(f"| generator | episodes/s (median of {args.repeats}) | runs | vs local |")
        print("|---|---:|---|---:|")
        for name, (med, rates) in results.items():
            print(f"| {name} | {med:.2f} | {', '.join(f'{r:.2f}' for r in rates)} | {med / base:.2f}x |")
        print(f"\nfull-weight sync (write + POST /update_weights_from_disk): median "
              f"{statistics.median(syncs) * 1000:.0f} ms ({', '.join(f'{s * 1000:.0f}' for s in syncs)})")
    else:
        for name, (med, rates) in results.items():
            print(f"{name:22s} {med:7.2f} episodes/s  {rates}")
        print(f"sync {statistics.median(syncs):.3f}s")


if __name__ == "__main__":
    main()
