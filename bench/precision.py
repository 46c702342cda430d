"""float32 vs bfloat16 on this machine: update and sampling speed, and how far the losses drift.

Three ways to run a policy in bf16 are compared with float32, side by side in one process on
the same synthetic batch (alternating modes each repeat):

* ``float32``: the reference.
* ``autocast``: float32 weights and AdamW state, forward/backward under ``torch.autocast``
  in bfloat16 (what ``--dtype bfloat16`` does in ``stepgym train``).
* ``bf16-weights``: the model cast to bfloat16, AdamW on bf16 parameters (so its state is
  bf16 too): the memory-lean option.

For each: update tokens/s (teacher-forced score + backward + AdamW step), sampled tokens/s
(the trainer's :class:`~steppo.sampling.Sampler`, KV cache), the loss of the first step
against float32's, and the loss after ``--steps`` optimizer steps at two learning rates
(a small one shows whether bf16 weights still move).

Usage:
    python bench/precision.py --model tiny --repeats 3 --markdown
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from steppo.models import load_model  # noqa: E402
from steppo.policy import Policy, adamw  # noqa: E402
from steppo.sampling import Sampler  # noqa: E402

MODES = ("float32", "autocast", "bf16-weights")


def make_policy(model: str, mode: str) -> Policy:
    lm, tok = load_model(model, seed=0)
    if mode == "bf16-weights":
        lm = lm.to(torch.bfloat16)
    return Policy(lm, tok, critic="none", autocast_dtype=torch.bfloat16 if mode == "autocast" else None)


def batch(n: int, prompt: int, response: int, vocab: int) -> tuple[list[list[int]], list[list[int]]]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab - 1, (n, prompt + response), generator=g).tolist()
    return [r[:prompt] for r in ids], [r[prompt:] for r in ids]


def nll(pol: Policy, prompts: list[list[int]], responses: list[list[int]]) -> torch.Tensor:
    out = pol.score(prompts, responses, pack=False)
    return -(out.logprobs * out.mask).sum() / out.mask.sum()


def train_losses(model: str, mode: str, data, steps: int, lr: float) -> list[float]:
    torch.manual_seed(0)
    pol = make_policy(model, mode)
    pol.train()
    opt = adamw(pol.policy_parameters(), lr=lr)
    losses = []
    for _ in range(steps + 1):
        opt.zero_grad(set_to_none=True)
        loss = nll(pol, *data)
        losses.append(float(loss.detach()))
        loss.backward()
        opt.step()
    return losses


def time_update(pol: Policy, opt: torch.optim.Optimizer, data, tokens: int) -> float:
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    nll(pol, *data).backward()
    opt.step()
    return tokens / (time.perf_counter() - t0)


def time_sampling(sampler: Sampler, prompts: list[list[int]], new_tokens: int) -> float:
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    gens = sampler.generate(prompts, max_new_tokens=new_tokens, generator=g)
    return sum(len(x.response_ids) for x in gens) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--response", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--speed-only", action="store_true", help="skip the loss comparison (the training runs)")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    vocab = len(load_model(args.model, seed=0)[1])
    data = batch(args.rows, args.prompt, args.response, vocab)
    tokens = args.rows * (args.prompt + args.response)
    pols = {m: make_policy(args.model, m) for m in MODES}
    opts = {m: adamw(pols[m].policy_parameters(), lr=0.0) for m in MODES}  # lr 0: the weights stay put
    samplers = {m: Sampler(pols[m], stop_strings=()) for m in MODES}
    upd: dict[str, list[float]] = {m: [] for m in MODES}
    gen: dict[str, list[float]] = {m: [] for m in MODES}
    for m in MODES:  # warm-up
        time_update(pols[m], opts[m], data, tokens)
        time_sampling(samplers[m], data[0], 4)
    for _ in range(args.repeats):
        for m in MODES:  # alternating: the machine's load hits every mode alike
            upd[m].append(time_update(pols[m], opts[m], data, tokens))
            gen[m].append(time_sampling(samplers[m], data[0], args.response))
    if args.speed_only:
        print("| mode | update tok/s | vs fp32 | sampled tok/s | vs fp32 |")
        print("|---|---:|---:|---:|---:|")
        for m in MODES:
            u, g = statistics.median(upd[m]), statistics.median(gen[m])
            print(f"| {m} | {u:.0f} | {u / statistics.median(upd['float32']):.2f}x | {g:.0f} | "
                  f"{g / statistics.median(gen['float32']):.2f}x |")
        return
    rows = []
    ref: dict[float, list[float]] = {}
    for m in MODES:
        first = float(nll(make_policy(args.model, m), *data).detach())
        curves = {lr: train_losses(args.model, m, data, args.steps, lr) for lr in (1e-3, 1e-5)}
        if m == "float32":
            ref = curves
            ref_first = first
        rows.append((m, statistics.median(upd[m]), statistics.median(gen[m]), first, abs(first - ref_first),
                     curves[1e-3][-1], abs(curves[1e-3][-1] - ref[1e-3][-1]),
                     curves[1e-5][0] - curves[1e-5][-1], ref[1e-5][0] - ref[1e-5][-1]))
    base_u, base_g = rows[0][1], rows[0][2]
    head = ("| mode | update tok/s | vs fp32 | sampled tok/s | vs fp32 | loss step 0 | abs diff vs fp32 | "
            f"loss after {args.steps} steps (lr 1e-3) | abs diff vs fp32 | loss drop, lr 1e-5 (fp32's) |")
    print(head)
    print("|---|" + "---:|" * 9)
    for m, u, g, first, d0, last, dl, drop, ref_drop in rows:
        print(f"| {m} | {u:.0f} | {u / base_u:.2f}x | {g:.0f} | {g / base_g:.2f}x | {first:.4f} | {d0:.2e} | "
              f"{last:.4f} | {dl:.2e} | {drop:.2e} ({ref_drop:.2e}) |")


if __name__ == "__main__":
    main()
