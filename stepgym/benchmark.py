"""Timing of env ``step()``/``reset()`` calls, shared by ``stepgym bench`` and bench/env_step.py."""

from __future__ import annotations

import gc
import statistics
import subprocess
import sys
import time
from collections import defaultdict

import gymnasium as gym

from stepgym.spaces import UnicodeText

__all__ = ["time_env", "summarize", "import_times", "INVALID_ACTION", "TRIVIAL_ID"]

INVALID_ACTION = "this is not a valid action"
TRIVIAL_ID = "bench/Trivial-v0"


class _Trivial(gym.Env):
    """The floor: a text env that does nothing."""

    def __init__(self):
        self.observation_space = UnicodeText(16)
        self.action_space = UnicodeText(16)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return "", {}

    def step(self, action):
        return "", 0.0, False, False, {}


if TRIVIAL_ID not in gym.registry:
    gym.register(id=TRIVIAL_ID, entry_point=_Trivial)


def time_env(env_id: str, episodes: int, kwargs: dict | None = None) -> dict[str, list[float]]:
    """Time one repetition; returns microseconds per call, by kind of call.

    Kinds: ``reset``, ``step (expert)``, ``step (expert <tool>)`` when the env reports
    ``info["tool"]``, and ``step (invalid)``. The expert's action is computed outside the
    timed region; the garbage collector is paused while timing.
    """
    env = gym.make(env_id, **(kwargs or {}))
    out: dict[str, list[float]] = defaultdict(list)
    has_expert = hasattr(env.unwrapped, "expert_action")
    ns = time.perf_counter_ns
    gc.disable()
    try:
        for ep in range(episodes):
            t0 = ns()
            env.reset(seed=ep)
            out["reset"].append((ns() - t0) / 1e3)
            if env_id == TRIVIAL_ID:
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
                _, _, te, tr, _ = env.step(INVALID_ACTION)
                out["step (invalid)"].append((ns() - t0) / 1e3)
                if te or tr:
                    env.reset(seed=ep)
    finally:
        gc.enable()
        env.close()
    return out


def summarize(reps: list[dict[str, list[float]]]) -> dict[str, float]:
    """Median over repetitions of each repetition's median, per kind of call."""
    kinds = sorted({k for r in reps for k in r}, key=lambda k: (k != "reset", k))
    return {k: statistics.median(statistics.median(r[k]) for r in reps if r.get(k)) for k in kinds}


def import_times(repeats: int) -> tuple[float, float]:
    """Seconds for ``import gymnasium`` and for ``import gymnasium; import stepgym`` in fresh interpreters.

    The two are interleaved (so machine load hits both alike) and the median of each is kept.
    """
    codes = ("import gymnasium", "import gymnasium; import stepgym")
    vals: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for i, code in enumerate(codes):
            out = subprocess.run(
                [sys.executable, "-c", f"import time; t=time.perf_counter(); {code}; print(time.perf_counter()-t)"],
                capture_output=True, text=True, check=True,
            )
            vals[i].append(float(out.stdout))
    return statistics.median(vals[0]), statistics.median(vals[1])
