"""How far one update moves individual tokens: step ratio vs token ratio, same batch.

From one warm start, every variant collects the same batch (same policy, same sampling seed),
runs one update (``--epochs`` passes), then re-scores that batch. It reports the per-token
log-ratio ``log pi_new - log pi_old`` by advantage sign and by the token's old probability,
the approximate KL and clip fraction of the update, and the sampled success and invalid-action
rate on fixed held-out seeds before and after the update (same seeds and sampling seed).

    python bench/ratio_drift.py --init runs/compare_algos/warm --variants steppo steppo_no_step_ratio ppo

``steppo`` and ``steppo_no_step_ratio`` get the same step-GAE advantages; they differ only in
the ratio. Their gradients are equal while every ratio is 1 (first minibatch); what differs
is what each clip stops afterwards: the token ratio clips each token, the step ratio only the
step's geometric mean.
"""

from __future__ import annotations

import argparse
import json

ENV_KW = {"difficulty": "easy", "tools": ["lookup"], "compact": True}


def run(variant: str, args) -> dict:
    import torch

    from rich.console import Console
    from steppo.config import make_train_config
    from steppo.rollout import SamplingParams
    from steppo.trainer import Trainer, compute_advantages

    variant, _, guard = variant.partition("+guard=")
    algo, _, clip = variant.partition("@")
    lo, hi = (float(c) for c in clip.split("/")) if clip else (-1.0, -1.0)
    cfg = make_train_config(dict(
        algo=algo, model="tiny", init=args.init, env="stepgym/ToolUse-v0", env_kwargs=ENV_KW, seed=0, iterations=1,
        stop_strings=("</tool_call>",), episodes_per_iteration=args.episodes, num_envs=16, max_new_tokens=48,
        max_history_turns=2, lr=args.lr, temperature=args.temperature, clip_low=lo, clip_high=hi, epochs=args.epochs,
        token_guard=float(guard) if guard else -1.0,
        eval_every=0, out=f"/tmp/ratio_drift_{algo}", overwrite=True, progress=False, tensorboard=False, save_every=0,
        threads=args.threads, bootstrap_truncated=False))
    tr = Trainer(cfg, console=Console(quiet=True))
    tr.setup()

    def sample() -> tuple[float, float]:
        n = args.eval_episodes
        b = tr.collector.collect([2_000_000 + i for i in range(n)], [-1] * n,
                                 SamplingParams(48, args.temperature, 1.0, seed=5))
        inv = sum(not s.info.get("action_valid", True) for s in b.steps) / max(1, len(b.steps))
        return sum(e.success for e in b.episodes) / n, inv

    before = sample()
    seeds, groups = tr.iteration_seeds(1)
    batch = tr.collector.collect(seeds, groups, SamplingParams(48, args.temperature, 1.0, seed=1))
    steps = [s for s in batch.steps if s.response_ids]
    sv, tv = tr.critic_values(steps)
    _, adv = compute_advantages(cfg, steps, step_values=sv, token_values=tv, bootstrap={})
    adv = adv.step  # one advantage per step (the mean of its tokens' for token-level estimators)
    stats = tr.update(batch, 1)
    with torch.no_grad():
        out = tr.policy.score([s.prompt_ids for s in steps], [s.response_ids for s in steps], values="none")
    lr_tok, oldp, advs = [], [], []
    for i, s in enumerate(steps):
        n = len(s.response_ids)
        old = torch.tensor(s.logprobs)
        lr_tok.append(out.logprobs[i, :n].float() - old)
        oldp.append(old.exp())
        advs.append(torch.full((n,), float(adv[i])))
    lr_tok, oldp, advs = torch.cat(lr_tok), torch.cat(oldp), torch.cat(advs)
    groups_out = {}
    for name, m in [("A<0, p_old<0.5", (advs < 0) & (oldp < 0.5)), ("A<0, p_old>=0.5", (advs < 0) & (oldp >= 0.5)),
                    ("A>0", advs > 0)]:
        x = lr_tok[m]
        groups_out[name] = {"tokens": int(m.sum()), "mean": float(x.mean()), "min": float(x.min()),
                            "beyond_0.22": float((x.abs() > 0.22).float().mean())}
    after = sample()
    tr.collector.close()
    return {"variant": variant + (f"+guard={guard}" if guard else ""), "approx_kl": stats.get("losses/approx_kl", 0.0),
            "clip_frac": stats.get("losses/clip_frac", 0.0), "before": before, "after": after, "groups": groups_out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--init", required=True, help="warm start (a `stepgym sft` output)")
    ap.add_argument("--variants", nargs="+", default=["steppo", "steppo_no_step_ratio", "ppo"],
                    help="algo, algo@LOW/HIGH for other clips (e.g. steppo@0.0003/0.0004), and/or +guard=G for "
                         "another token guard (e.g. steppo+guard=0 for the paper's StepPO)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--episodes", type=int, default=64, help="episodes in the update's batch")
    ap.add_argument("--eval-episodes", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    res = [run(v, args) for v in args.variants]
    print(f"lr {args.lr}, {args.epochs} epochs, T={args.temperature}, {args.episodes} episodes per batch; "
          f"sampled on {args.eval_episodes} held-out seeds\n")
    print("| variant | approx KL | clip frac | mean token log-ratio, A<0 & p_old<0.5 / A<0 & p_old>=0.5 / A>0 "
          "| lowest token log-ratio | success before -> after | invalid-action rate before -> after |")
    print("|---|---:|---:|---|---:|---|---|")
    for r in res:
        g = r["groups"]
        lo = min(v["min"] for v in g.values())
        print(f"| {r['variant']} | {r['approx_kl']:.3f} | {r['clip_frac']:.3f} | "
              + " / ".join(f"{v['mean']:+.2f}" for v in g.values())
              + f" | {lo:.1f} | {r['before'][0]:.3f} -> {r['after'][0]:.3f} | {r['before'][1]:.2f} -> {r['after'][1]:.2f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
