"""bench/compare_families.py end to end on the toy family: one command, results.json, table, PNG."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_an_lr_zero_control_run_keeps_its_held_out_curve_flat_and_is_tabled(tmp_path):
    out, png = tmp_path / "cmp", tmp_path / "cmp.png"
    cmd = [sys.executable, str(ROOT / "bench" / "compare_families.py"), "--families", "boxes", "--algos", "steppo",
           "--seeds", "0", "--budget", "150", "--eval-every", "1", "--eval-episodes", "8", "--jobs", "1",
           "--lr", "0", "--out", str(out), "--png", str(png)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    run = json.loads((out / "results.json").read_text())["boxes"]["steppo"]["0"]
    # lr 0: the policy never changes and evaluation sampling has a fixed seed, so every point is the same
    assert len(run["eval_success"]) >= 3 and len(set(run["eval_success"])) == 1
    assert run["eval_return"][0] == run["final_return"] and run["auc"] == run["final"]
    assert "| steppo |" in res.stdout and "held-out return" in res.stdout
    assert png.stat().st_size > 0
    # a second call finds the finished run and does not train it again
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert again.returncode == 0 and "boxes steppo seed 0" not in again.stdout
