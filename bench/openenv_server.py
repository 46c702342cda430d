"""Steps per second through `stepgym serve-env` vs in-process, and the remote pool's episodes/s.

Usage:
    python bench/openenv_server.py                  # table
    python bench/openenv_server.py --markdown       # rows for docs/benchmarks.md
    python bench/openenv_server.py --steps 3000 --repeats 5

Every row runs ToolUse-v0 (easy) episodes with the same fixed action (a `search` tool call; ten
steps until the step limit, then reset), so each path does the same env work:

- ``in-process``: ``gym.make("stepgym/ToolUse-v0")`` in this process (the floor).
- ``OpenEnv-v0``: ``stepgym/OpenEnv-v0`` (websockets' sync client) against a `stepgym serve-env`
  subprocess on 127.0.0.1, one session.
- ``openenv-core client``: openenv-core's ``GenericEnvClient(...).sync()``, same server.
- ``... x8 sessions``: 8 threads, one session each, against the same server; the figure is the
  aggregate steps/s and the per-step latency each client sees.
- ``pool, N servers``: 8 ``stepgym/OpenEnvPool-v0`` envs (8 threads) spread over N servers;
  whole episodes (reset + 10 steps) per second.

Servers run with ``--max-steps-per-s 0`` (no rate limit). Figures are medians over
``--repeats`` timed runs after a warm-up; "overhead" is (remote - in-process) time per step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import stepgym  # noqa: E402
from tests.stepgym.integrations.envserver_helpers import EnvServer  # noqa: E402

ACTION = '<tool_call>{"name": "search", "arguments": {"query": "city population"}}</tool_call>'


def server_cpu(servers: list[EnvServer]) -> float:
    """CPU seconds (user + system) the server processes used so far (Linux /proc, 10 ms ticks)."""
    total = 0
    for s in servers:
        with open(f"/proc/{s.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def run_steps(reset: Callable[[int], None], step: Callable[[], bool], steps: int) -> float:
    """Seconds for ``steps`` steps (resets included when an episode ends)."""
    seed = 0
    reset(seed)
    t0 = time.perf_counter()
    for _ in range(steps):
        if step():
            seed += 1
            reset(seed)
    return time.perf_counter() - t0


def gym_runner(env) -> tuple[Callable[[int], None], Callable[[], bool]]:
    def reset(seed: int) -> None:
        env.reset(seed=seed)

    def step() -> bool:
        _, _, terminated, truncated, _ = env.step(ACTION)
        return terminated or truncated

    return reset, step


def openenv_runner(client) -> tuple[Callable[[int], None], Callable[[], bool]]:
    def reset(seed: int) -> None:
        client.reset(seed=seed)

    def step() -> bool:
        return client.step({"text": ACTION}).done

    return reset, step


def threaded(n: int, fn: Callable[[int], float]) -> float:
    """Run ``fn(i)`` in ``n`` threads at once; wall seconds until all finish."""
    barrier = threading.Barrier(n + 1)
    out: list[float] = [0.0] * n

    def body(i: int) -> None:
        barrier.wait()
        out[i] = fn(i)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000, help="steps per timed run and client (default 2000)")
    p.add_argument("--episodes", type=int, default=96, help="pool episodes per timed run (default 96)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args()

    from openenv.core import GenericEnvClient

    common = ("stepgym/ToolUse-v0", "--max-steps-per-s", "0", "--quiet")
    servers = [EnvServer(*common), EnvServer(*common)]
    rows: list[tuple[str, float, float, str]] = []  # name, per-second figure, latency us, unit
    try:
        for s in servers:
            s.wait()
        url = servers[0].url

        cpu: dict[str, float] = {}

        def median_time(once: Callable[[], float], label: str = "") -> float:
            once()  # warm-up
            walls, cpus = [], []
            for _ in range(args.repeats):
                c0, s0 = time.process_time(), server_cpu(servers)
                walls.append(once())
                cpus.append(time.process_time() - c0 + server_cpu(servers) - s0)
            cpu[label] = statistics.median(cpus)
            return statistics.median(walls)

        local = stepgym.make("stepgym/ToolUse-v0")
        t_local = median_time(lambda: run_steps(*gym_runner(local), args.steps), "in-process")
        rows.append(("in-process", args.steps / t_local, 1e6 * t_local / args.steps, "steps/s"))

        remote = stepgym.make("stepgym/OpenEnv-v0", base_url=url)
        t_remote = median_time(lambda: run_steps(*gym_runner(remote), args.steps), "OpenEnv-v0 -> serve-env")
        rows.append(("OpenEnv-v0 -> serve-env", args.steps / t_remote, 1e6 * t_remote / args.steps, "steps/s"))
        remote.close()

        with GenericEnvClient(base_url=url).sync() as client:
            t_core = median_time(lambda: run_steps(*openenv_runner(client), args.steps), "openenv-core client -> serve-env")
        rows.append(("openenv-core client -> serve-env", args.steps / t_core, 1e6 * t_core / args.steps, "steps/s"))

        n = 8
        per = max(1, args.steps // n)
        envs = [stepgym.make("stepgym/OpenEnv-v0", base_url=url) for _ in range(n)]
        t8 = median_time(lambda: threaded(n, lambda i: run_steps(*gym_runner(envs[i]), per)), f"OpenEnv-v0 x{n} sessions -> serve-env")
        rows.append((f"OpenEnv-v0 x{n} sessions -> serve-env", n * per / t8, 1e6 * t8 / per, "steps/s"))
        for e in envs:
            e.close()

        clients = [GenericEnvClient(base_url=url).sync() for _ in range(n)]
        for c in clients:
            c.connect()
        t8c = median_time(lambda: threaded(n, lambda i: run_steps(*openenv_runner(clients[i]), per)), f"openenv-core client x{n} sessions -> serve-env")
        rows.append((f"openenv-core client x{n} sessions -> serve-env", n * per / t8c, 1e6 * t8c / per, "steps/s"))
        for c in clients:
            c.close()

        for k in (1, 2):
            urls = [s.url for s in servers[:k]]
            pool = [stepgym.make("stepgym/OpenEnvPool-v0", urls=urls) for _ in range(n)]
            eps = max(1, args.episodes // n)

            def episodes(i: int) -> float:
                env = pool[i]
                for e in range(eps):
                    env.reset(seed=1000 * i + e)
                    while True:
                        _, _, terminated, truncated, _ = env.step(ACTION)
                        if terminated or truncated:
                            break
                return 0.0

            tp = median_time(lambda: threaded(n, episodes), f"pool of {n} envs, {k} server{'s' if k > 1 else ''}")
            rows.append((f"pool of {n} envs, {k} server{'s' if k > 1 else ''}", n * eps / tp, 1e6 * tp / eps,
                         "episodes/s"))
            for env in pool:
                env.close()
    finally:
        for s in servers:
            s.stop()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    overhead = 1e6 * (t_remote - t_local) / args.steps
    overhead_core = 1e6 * (t_core - t_local) / args.steps
    def cpu_us(name: str, unit: str) -> float:
        count = args.steps if unit == "steps/s" else n * max(1, args.episodes // n)
        if "sessions" in name:
            count = n * max(1, args.steps // n)
        return 1e6 * cpu[name] / count

    if args.markdown:
        print("| path | throughput | wall us per step (pool: per episode), one client | CPU us per step (pool: per episode), client + server |")
        print("|---|---:|---:|---:|")
        for name, rate, lat, unit in rows:
            print(f"| {name} | {rate:,.0f} {unit} | {lat:,.0f} | {cpu_us(name, unit):,.0f} |")
    else:
        for name, rate, lat, unit in rows:
            print(f"{name:48s} {rate:10,.0f} {unit:10s} {lat:10,.0f} us wall {cpu_us(name, unit):8,.0f} us CPU")
    cpu_over = 1e6 * (cpu["OpenEnv-v0 -> serve-env"] - cpu["in-process"]) / args.steps
    print(f"\nserver overhead per step, one client: wall OpenEnv-v0 {overhead:,.0f} us, openenv-core client "
          f"{overhead_core:,.0f} us; CPU (client + server) OpenEnv-v0 {cpu_over:,.0f} us "
          f"(load average {load:.1f}, {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
