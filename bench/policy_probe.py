"""What a ToolUse-v0 policy does: success by temperature, kinds of failure, carried token ids.

    python bench/policy_probe.py runs/compare_algos/warm/policy
    python bench/policy_probe.py runs/demo/sft/policy --env-kwargs '{"difficulty": "easy", "tools": ["lookup"], "compact": true, "max_steps": 4}' --max-new-tokens 40

For one policy directory (a `stepgym sft` or `stepgym train` output's ``policy/``), on held-out
seeds from 1,000,000:

1. success and invalid-action rate, greedy and sampled at T = 0.3, 0.7 and 1.0;
2. the kinds of greedy failure: a wrong entity name in the lookup, the right lookup then a
   miscopied value, or no valid answer before the step limit;
3. in one sampled rollout (T=0.7), how many prompts continue the previous step's exact ids
   (prompt + sampled response), and how many of those differ from a fresh tokenisation of
   the same text: the steps that carrying the sampled ids keeps cacheable and packable.
"""

from __future__ import annotations

import argparse
import collections
import json

ENV_KW = {"difficulty": "easy", "tools": ["lookup"], "compact": True}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("policy")
    ap.add_argument("--env-kwargs", default=json.dumps(ENV_KW))
    ap.add_argument("--episodes", type=int, default=64)
    ap.add_argument("--history", type=int, default=2, help="max_history_turns of the prompts")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    import stepgym
    from stepgym.envs._toolcalls import parse_tool_call
    from stepgym.models import load_model
    from steppo.policy import Policy
    from steppo.sampling import Sampler
    from steppo.rollout import ChatPromptBuilder, InProcessCollector, LocalGenerator, SamplingParams, make_env_fn

    kw = json.loads(args.env_kwargs)
    env_fn = make_env_fn("stepgym/ToolUse-v0", kw)
    lm, tok = load_model(args.policy)
    n = args.episodes
    seeds = [1_000_000 + i for i in range(n)]

    def rollout(temperature: float):
        pol = Policy(lm, tok, critic="none", temperature=temperature or 1.0)
        col = InProcessCollector(env_fn, LocalGenerator(Sampler(pol, stop_strings=("</tool_call>",)), batch_size=16),
                                 ChatPromptBuilder(tok, args.history), 16)
        b = col.collect(seeds, [-1] * n, SamplingParams(args.max_new_tokens, temperature or 1.0, 1.0,
                                                         greedy=temperature == 0, seed=0))
        col.close()
        return b

    print("| temperature | success | invalid-action rate |\n|---|---:|---:|")
    batches = {}
    for t in (0.0, 0.3, 0.7, 1.0):
        b = batches[t] = rollout(t)
        inv = sum(not s.info.get("action_valid", True) for s in b.steps) / max(1, len(b.steps))
        print(f"| {'greedy' if t == 0 else t} | {sum(e.success for e in b.episodes) / n:.3f} | {inv:.2f} |")

    by = collections.defaultdict(list)
    for s in batches[0.0].steps:
        by[s.traj_id].append(s)
    kinds: collections.Counter = collections.Counter()
    for e in batches[0.0].episodes:
        if e.success:
            kinds["success"] += 1
            continue
        env = stepgym.make("stepgym/ToolUse-v0", **kw)
        env.reset(seed=e.seed)
        target = env.unwrapped._plan[0][1]["entity"]
        looked_right, answered = False, False
        for s in by[e.traj_id]:
            c = parse_tool_call(s.response_text)
            name = getattr(c, "name", None)
            args_ = getattr(c, "arguments", None)
            if name == "lookup" and isinstance(args_, dict) and args_.get("entity") == target:
                looked_right = True
            if name == "answer" and s.info.get("action_valid", True):
                answered = True
        kinds["no valid answer" if not answered else
              "right lookup, miscopied value" if looked_right else "wrong entity name"] += 1
    print(f"\ngreedy episodes by outcome ({n} held-out seeds): {dict(kinds)}")

    prev: dict = {}
    later = carried = differ = 0
    for s in batches[0.7].steps:
        p = prev.get(s.traj_id)
        if p is not None:
            later += 1
            if s.prompt_ids[: len(p.prompt_ids) + len(p.response_ids)] == p.prompt_ids + p.response_ids:
                carried += 1
                differ += s.prompt_ids != tok(s.prompt_text, add_special_tokens=False)["input_ids"]
        prev[s.traj_id] = s
    print(f"sampled rollout (T=0.7): {later} later steps, {carried} continue the previous step's ids, "
          f"{differ} of those differ from a fresh tokenisation of their text")


if __name__ == "__main__":
    main()
