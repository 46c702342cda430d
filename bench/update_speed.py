"""Update throughput and peak memory: one StepPO update vs a bare forward+backward+AdamW.

Both run over the same token sequences (N steps of ``prompt + response`` tokens). The floor
is ``model(input_ids, labels=input_ids)`` + ``backward`` + ``AdamW.step`` on full sequences;
the StepPO update is what ``Trainer.update`` runs per minibatch (teacher-forced log-probs of
the response tokens, step ratio + clipped surrogate, value loss on the shared head, gradient
clipping, AdamW). Each variant runs in its own subprocess (peak RSS is a per-process
high-water mark), alternating, best time of ``--repeats``; memory = peak RSS above the RSS
after loading the model.

    python bench/update_speed.py --model smollm2-135m --steps 8 --prompt 100 --response 28 --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from stepgym.models import load_model

    lm, tok = load_model(args.model, seed=0)
    g = torch.Generator().manual_seed(0)
    V = lm.config.vocab_size
    prompts = [torch.randint(5, V, (args.prompt,), generator=g).tolist() for _ in range(args.steps)]
    resps = [torch.randint(5, V, (args.response,), generator=g).tolist() for _ in range(args.steps)]
    ntok = args.steps * (args.prompt + args.response)
    if args.which == "floor":
        lm.train()
        opt = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad], lr=1e-5)
        ids = torch.tensor([p + r for p, r in zip(prompts, resps)])

        def step():
            opt.zero_grad(set_to_none=True)
            out = lm(input_ids=ids, labels=ids)
            out.loss.backward()
            opt.step()
    else:
        from steppo import losses as Lf
        from steppo.policy import Policy

        pol = Policy(lm, tok, critic="shared")
        pol.train()
        params = pol.policy_parameters() + pol.critic_parameters()
        opt = torch.optim.AdamW([{"params": pol.policy_parameters()}, {"params": pol.critic_parameters(), "lr": 1e-4}],
                                lr=1e-5)
        with torch.no_grad():
            old = pol.score(prompts, resps)
        old_lp = old.logprobs.detach()
        adv = torch.randn(args.steps, generator=g)
        old_v = torch.zeros(args.steps)
        ret = torch.rand(args.steps, generator=g)

        def step():
            opt.zero_grad(set_to_none=True)
            out = pol.score(prompts, resps, values="step")
            pl, _ = Lf.step_policy_loss(out.logprobs, old_lp, out.mask, adv)
            vl, _ = Lf.value_loss(out.step_values, old_v, ret)
            (pl + 0.5 * vl).backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
    base = rss_mb()
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"which": args.which, "best_s": min(times[1:] or times), "times": times,
                      "tokens": ntok, "peak_mb_above_load": peak - base}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=100)
    ap.add_argument("--response", type=int, default=28)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--which", choices=["floor", "steppo"], default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.which:
        child(args)
        return
    res = {}
    for which in ("floor", "steppo"):
        cmd = [sys.executable, __file__, "--which", which] + [
            f"--{k}={v}" for k, v in (("model", args.model), ("steps", args.steps), ("prompt", args.prompt),
                                       ("response", args.response), ("repeats", args.repeats),
                                       ("threads", args.threads))]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        res[which] = json.loads(out.stdout.strip().splitlines()[-1])
        print(res[which], flush=True)
    from rich.console import Console
    from rich.table import Table

    f, s = res["floor"], res["steppo"]
    t = Table(title=f"update: {args.model}, {args.steps} x ({args.prompt}+{args.response}) tokens, threads={args.threads}")
    for c in ("", "time (s)", "tokens/s", "peak MB above model load"):
        t.add_column(c, justify="right")
    for name, r in (("bare fwd+bwd+AdamW", f), ("StepPO update", s)):
        t.add_row(name, f"{r['best_s']:.2f}", f"{r['tokens'] / r['best_s']:.0f}", f"{r['peak_mb_above_load']:.0f}")
    t.add_row("ratio (StepPO / floor)", "", f"{f['best_s'] / s['best_s']:.2f}x",
              f"{s['peak_mb_above_load'] / max(f['peak_mb_above_load'], 1e-9):.2f}x")
    Console().print(t)


if __name__ == "__main__":
    main()
