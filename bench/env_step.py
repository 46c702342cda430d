"""Microseconds per ``step()`` and ``reset()`` for every registered stepgym env.

Usage:
    python bench/env_step.py                 # all envs, table
    python bench/env_step.py --env stepgym/ToolUse-v0 --episodes 300 --repeats 5
    python bench/env_step.py --markdown      # rows for docs/benchmarks.md

Each env is created with ``gym.make`` (with Gymnasium's default wrappers, as users get it).
Steps are timed one at a time with ``perf_counter_ns``; the expert's action is computed
outside the timed region. Each figure is the median over all timed calls of a repetition,
and the table shows the median of the repetitions' medians. The same run times a trivial
Gymnasium env through ``gym.make`` (the floor) and ``import stepgym`` against
``import gymnasium`` in fresh interpreters.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import time
from collections import defaultdict

import gymnasium as gym

import stepgym


class _Trivial(gym.Env):
    """The floor: a text env that does nothing."""

    def __init__(self):
        self.observation_space = stepgym.UnicodeText(16)
        self.action_space = stepgym.UnicodeText(16)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return "", {}

    def step(self, action):
        return "", 0.0, False, False, {}


gym.register(id="bench/Trivial-v0", entry_point=_Trivial)
INVALID = "this is not a valid action"


def time_env(env_id: str, episodes: int, kwargs: dict) -> dict[str, list[float]]:
    """One repetition: lists of microseconds per call, by kind."""
    env = gym.make(env_id, **kwargs)
    out: dict[str, list[float]] = defaultdict(list)
    has_expert = hasattr(env.unwrapped, "expert_action")
    ns = time.perf_counter_ns
    gc.disable()
    try:
        for ep in range(episodes):
            t0 = ns()
            env.reset(seed=ep)
            out["reset"].append((ns() - t0) / 1e3)
            if env_id == "bench/Trivial-v0":
                for _ in range(5):
                    t0 = ns()
                    env.step("")
                    out["step (expert)"].append((ns() - t0) / 1e3)
                continue
            done, steps = False, 0
            while has_expert and not done and steps < 200:
                a = env.unwrapped.expert_action()
                t0 = ns()
                _, _, te, tr, info = env.step(a)
                dt = (ns() - t0) / 1e3
                out["step (expert)"].append(dt)
                if "tool" in info:
                    out[f"step (expert {info['tool']})"].append(dt)
                done, steps = te or tr, steps + 1
            env.reset(seed=ep)
            for _ in range(3):
                t0 = ns()
                _, _, te, tr, _ = env.step(INVALID)
                out["step (invalid)"].append((ns() - t0) / 1e3)
                if te or tr:
                    env.reset(seed=ep)
    finally:
        gc.enable()
        env.close()
    return out


def import_times(repeats: int) -> tuple[float, float]:
    def t(code: str) -> float:
        vals = []
        for _ in range(repeats):
            out = subprocess.run([sys.executable, "-c", f"import time; t=time.perf_counter(); {code}; print(time.perf_counter()-t)"],
                                 capture_output=True, text=True, check=True)
            vals.append(float(out.stdout))
        return statistics.median(vals)

    return t("import gymnasium"), t("import gymnasium; import stepgym")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", action="append", help="env id (repeatable); default: every registered stepgym/ env")
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = p.parse_args()
    ids = args.env or ["bench/Trivial-v0"] + [e.id for e in stepgym.list_envs("stepgym") if not e.requires]
    rows = []
    for env_id in ids:
        try:
            reps = [time_env(env_id, args.episodes, {}) for _ in range(args.repeats)]
        except Exception as exc:  # an optional env that cannot run here
            rows.append((env_id, f"error: {type(exc).__name__}", {}))
            continue
        kinds = sorted({k for r in reps for k in r}, key=lambda k: (k != "reset", k))
        med = {k: statistics.median(statistics.median(r[k]) for r in reps if r.get(k)) for k in kinds}
        rows.append((env_id, "", med))
    g, s = import_times(max(3, args.repeats))
    if args.markdown:
        print("| env | call | median µs |\n|---|---|---:|")
        for env_id, err, med in rows:
            if err:
                print(f"| {env_id} | {err} | |")
            for k, v in med.items():
                print(f"| {env_id} | {k} | {v:.1f} |")
        print(f"\n`import gymnasium`: {g * 1e3:.0f} ms; `import gymnasium; import stepgym`: {s * 1e3:.0f} ms "
              f"(stepgym adds {(s - g) * 1e3:.0f} ms)")
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"µs per call (median of {args.repeats} repetitions x {args.episodes} episodes)")
    t.add_column("env", style="cyan")
    t.add_column("call")
    t.add_column("median µs", justify="right")
    for env_id, err, med in rows:
        if err:
            t.add_row(env_id, err, "")
        for k, v in med.items():
            t.add_row(env_id, k, f"{v:.1f}")
    Console().print(t)
    print(f"import gymnasium: {g * 1e3:.0f} ms; + import stepgym: {s * 1e3:.0f} ms (stepgym adds {(s - g) * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()
