"""Start-up cost of the python tool's sandbox, per call.

Usage:
    python bench/sandbox.py                  # table, 30 calls per row
    python bench/sandbox.py --calls 50 --markdown

Rows (milliseconds per call, median and 90th percentile over ``--calls`` calls, after
two warm-up calls):

* ``in-process exec``: ``exec`` in the env's own process; no isolation, the floor.
* ``bare subprocess``: ``python -I -S -B -c <code>``, no limits: the cost of any child.
* ``sandbox rlimits``: :class:`Sandbox` without bwrap (rlimits, scrubbed env, temp dir,
  guard).
* ``sandbox bwrap``: :class:`Sandbox` with bubblewrap (skipped if it cannot run here).
* ``... prestarted``: the same sandbox started before the call and handed the code when
  the call comes: what a warm pool of single-use workers would save per call.
* ``PythonTool``: the full tool call as ToolUse-v0 makes it (defaults: auto isolation,
  ``prestart=True``), back-to-back (the spare child is still starting when the next call
  comes) and 50 ms apart.

Two programs: ``print(1)`` and one importing ``fractions`` + ``statistics`` (the rlimits
guard compiles imports from source, so imports cost more there).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import subprocess
import sys
import time

from stepgym.tools.python import PythonTool
from stepgym.tools.sandbox import Limits, Sandbox, _bwrap_problem

PROGRAMS = {
    "print(1)": "print(1)",
    "import fractions+statistics": "import fractions, statistics\nprint(statistics.mean([fractions.Fraction(1, 3)] * 3))",
}


def _time(fn, calls: int) -> tuple[float, float]:
    for _ in range(2):
        fn()
    xs = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        xs.append((time.perf_counter() - t) * 1e3)
    xs.sort()
    return statistics.median(xs), xs[min(len(xs) - 1, int(0.9 * len(xs)))]


def _prestarted(box, code: str, calls: int) -> tuple[float, float]:
    """Calls as an env makes them: 50 ms of other work (untimed) between calls."""
    xs = []
    for i in range(calls + 2):
        time.sleep(0.05)
        t = time.perf_counter()
        r = box.run(code) if isinstance(box, Sandbox) else box(code=code)
        dt = (time.perf_counter() - t) * 1e3
        assert r.ok, r
        if i >= 2:
            xs.append(dt)
    xs.sort()
    return statistics.median(xs), xs[min(len(xs) - 1, int(0.9 * len(xs)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args(argv)
    lim = Limits(wall_s=10)
    rows: list[tuple[str, str, float, float]] = []
    problem = _bwrap_problem()
    boxes = {"rlimits": Sandbox(lim, isolation="rlimits")}
    if problem is None:
        boxes["bwrap"] = Sandbox(lim, isolation="bwrap")
    tool = PythonTool(timeout_s=10)
    for pname, code in PROGRAMS.items():
        def inproc(code=code):
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(code, "<c>", "exec"), {})

        rows.append(("in-process exec", pname, *_time(inproc, args.calls)))
        cmd = [sys.executable, "-I", "-S", "-B", "-c", code]
        rows.append(("bare subprocess", pname, *_time(lambda: subprocess.run(cmd, capture_output=True, check=True), args.calls)))
        for name, box in boxes.items():
            def call(box=box):
                r = box.run(code)
                assert r.ok, r
            rows.append((f"sandbox {name}", pname, *_time(call, args.calls)))
            warm = Sandbox(lim, isolation=name, prestart=True)
            rows.append((f"sandbox {name} prestart=True", pname, *_prestarted(warm, code, args.calls)))
            warm.close()
        rows.append((f"PythonTool ({tool.isolation}), back-to-back", pname, *_time(lambda: tool(code=code), args.calls)))
        rows.append((f"PythonTool ({tool.isolation}), 50 ms apart", pname, *_prestarted(tool, code, args.calls)))
    if args.markdown:
        print("| runner | program | median ms | p90 ms |")
        print("|---|---|---:|---:|")
        for r in rows:
            print(f"| {r[0]} | `{r[1]}` | {r[2]:.1f} | {r[3]:.1f} |")
    else:
        print(f"{'runner':40s} {'program':30s} {'median ms':>10s} {'p90 ms':>8s}")
        for r in rows:
            print(f"{r[0]:40s} {r[1]:30s} {r[2]:10.1f} {r[3]:8.1f}")
    if problem is not None:
        print(f"\n(bwrap rows skipped: {problem})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
