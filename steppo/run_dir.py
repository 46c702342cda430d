"""Everything a training run keeps on disk, in one folder.

=======================  ==========================================================
``config.json``          the run's config
``metrics.jsonl``        one row per iteration (row 0: the evaluation before training)
``checkpoints/``         ``iter_NNNNNN.pt``: weights, optimizer, RNG, counters (atomic)
``policy/``              the latest policy, loadable by ``checkpoint:`` agents and transformers
``tb/``                  TensorBoard events
``learning_curve.png``   success, behaviour and losses per iteration
``summary.json``         first/last/best of the headline metrics
=======================  ==========================================================

Every write is atomic (temp file, then rename), so a run killed at any moment resumes from its
last checkpoint.

Example:
    >>> import tempfile
    >>> run = RunDir(tempfile.mkdtemp() + "/run")
    >>> run.create({"algo": "steppo"}, resume=False, overwrite=False)
    >>> run.log({"iteration": 1, "charts/success_rate": 0.5})
    >>> [r["iteration"] for r in run.rows], run.holds_run()
    ([1], True)
"""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
from typing import Any

import numpy as np

from stepgym.errors import InvalidConfig
from steppo import report

__all__ = ["RunDir", "atomic_write_text"]


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file and a rename (never a torn file)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class RunDir:
    """A run's output folder: config, metrics rows, checkpoints, policy folder, TensorBoard, report.

    Args:
        path: the folder (``--out``).
        keep_checkpoints: how many ``iter_*.pt`` files stay on disk.
        write: False for the ranks other than 0 of a distributed run: they keep the rows in
            memory and read checkpoints, but write nothing (rank 0 writes everything).
    """

    #: what a new run replaces with ``overwrite``
    RUN_FILES = ("metrics.jsonl", "checkpoints", "tb", "policy", "learning_curve.png", "summary.json")

    def __init__(self, path: str, keep_checkpoints: int = 2, write: bool = True):
        self.path = path
        self.write = write
        self.keep_checkpoints = keep_checkpoints
        self.metrics_path = os.path.join(path, "metrics.jsonl")
        self.checkpoint_dir = os.path.join(path, "checkpoints")
        self.policy_dir = os.path.join(path, "policy")
        self.rows: list[dict[str, Any]] = []
        self.writer: Any = None

    # -- creating -------------------------------------------------------------------------
    def holds_run(self) -> bool:
        """True once a run has logged a row or saved a checkpoint here."""
        # a run that failed at start leaves config.json and an empty checkpoints/: no run yet
        return os.path.exists(self.metrics_path) or (
            os.path.isdir(self.checkpoint_dir) and bool(os.listdir(self.checkpoint_dir)))

    def check(self, *, resume: bool, overwrite: bool) -> None:
        """Refuse to start over a run by accident (writes nothing)."""
        if self.holds_run() and not resume and not overwrite:
            raise InvalidConfig("out", self.path, "an empty or new directory: it already holds a run "
                                "(pass --resume to continue it, or --overwrite to start over)")

    def create(self, config: dict[str, Any], *, resume: bool, overwrite: bool) -> None:
        """Make the folder (clearing an old run's files with ``overwrite``) and write ``config.json``."""
        self.check(resume=resume, overwrite=overwrite)
        if not self.write:
            return
        if self.holds_run() and not resume:
            for name in self.RUN_FILES:
                p = os.path.join(self.path, name)
                if os.path.isdir(p):
                    shutil.rmtree(p)
                elif os.path.exists(p):
                    os.remove(p)
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        atomic_write_text(os.path.join(self.path, "config.json"), json.dumps(config, indent=2))

    def open_tensorboard(self, purge_step: int) -> None:
        """Write TensorBoard events into ``tb/`` (events past ``purge_step`` from a killed run go)."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # pragma: no cover - tensorboard is in the train extra
            return
        if not self.write:
            return
        self.writer = SummaryWriter(os.path.join(self.path, "tb"), purge_step=purge_step)

    # -- metrics --------------------------------------------------------------------------
    def load_metrics(self, up_to_iteration: int) -> list[dict[str, Any]]:
        """Keep the rows up to ``up_to_iteration`` (a killed run's later rows go) and return them."""
        self.rows = [r for r in report.read_metrics(self.metrics_path)
                     if int(r.get("iteration", 0)) <= up_to_iteration]
        self._rewrite()
        return self.rows

    def has_row(self, iteration: int) -> bool:
        return any(r.get("iteration") == iteration for r in self.rows)

    def log(self, row: dict[str, Any]) -> None:
        """Append one metrics row (fsynced) and send its numbers to TensorBoard."""
        row = {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in row.items()}
        if not self.write:
            self.rows.append(row)
            return
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.rows.append(row)
        self._scalars(row)

    def update_last(self, extra: dict[str, Any]) -> None:
        """Add ``extra`` to the last row (e.g. a closing evaluation)."""
        self.rows[-1].update(extra)
        self._rewrite()
        self._scalars({"iteration": self.rows[-1]["iteration"], **extra})

    def _rewrite(self) -> None:
        if not self.write:
            return
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in self.rows))

    def _scalars(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for k, v in row.items():
            if k != "iteration" and isinstance(v, (int, float)) and math.isfinite(v):
                self.writer.add_scalar(k, v, row["iteration"])
        self.writer.flush()

    # -- checkpoints and the policy folder -------------------------------------------------
    def save_checkpoint(self, iteration: int, state: dict[str, Any]) -> str:
        """Atomically write ``checkpoints/iter_NNNNNN.pt``; older ones past ``keep_checkpoints`` go."""
        import torch

        path = os.path.join(self.checkpoint_dir, f"iter_{iteration:06d}.pt")
        if not self.write:
            return path
        torch.save(state, path + ".tmp")
        os.replace(path + ".tmp", path)
        for old in self.checkpoints()[: -self.keep_checkpoints]:
            os.remove(old)
        return path

    def checkpoints(self) -> list[str]:
        """Checkpoint files, oldest first."""
        return sorted(glob.glob(os.path.join(self.checkpoint_dir, "iter_*.pt")))

    def latest_checkpoint(self) -> dict[str, Any] | None:
        """The newest checkpoint's state (with its ``path``), or None."""
        import torch

        paths = self.checkpoints()
        if not paths:
            return None
        state = torch.load(paths[-1], map_location="cpu", weights_only=False)
        state["path"] = paths[-1]
        return state

    # -- the end ----------------------------------------------------------------------------
    def finish(self, title: str, extra: dict[str, Any], console: Any = None) -> dict[str, Any]:
        """Draw the learning curve, write ``summary.json``, print the summary table; returns the summary."""
        if not self.write:
            summary = report.summarize(self.rows)
            summary.update(extra)
            summary.update({"out": self.path, "learning_curve": ""})
            return summary
        png = os.path.join(self.path, "learning_curve.png")
        try:
            report.plot_learning_curve(self.rows, png, title=title)
        except Exception as exc:  # noqa: BLE001 - a plot must never lose a finished run
            if console is not None:
                console.print(f"[yellow]could not draw the learning curve: {exc}[/]")
            png = ""
        summary = report.summarize(self.rows)
        summary.update(extra)
        summary.update({"out": self.path, "learning_curve": png})
        atomic_write_text(os.path.join(self.path, "summary.json"), json.dumps(summary, indent=2))
        if console is not None:
            console.print(report.summary_table(self.rows, title=f"{title}: {self.path}"))
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        return summary
