"""torch.distributed training: 2 gloo ranks under torchrun vs one process, a killed rank, resume at another size."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tests.steppo.toy  # noqa: F401  (registers steppotest/Boxes-v0)
from steppo import advantages as A
from steppo import distributed
from steppo.config import make_train_config
from steppo.report import read_metrics
from steppo.rollout import SamplingParams
from steppo.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
TOY = "tests.steppo.toy:steppotest/Boxes-v0"
CLI = ["--model", "tiny", "--env", TOY, "--stop-strings", "--max-new-tokens", "6", "--episodes-per-iteration", "4",
       "--num-envs", "4", "--eval-episodes", "4", "--eval-every", "0", "--no-progress", "--no-tensorboard",
       "--threads", "1", "--lr", "3e-4", "--save-every", "1"]


def _cfg(out, **kw):
    base = dict(model="tiny", env=TOY, env_kwargs={}, stop_strings=(), max_new_tokens=6, episodes_per_iteration=4,
                num_envs=4, eval_episodes=4, eval_every=0, out=str(out), progress=False, tensorboard=False,
                threads=1, lr=3e-4, save_every=1)
    base.update(kw)
    return make_train_config(base)


def _torchrun(*args: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def test_shards_keep_groups_whole_and_cover_every_episode():
    for n, g, w in [(8, 4, 2), (12, 4, 2), (16, 1, 3), (6, 2, 3)]:
        parts = [distributed.shard_seeds(n, g, r, w) for r in range(w)]
        assert parts[0][0] == 0 and parts[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
        assert all(lo % g == 0 and hi % g == 0 and hi > lo for lo, hi in parts)


def test_one_process_has_no_reducer_and_no_collectives():
    assert A._REDUCER is None
    ctx = distributed.context()
    assert not ctx.active and ctx.is_main and ctx.total(3) == 3 and ctx.any(False) is False


def test_two_ranks_update_like_one_process_over_the_same_batch(tmp_path):
    """One minibatch per epoch, StepPO (per-step losses): the all-reduced update equals one process's."""
    opts = dict(algo="steppo", minibatch_size=64, epochs=2, episodes_per_iteration=8, num_envs=8,
                micro_batch_size=3)
    ref = Trainer(_cfg(tmp_path / "one", **opts))
    ref.setup()
    seeds, groups = ref.iteration_seeds(1)
    rollout = ref.collector.collect(seeds, groups, SamplingParams(6, 1.0, 1.0, seed=5), traj_id_start=8)
    ref.update(rollout, 1)
    expected = {n: p.detach().clone() for n, p in ref.policy.named_parameters() if p.requires_grad}
    with open(tmp_path / "rollout.pkl", "wb") as fh:
        pickle.dump(rollout, fh)
    cfg = dict(model="tiny", env=TOY, env_kwargs={}, stop_strings=[], max_new_tokens=6, eval_episodes=4,
               out=str(tmp_path / "two"), progress=False, tensorboard=False, threads=1, lr=3e-4, **opts)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    proc = subprocess.run(_torchrun(str(ROOT / "tests/steppo/dist_update_worker.py"), str(tmp_path / "rollout.pkl"),
                                    str(tmp_path / "cfg.json")), cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = torch.load(tmp_path / "two/checkpoints/iter_000001.pt", weights_only=False)["trainable"]
    assert set(got) == set(expected)
    moved = max(float((expected[n] - p).abs().max()) for n, p in _initial(tmp_path, opts).items())
    assert moved > 1e-4  # the update did something
    for n in expected:
        torch.testing.assert_close(got[n], expected[n], rtol=1e-4, atol=1e-5, msg=n)


def _initial(tmp_path, opts):
    t = Trainer(_cfg(tmp_path / "init", **opts))
    t.setup()
    return {n: p.detach().clone() for n, p in t.policy.named_parameters() if p.requires_grad}


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of torchrun's worker with ``RANK=rank``."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in env:
            return int(pid)
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the rank's pid in /proc")
def test_killed_rank_stops_the_job_with_one_line_and_resume_continues(tmp_path):
    out = tmp_path / "run"
    log = open(tmp_path / "log.txt", "w")
    proc = subprocess.Popen(_torchrun("-m", "stepgym", "train", *CLI, "--iterations", "40", "--out", str(out),
                                      "--dist-timeout", "60"),
                            cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180
        while not (out / "checkpoints/iter_000002.pt").exists():
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "log.txt").read_text()[-3000:]
            time.sleep(0.2)
        pid = _rank_pid(proc.pid, 1)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        rc = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    text = (tmp_path / "log.txt").read_text()
    assert rc != 0
    lines = [ln for ln in text.splitlines() if "distributed training stopped" in ln]
    assert len(lines) == 1, text[-4000:]
    assert "rank 1 vanished" in lines[0] and "--resume" in lines[0] and "iter_0000" in lines[0], lines[0]
    # every row on disk is a global one (4 episodes per iteration over the 2 ranks)
    rows = [r for r in read_metrics(str(out / "metrics.jsonl")) if r["iteration"] >= 1]
    assert [r["charts/episodes"] for r in rows] == [4 * r["iteration"] for r in rows]
    last = int(sorted(os.listdir(out / "checkpoints"))[-1][5:11])
    assert last >= 2
    # one process picks the run up from the last checkpoint (another world size)
    summary = Trainer(_cfg(out, iterations=last + 1, resume=True)).train()
    assert summary["iterations_done"] == last + 1
    rows = [r for r in read_metrics(str(out / "metrics.jsonl")) if r["iteration"] >= 1]
    assert [r["iteration"] for r in rows] == list(range(1, last + 2))
    assert rows[-1]["charts/episodes"] == 4 * (last + 1)


def test_one_process_run_resumes_under_two_ranks(tmp_path):
    out = tmp_path / "run"
    Trainer(_cfg(out, iterations=1)).train()
    proc = subprocess.run(_torchrun("-m", "stepgym", "train", *CLI, "--iterations", "2", "--out", str(out),
                                    "--resume"), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resumed from" in proc.stdout
    rows = [r for r in read_metrics(str(out / "metrics.jsonl")) if r["iteration"] >= 1]
    assert [r["iteration"] for r in rows] == [1, 2]
    assert rows[-1]["charts/episodes"] == 8 and "eval/success_rate" in rows[-1]
    state = torch.load(out / "checkpoints/iter_000002.pt", weights_only=False)
    assert state["iteration"] == 2 and len(state["rng_ranks"]) == 2
    assert (out / "policy").is_dir()
