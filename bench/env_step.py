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
``import gymnasium`` in fresh interpreters. ``stepgym bench`` runs the same code.
"""

from __future__ import annotations

import sys

from stepgym.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
