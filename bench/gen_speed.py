"""Generation speed: the trainer's sampler vs Hugging Face ``generate(..., output_scores=True)``.

Same model, same prompts, same sampling (temperature 1, no top-k/top-p), same stopping (end
of turn or ``</tool_call>``), same ``max_new_tokens``; generated tokens/s counts the tokens
each row really produced up to its stop. Everything runs side by side in one process,
alternating, best of ``--repeats``. Two workloads:

* ``single``: one call on the first-step prompts of ToolUse-v0 easy (chat template), with
  every row generating exactly ``--max-new-tokens`` (no stop: HF ``min_new_tokens`` = max),
  so both engines do the same work whatever they sample.
* ``rollout``: what the trainer really generates. ``--batch`` episodes of ToolUse-v0 easy
  (at most ``--episode-steps`` steps, history kept in the prompt) are collected with the
  trainer's collector and sampler, which keeps each episode's KV cache between steps. Every
  generation call's prompts are recorded and then replayed, the same batches in the same
  order, through HF ``generate`` and through the sampler without the cache.

    python bench/gen_speed.py --model smollm2-135m --batch 8 16 --threads 2

``--speculate K`` turns on the sampler's prompt-lookup speculative decoding and adds the same
rollout without it, side by side. ``--model`` also takes a policy folder, e.g. the README
demo's warm start ``runs/demo/sft/policy``, which writes tool calls as the trainer's policy does.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def prompts_for(tok, n: int, difficulty: str = "easy") -> list[list[int]]:
    import stepgym  # noqa: F401
    from steppo.rollout import ChatPromptBuilder, make_env_fn

    env = make_env_fn("stepgym/ToolUse-v0", {"difficulty": difficulty})()
    pb = ChatPromptBuilder(tok)
    out = []
    for s in range(n):
        obs, _ = env.reset(seed=s)
        out.append(pb.build([obs], [])[0])
    return out


def run_rollout(sampler, tok, batch, max_new, seed, episode_steps, difficulty="easy"):
    """Collect ``batch`` episodes with the trainer's collector; returns (tokens, seconds, calls)."""
    from steppo.rollout import ChatPromptBuilder, InProcessCollector, LocalGenerator, SamplingParams, make_env_fn

    class Recording(LocalGenerator):
        def generate(self, prompts, params, sessions=None):
            self.calls.append([list(p) for p in prompts])
            return super().generate(prompts, params, sessions=sessions)

    gen = Recording(sampler, batch_size=batch)
    gen.calls = []
    env_fn = make_env_fn("stepgym/ToolUse-v0", {"difficulty": difficulty, "max_steps": episode_steps})
    col = InProcessCollector(env_fn, gen, ChatPromptBuilder(tok, max_history_turns=episode_steps), num_envs=batch)
    out = col.collect(list(range(batch)), list(range(batch)), SamplingParams(max_new_tokens=max_new, seed=seed))
    col.close()
    return out.generated_tokens, out.generation_s, gen.calls


def run_ours(sampler, prompts, max_new, seed):
    g = torch.Generator().manual_seed(seed)
    t = time.perf_counter()
    gens = sampler.generate(prompts, max_new_tokens=max_new, temperature=1.0, generator=g)
    dt = time.perf_counter() - t
    return sum(len(x.response_ids) for x in gens), dt


