"""Rollout throughput: in-process collection vs Ray rollout workers (steppo/ray_rollout.py).

Episodes per second of a collection (the median of ``--repeats`` timed collections, after a
warm-up collection that also starts the actors), for two settings with the tiny model:

* ``env-bound``: the toy Boxes env where every step also runs the sandboxed ``python`` tool
  (``print(1)``, the ToolUse-v0 tool: a fresh child process per call, ~15-40 ms), 4-token actions;
* ``gen-bound``: the toy Boxes env, 32-token actions, nothing else.

and four ways to collect:

* ``in-process``: one :class:`~steppo.rollout.InProcessCollector` (``--num-envs`` envs);
  ``in-process-x2``: the same with twice the envs (as many as two workers have together);
* ``ray-1`` / ``ray-2``: :class:`~steppo.ray_rollout.RayCollector` with 1 / 2 workers, each a
  policy replica with ``--num-envs`` envs; the weights are broadcast (``ray.put``) per collection;
* ``central-2``: the alternative design, 2 env workers whose generator sends the prompts to one
  generation actor that batches the requests of all workers (no KV reuse between steps there:
  per-episode caches would need remote session calls). Only here, not shipped.

Run from the repository root (workers import this file as ``bench.ray_rollout``):

    python bench/ray_rollout.py --episodes 96 --repeats 3 --markdown
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import gymnasium as gym  # noqa: E402

TOY = "tests.steppo.toy:steppotest/Boxes-v0"
PY_ENV = "bench.ray_rollout:benchray/BoxesPython-v0"


class BoxesPython(gym.Wrapper):
    """The toy Boxes env, plus one sandboxed python tool call per step (an env-bound agent)."""

    def __init__(self, max_steps: int = 4):
        import stepgym
        import tests.steppo.toy  # noqa: F401
        from stepgym.tools.python import PythonTool

        super().__init__(stepgym.make("steppotest/Boxes-v0", max_steps=max_steps))
        self.tool = PythonTool()

    def step(self, action):
        self.tool(code="print(1)")
        return self.env.step(action)

    def close(self):
        self.tool.close()
        super().close()


if "benchray/BoxesPython-v0" not in gym.registry:
    gym.register(id="benchray/BoxesPython-v0", entry_point="bench.ray_rollout:BoxesPython")

SETTINGS = {
    "env-bound": dict(env=PY_ENV, max_new_tokens=4),
    "gen-bound": dict(env=TOY, max_new_tokens=32),
}


def _policy():
    from stepgym.models import load_model
    from steppo.policy import Policy

    lm, tok = load_model("tiny", seed=0)
    return Policy(lm, tok).eval()


def local_collector(env: str, num_envs: int):
    """An in-process collector with the tiny policy (also what each Ray worker builds)."""
    from steppo.rollout import ChatPromptBuilder, InProcessCollector, LocalGenerator, make_env_fn
    from steppo.sampling import Sampler

    pol = _policy()
    gen = LocalGenerator(Sampler(pol), batch_size=num_envs)
    return InProcessCollector(make_env_fn(env, {"max_steps": 4}), gen, ChatPromptBuilder(pol.tokenizer), num_envs)


class GenServer:
    """One generation actor for all env workers: requests arriving together run as one batch."""

    def __init__(self, clients: int, threads: int):
        import torch

        from steppo.rollout import LocalGenerator
        from steppo.sampling import Sampler

        torch.set_num_threads(threads)
        self.pol = _policy()
        self.gen = LocalGenerator(Sampler(self.pol), batch_size=64, reuse_cache=False)
        self.clients = clients
        self.cv = threading.Condition()
        self.queue: list[tuple[int, list, object]] = []
        self.results: dict[int, list] = {}
        self.busy = False
        self.tickets = 0

    def load(self, weights) -> None:
        self.pol.load_state_dict(weights, strict=False)

    def set_seed(self, seed: int) -> None:
        self.gen.set_seed(seed)

    def generate(self, prompts, params):
        with self.cv:
            self.tickets += 1
            ticket = self.tickets
            self.queue.append((ticket, prompts, params))
            self.cv.notify_all()
            deadline = time.perf_counter() + 0.005
            while ticket not in self.results:
                lead = self.queue and self.queue[0][0] == ticket and not self.busy
                if lead and (len(self.queue) >= self.clients or time.perf_counter() >= deadline):
                    batch, self.queue, self.busy = self.queue, [], True
                    self.cv.release()
                    try:
                        flat = [p for _, ps, _ in batch for p in ps]
                        gens = self.gen.generate(flat, batch[0][2])
                    finally:
                        self.cv.acquire()
                    k = 0
                    for t, ps, _ in batch:
                        self.results[t] = gens[k:k + len(ps)]
                        k += len(ps)
                    self.busy = False
                    self.cv.notify_all()
                else:
                    self.cv.wait(timeout=0.001)
            return self.results.pop(ticket)


def central_collector(env: str, num_envs: int, server):
    """An env worker whose generator is the shared GenServer actor."""
    import ray

    from stepgym.models import load_model
    from steppo.rollout import ChatPromptBuilder, Generator, InProcessCollector, make_env_fn

    _, tok = load_model("tiny", seed=0)

    class Remote(Generator):
        tokenizer = tok

        def generate(self, prompts, params, sessions=None):
            return ray.get(server.generate.remote(prompts, params))

    return InProcessCollector(make_env_fn(env, {"max_steps": 4}), Remote(), ChatPromptBuilder(tok), num_envs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--episodes", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="timed collections per cell (median reported)")
    ap.add_argument("--num-envs", type=int, default=8, help="envs per collector (per worker)")
    ap.add_argument("--modes", default="in-process,in-process-x2,ray-1,ray-2,central-2")
    ap.add_argument("--settings", default="env-bound,gen-bound")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()

    import ray
    import torch

    import bench.ray_rollout as mod  # workers import the module by this name (not __main__)
    from steppo.ray_rollout import RayCollector, trainable_state
    from steppo.rollout import SamplingParams

    torch.set_num_threads(1)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    seeds = list(range(args.episodes))
    rows = []
    driver = _policy()  # the weights broadcast each collection (same values as the replicas')
    for setting in args.settings.split(","):
        s = SETTINGS[setting]
        for mode in args.modes.split(","):
            server = None
            if mode.startswith("in-process"):
                col = mod.local_collector(s["env"], args.num_envs * (2 if mode.endswith("-x2") else 1))
            elif mode.startswith("ray-"):
                col = RayCollector(functools.partial(mod.local_collector, s["env"], args.num_envs), int(mode[4:]),
                                   weights_fn=lambda: trainable_state(driver))
            else:
                n = int(mode.split("-")[1])
                server = ray.remote(mod.GenServer).options(num_cpus=0, max_concurrency=n + 2).remote(n, 1)
                col = RayCollector(functools.partial(mod.central_collector, s["env"], args.num_envs, server), n,
                                   num_cpus=0.5)
            res = []
            for rep in range(args.repeats + 1):  # the first one warms up (actor start, first prompts)
                params = SamplingParams(s["max_new_tokens"], seed=rep)
                t0 = time.perf_counter()
                if server is not None:
                    ray.get([server.load.remote(ray.put(trainable_state(driver))), server.set_seed.remote(rep)])
                b = col.collect(seeds, seeds, params)
                res.append((time.perf_counter() - t0, b))
            dt, b = sorted(res[1:], key=lambda r: r[0])[len(res[1:]) // 2]
            rows.append((setting, mode, len(b.episodes) / dt, len(b.steps), b.generated_tokens / dt, b.env_s, dt))
            col.close()
            if server is not None:
                ray.kill(server)
            print(f"{setting:10s} {mode:11s} {rows[-1][2]:7.2f} episodes/s  steps {len(b.steps):4d}  "
                  f"tok/s {rows[-1][4]:7.1f}  env_s {b.env_s:6.2f}  wall {dt:6.2f}s", flush=True)
    ray.shutdown()
    if args.markdown:
        print("\n| setting | collector | episodes/s | steps | generated tok/s | env s (summed) | wall s |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for setting, mode, eps, steps, tps, env_s, dt in rows:
            print(f"| {setting} | {mode} | {eps:.2f} | {steps} | {tps:.0f} | {env_s:.2f} | {dt:.2f} |")


if __name__ == "__main__":
    main()
