"""A long hostile-input fuzz run over every registered env (the CI run is a short version).

Usage:
    python bench/fuzz.py                          # 500 examples per property per env
    python bench/fuzz.py --examples 2000 --env stepgym/Wordle-v0
    python bench/fuzz.py --markdown               # rows for docs/benchmarks.md

Runs the two Hypothesis properties of ``tests/stepgym/test_fuzz.py`` (one hostile step
after reset; random sequences of hostile and expert steps, replayed for determinism)
with a fresh random search (not derandomized), plus ToolUse-v0 with the python tool
enabled, sent hostile and random programs (each followed by a normal call that must
still work; 1 s time limit per program). Per env it prints the actions tried (steps taken, replays included), the share
the env rejected as invalid, the failures found (distinct bugs Hypothesis reported), the
mean and slowest step, and the wall time.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gymnasium as gym  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

import stepgym  # noqa: E402
import tests.stepgym.test_fuzz as fz  # noqa: E402


def _failures(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for e in exc.exceptions:
            out += _failures(e)
        return out
    return [exc]


def run_env(label: str, env: gym.Env, examples: int, seed: int, props=None) -> dict:
    words = fz.vocabulary(env)
    props = props or (lambda e: fz.single_action_property(e, words), lambda e: fz.sequence_property(e, words))
    stats: dict = {}
    fz.STATS = stats
    found: list[str] = []
    cfg = settings(max_examples=examples, deadline=None, derandomize=False, database=None,
                   report_multiple_bugs=True, print_blob=True,
                   suppress_health_check=list(HealthCheck))
    t0 = time.perf_counter()
    for i, prop in enumerate(props):
        test = cfg(prop(env))
        try:
            test()
        except Exception as exc:  # noqa: BLE001 - a failure is a finding, report it and go on
            for e in _failures(exc):
                found.append(f"property {i}: {type(e).__name__}: {str(e)[:300]}")
                traceback.print_exception(e, limit=-3, file=sys.stderr)
    fz.STATS = None
    wall = time.perf_counter() - t0
    steps = max(1, stats.get("steps", 0))
    return {
        "env": label, "actions": stats.get("steps", 0), "invalid": stats.get("invalid", 0) / steps,
        "failures": len(found), "mean_us": 1e6 * stats.get("step_s", 0.0) / steps,
        "max_ms": 1e3 * stats.get("max_step_s", 0.0), "wall_s": wall, "found": found,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=500, help="Hypothesis examples per property per env")
    ap.add_argument("--env", action="append", help="only these env ids (repeatable)")
    ap.add_argument("--no-python", action="store_true", help="skip ToolUse-v0 with the python tool")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    ids = args.env or [e.id for e in stepgym.list_envs("stepgym")]
    results = []
    for env_id in ids:
        results.append(run_env(env_id, gym.make(env_id), args.examples, args.seed))
        print(f"done {env_id}: {results[-1]['actions']} actions, {results[-1]['failures']} failures", file=sys.stderr)
    if not args.no_python and not args.env:
        env = fz.tooluse_python_env()
        results.append(run_env("ToolUse-v0 + python programs", env, max(10, args.examples // 3), args.seed,
                               props=(fz.python_tool_property,)))
    head = ("env", "actions tried", "invalid", "failures", "mean step us", "max step ms", "wall s")
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in results:
            print(f"| {r['env']} | {r['actions']} | {r['invalid']:.0%} | {r['failures']} | {r['mean_us']:.0f} | "
                  f"{r['max_ms']:.1f} | {r['wall_s']:.0f} |")
    else:
        print(f"{head[0]:30s} {head[1]:>13s} {head[2]:>8s} {head[3]:>9s} {head[4]:>13s} {head[5]:>12s} {head[6]:>7s}")
        for r in results:
            print(f"{r['env']:30s} {r['actions']:13d} {r['invalid']:8.0%} {r['failures']:9d} {r['mean_us']:13.0f} "
                  f"{r['max_ms']:12.1f} {r['wall_s']:7.0f}")
    total = sum(r["failures"] for r in results)
    for r in results:
        for f in r["found"]:
            print(f"FAILURE {r['env']}: {f}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