def run_hf(model, tok, prompts, max_new, seed, eos_ids, stop_strings, fixed=False):
    B = len(prompts)
    S = max(len(p) for p in prompts)
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos_ids[0]
    ids = torch.full((B, S), pad, dtype=torch.long)
    att = torch.zeros((B, S), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, S - len(p):] = torch.tensor(p)
        att[i, S - len(p):] = 1
    torch.manual_seed(seed)
    t = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=att, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                             max_new_tokens=max_new, output_scores=True, return_dict_in_generate=True,
                             min_new_tokens=max_new if fixed else None,
                             pad_token_id=pad, eos_token_id=eos_ids, stop_strings=list(stop_strings) or None,
                             tokenizer=tok)
    dt = time.perf_counter() - t
    gen = out.sequences[:, S:]
    if fixed:
        return gen.numel(), dt
    n = 0
    for row in gen.tolist():
        for k, tkn in enumerate(row):
            n += 1
            if tkn in eos_ids:
                break
            if stop_strings and any(s in tok.decode(row[: k + 1]) for s in stop_strings):
                break
    return n, dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stop", nargs="*", default=["</tool_call>"])
    ap.add_argument("--mode", choices=["single", "rollout", "both"], default="both")
    ap.add_argument("--episode-steps", type=int, default=4, help="step limit of the rollout's episodes")
    ap.add_argument("--speculate", type=int, default=0,
                    help="the sampler's prompt-lookup draft length (`--speculate` of stepgym train; 0 = off)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from rich.console import Console
    from rich.table import Table

    from stepgym.models import load_model
    from steppo.policy import Policy, end_of_turn_ids
    from steppo.sampling import Sampler

    lm, tok = load_model(args.model, seed=0)
    lm.eval()
    pol = Policy(lm, tok, critic="none")
    eos = end_of_turn_ids(tok, lm)
    sampler = Sampler(pol, stop_strings=args.stop, eos_ids=eos, speculate=args.speculate)
    plain_sampler = Sampler(pol, stop_strings=args.stop, eos_ids=eos)  # no speculation
    # never stops before max_new_tokens
    fixed_sampler = Sampler(pol, stop_strings=(), eos_ids=[], speculate=args.speculate)
    if args.mode in ("single", "both"):
        table = Table(title=f"one call, fixed length: {args.model}, max_new_tokens={args.max_new_tokens}, threads={args.threads}")
        for col in ("batch", "prompt tokens (mean)", "HF generate tok/s", "steppo sampler tok/s", "speed-up"):
            table.add_column(col, justify="right")
        for B in args.batch:
            prompts = prompts_for(tok, B)
            run_ours(fixed_sampler, prompts[:2], 4, 0)  # warm-up
            run_hf(lm, tok, prompts[:2], 4, 0, eos, args.stop, fixed=True)
            ours, hf = [], []
            for r in range(args.repeats):
                n, dt = run_hf(lm, tok, prompts, args.max_new_tokens, r, eos, args.stop, fixed=True)
                hf.append(n / dt)
                n, dt = run_ours(fixed_sampler, prompts, args.max_new_tokens, r)
                assert n == len(prompts) * args.max_new_tokens
                ours.append(n / dt)
            o, h = max(ours), max(hf)
            table.add_row(str(B), f"{statistics.mean(len(p) for p in prompts):.0f}", f"{h:.1f}", f"{o:.1f}",
                          f"{o / h:.2f}x")
            print(f"single, batch {B}: hf {['%.1f' % x for x in hf]} ours {['%.1f' % x for x in ours]}", flush=True)
        Console().print(table)
    if args.mode in ("rollout", "both"):
        table = Table(title=f"rollout ({args.episode_steps}-step episodes of ToolUse-v0 easy): {args.model}, "
                            f"max_new_tokens={args.max_new_tokens}, threads={args.threads}")
        cols = ["batch", "calls", "prompt tokens (mean)", "HF generate tok/s", "sampler, no cache tok/s",
                "sampler in rollout tok/s", "speed-up vs HF"]
        if args.speculate:
            cols[5:5] = ["sampler in rollout, no speculation tok/s"]
            cols[-1] = f"speed-up vs HF (speculate {args.speculate})"
            cols.append("speed-up vs HF, no speculation")
        for col in cols:
            table.add_column(col, justify="right")
        for B in args.batch:
            best = {"hf": 0.0, "plain": 0.0, "ours": 0.0, "nospec": 0.0}
            for r in range(args.repeats):
                rates = {}
                if args.speculate:  # the same rollout without speculation, side by side
                    n, dt, _ = run_rollout(plain_sampler, tok, B, args.max_new_tokens, r, args.episode_steps)
                    rates["nospec"] = n / dt
                n, dt, calls = run_rollout(sampler, tok, B, args.max_new_tokens, r, args.episode_steps)
                rates["ours"] = n / dt
                for name in ("hf", "plain"):
                    n_tot, t_tot = 0, 0.0
                    for k, prompts in enumerate(calls):
                        if name == "hf":
                            n, dt = run_hf(lm, tok, prompts, args.max_new_tokens, 1000 * r + k, eos, args.stop)
                        else:
                            n, dt = run_ours(plain_sampler, prompts, args.max_new_tokens, 1000 * r + k)
                        n_tot, t_tot = n_tot + n, t_tot + dt
                    rates[name] = n_tot / t_tot
                print(f"rollout, batch {B}, repeat {r}: " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items())
                      + f" (drafts accepted so far: {sampler.accepted_tokens} of {sampler.drafted_tokens})", flush=True)
                best = {k: max(best[k], rates[k]) for k in best}
            mean_prompt = statistics.mean(len(p) for c in calls for p in c)
            row = [str(B), str(len(calls)), f"{mean_prompt:.0f}", f"{best['hf']:.1f}", f"{best['plain']:.1f}",
                   f"{best['ours']:.1f}", f"{best['ours'] / best['hf']:.2f}x"]
            if args.speculate:
                row[5:5] = [f"{best['nospec']:.1f}"]
                row.append(f"{best['nospec'] / best['hf']:.2f}x")
            table.add_row(*row)
        Console().print(table)


if __name__ == "__main__":
    main()
