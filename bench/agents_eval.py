"""Costs of the agent layer: the eval harness, the HTTP round trip, batched generation.

Usage:
    python bench/agents_eval.py               # table
    python bench/agents_eval.py --markdown    # rows for docs/benchmarks.md
    python bench/agents_eval.py --quick       # fewer repetitions
    python bench/agents_eval.py --threads 1   # one torch thread (fastest for tiny models on a busy machine)

Rows:
* eval harness: microseconds per step of the expert on ToolUse-v0 (easy), in a plain
  single-env loop (the floor) and through ``evaluate`` with 1 and 8 parallel envs (vector
  env, per-slot info unbatching, statistics);
* HTTP: milliseconds per ``OpenAIAgent.act`` against ``stepgym.serving`` on 127.0.0.1 with
  a constant-answer backend (so only client + server overhead is timed), one at a time and
  as ``act_batch`` of 8 concurrent requests (per request);
* generation: tokens per second of ``TransformersAgent`` on the ``tiny`` model, sampled,
  batch 1 vs batch 8 (skipped without torch);
* threads (without ``--threads``): milliseconds per tiny-model forward pass with torch's
  default thread count and with one thread.

Each figure is the median of several repetitions.
"""

from __future__ import annotations

import argparse
import statistics
import time


def _median_of(fn, repeats: int) -> float:
    return statistics.median(fn() for _ in range(repeats))


def bench_eval(episodes: int, repeats: int) -> list[tuple[str, float, str]]:
    import stepgym
    from stepgym.agents import make_agent
    from stepgym.agents.evaluate import evaluate

    def plain() -> float:
        env = stepgym.make("stepgym/ToolUse-v0", difficulty="easy")
        agent = make_agent("expert", env=env)
        steps, t0 = 0, time.perf_counter()
        for ep in range(episodes):
            obs, info = env.reset(seed=ep)
            done = False
            while not done:
                obs, _, term, trunc, info = env.step(agent.act(obs, info))
                steps += 1
                done = term or trunc
        return (time.perf_counter() - t0) / steps * 1e6

    def through_evaluate(n: int) -> float:
        t0 = time.perf_counter()
        r = evaluate(
            "stepgym/ToolUse-v0", make_agent("expert"), episodes=episodes, num_envs=n, env_kwargs={"difficulty": "easy"}
        )
        return (time.perf_counter() - t0) / r.total_steps * 1e6

    return [
        ("plain loop, expert, 1 env", _median_of(plain, repeats), "µs/step"),
        ("evaluate(), expert, num_envs=1", _median_of(lambda: through_evaluate(1), repeats), "µs/step"),
        ("evaluate(), expert, num_envs=8", _median_of(lambda: through_evaluate(8), repeats), "µs/step"),
    ]


def bench_http(requests: int, repeats: int) -> list[tuple[str, float, str]]:
    from stepgym.agents import OpenAIAgent
    from stepgym.serving import CallableBackend, create_app, serve_in_thread

    answer = '<tool_call>{"name": "answer", "arguments": {"text": "42"}}</tool_call>'
    with serve_in_thread(create_app(CallableBackend(lambda m: answer), "const")) as server:
        agent = OpenAIAgent("const", server.base_url, history=False, tools="none", concurrency=8)
        agent.act("warm up", {})

        def one() -> float:
            t0 = time.perf_counter()
            for i in range(requests):
                agent.act(f"observation {i}", {})
            return (time.perf_counter() - t0) / requests * 1e3

        def batched() -> float:
            t0 = time.perf_counter()
            for i in range(requests // 8):
                agent.act_batch([f"observation {i}.{j}" for j in range(8)], [{}] * 8)
            return (time.perf_counter() - t0) / (8 * (requests // 8)) * 1e3

        return [
            ("OpenAIAgent.act -> stepgym.serving, sequential", _median_of(one, repeats), "ms/request"),
            ("OpenAIAgent.act_batch(8) -> stepgym.serving", _median_of(batched, repeats), "ms/request"),
        ]


def bench_generation(repeats: int) -> list[tuple[str, float, str]]:
    try:
        import torch  # noqa: F401

        from stepgym.models import load_model
    except ImportError:
        return []
    from stepgym.agents import TransformersAgent

    model, tok = load_model("tiny", seed=0)
    rows = []
    for batch in (1, 8):
        agent = TransformersAgent(
            model, tok, max_new_tokens=32, temperature=1.0, stop=(), history=False, batch_size=batch, seed=0
        )
        prompts = [f"Task: What is the population of city number {i}?" for i in range(batch)]
        agent.act_batch(prompts, [{}] * batch)  # warm up

        def run(agent=agent, prompts=prompts, batch=batch) -> float:
            t0 = time.perf_counter()
            agent.act_batch(prompts, [{}] * batch)
            return sum(agent.last_token_counts or [0]) / (time.perf_counter() - t0)

        rows.append((f"TransformersAgent tiny, batch {batch}, 32 new tokens", _median_of(run, repeats), "tokens/s"))
    return rows


def bench_threads(repeats: int) -> list[tuple[str, float, str]]:
    """32 forward passes of the tiny model with torch's default thread count vs one thread."""
    try:
        import torch

        from stepgym.models import load_model
    except ImportError:
        return []
    model, tok = load_model("tiny", seed=0)
    enc = tok(["Task: What is the population of Belxo?"], return_tensors="pt")
    default = torch.get_num_threads()

    def forwards(threads: int) -> float:
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for _ in range(32):
                model(**enc)
        return (time.perf_counter() - t0) / 32 * 1e3

    rows = [
        (f"tiny forward pass, {n} torch thread(s)", _median_of(lambda n=n: forwards(n), repeats), "ms")
        for n in sorted({default, 1}, reverse=True)
    ]
    torch.set_num_threads(default)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else 5
    rows = bench_eval(50 if args.quick else 200, repeats)
    rows += bench_http(24 if args.quick else 96, repeats)
    rows += bench_threads(repeats) if args.threads is None else []
    rows += bench_generation(repeats)
    if args.markdown:
        print("| measurement | median | unit |\n| --- | ---: | --- |")
        for name, value, unit in rows:
            print(f"| {name} | {value:,.1f} | {unit} |")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="agents and eval")
    table.add_column("measurement")
    table.add_column("median", justify="right")
    table.add_column("unit")
    for name, value, unit in rows:
        table.add_row(name, f"{value:,.1f}", unit)
    Console().print(table)


if __name__ == "__main__":
    main()
