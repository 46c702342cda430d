"""Serve a local model over an OpenAI-compatible API and evaluate it through HTTP.

This is what `stepgym serve` + `stepgym eval --agent openai:...` do, in one process:
any harness that speaks the OpenAI chat-completions API (and any OpenAI-compatible
server: vLLM, SGLang, llama.cpp) plugs in the same way.

    python examples/serve_and_eval.py --model tiny --episodes 4
    python examples/serve_and_eval.py --model checkpoint:runs/demo --episodes 20 --max-tokens 40 \
        --env-kwargs '{"difficulty": "easy", "tools": ["lookup"], "compact": true, "max_steps": 4}'

The server registers the model under ``--name`` (default ``policy``): the id clients send as
``"model"`` and ``/v1/models`` lists. The same from the command line, in two terminals:

    stepgym serve --model checkpoint:runs/demo --name policy --port 8000
    stepgym eval --env stepgym/ToolUse-v0 --agent openai:policy@http://127.0.0.1:8000/v1
"""

from __future__ import annotations

import argparse
import json

from stepgym.agents import OpenAIAgent, make_agent
from stepgym.agents.evaluate import evaluate
from stepgym.serving import backend_from_spec, create_app, serve_in_thread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="hf:ID, checkpoint:DIR or a bare model spec (default tiny)")
    parser.add_argument("--env", default="stepgym/ToolUse-v0")
    parser.add_argument("--env-kwargs", default='{"difficulty": "easy"}', help="JSON env kwargs (the policy's env)")
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--name", default="policy", help="the model id the server registers (default policy)")
    args = parser.parse_args()
    env_kwargs = json.loads(args.env_kwargs)

    # A policy folder keeps its trained stop strings; a base model answers until end of turn.
    extra = {} if args.model.startswith("checkpoint:") else {"stop": ()}
    backend = backend_from_spec(args.model, max_new_tokens=args.max_tokens, temperature=0.0, **extra)
    with serve_in_thread(create_app(backend, args.name), host="127.0.0.1", port=0) as server:
        print(f"serving {args.name} at {server.base_url}  ({args.model})")
        remote = OpenAIAgent(args.name, server.base_url, temperature=0.0, max_tokens=args.max_tokens)
        over_http = evaluate(args.env, remote, episodes=args.episodes, num_envs=2, env_kwargs=env_kwargs)
    expert = evaluate(args.env, make_agent("expert"), episodes=args.episodes, env_kwargs=env_kwargs)
    for r in (over_http, expert):
        lo, hi = r.ci95
        print(
            f"{r.agent:>14}: success {r.success_rate:.0%} (95% CI {lo:.0%}-{hi:.0%}), "
            f"{r.mean_steps:.1f} steps, {r.tokens_per_step:.1f} tokens/step, {r.wall_s:.1f}s"
        )


if __name__ == "__main__":
    main()
