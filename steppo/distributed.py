"""Several training processes on ``torch.distributed`` (``torchrun --nproc-per-node N -m stepgym train``).

A run is distributed when ``WORLD_SIZE > 1`` (torchrun sets ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``); otherwise :func:`context` returns an inactive
:class:`DistContext` and nothing here runs a collective, so single-process runs are unchanged.

What each rank does (see ``docs/training.md``, "Several processes: torch.distributed"):

* **collect** its share of the iteration's task seeds: whole groups of ``group_size`` equal
  seeds, consecutive, so group algorithms (GRPO, RLOO, GSPO, GiGPO) never split a group;
  trajectory ids stay those one process would give (``it * episodes_per_iteration + k``);
* **advantages**: the batch-wide whitening of ``masked_normalize`` (StepPO / token-PPO /
  REINFORCE++) sums its count, sum and sum of squared deviations over the ranks
  (:func:`steppo.advantages.set_reducer`); group statistics stay on the rank that holds the group;
* **update**: every epoch has the same number of minibatches on every rank
  (``ceil(global steps / minibatch_size)``); a rank splits its shuffled rows (or trajectories)
  into that many chunks, and a micro-batch's loss weight is its rows (trajectories for GSPO)
  over the *global* minibatch's rows, so the summed gradient (:meth:`DistContext.all_reduce_grads`)
  is the gradient one process computes for the same global minibatch; clipping and AdamW then
  run on identical gradients, so the weights stay identical on every rank;
* **writes**: rank 0 alone writes metrics, TensorBoard, checkpoints and ``policy/``; metrics
  rows hold global figures (every rank's episodes).

A rank that dies (``kill -9``) or hangs past ``--dist-timeout`` ends the job: the collective
error (or torchrun's SIGTERM) becomes one :class:`RankLost` line naming the rank that stopped
answering and the checkpoint to ``--resume`` from.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import torch

from stepgym.errors import StepgymError

__all__ = ["DistContext", "RankLost", "Terminated", "context", "shard_seeds", "DEFAULT_TIMEOUT_S"]

DEFAULT_TIMEOUT_S = 1800
_HEARTBEAT_S = 1.0


class RankLost(StepgymError):
    """Another rank vanished (killed, crashed, or silent past the timeout): the job stops."""


class Terminated(BaseException):
    """SIGTERM from the launcher (torchrun stops the other ranks when one dies); not an ``Exception``
    so that no ``except Exception`` on the way swallows it."""


def shard_seeds(n_episodes: int, group_size: int, rank: int, world: int) -> tuple[int, int]:
    """``[start, stop)`` of the episodes rank ``rank`` collects: whole groups, contiguous, balanced.

    Example:
        >>> [shard_seeds(8, 2, r, 2) for r in range(2)], [shard_seeds(12, 4, r, 2) for r in range(2)]
        ([(0, 4), (4, 8)], [(0, 4), (4, 12)])
    """
    n_groups = n_episodes // group_size
    return (rank * n_groups // world) * group_size, ((rank + 1) * n_groups // world) * group_size


class DistContext:
    """This process's place in the job, and the collectives the trainer uses.

    Inactive (``world == 1``) it runs no collective: every method returns its input.
    """

    def __init__(self, rank: int = 0, world: int = 1, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.rank, self.world, self.timeout_s = rank, world, timeout_s
        self.active = world > 1
        self.what = "setup"  # the phase in progress, for the error line
        self.checkpoint_dir = ""  # where the error line looks for the last checkpoint
        self._store: Any = None
        self._stop_heartbeat = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- start -----------------------------------------------------------------------------
    def init(self) -> None:
        """``init_process_group`` from torchrun's environment (gloo on CPU, nccl with CUDA)."""
        import torch.distributed as dist

        if not self.active or dist.is_initialized():
            return
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        try:
            dist.init_process_group(backend, timeout=timedelta(seconds=self.timeout_s))
        except Exception as exc:  # noqa: BLE001 - a launcher problem becomes one line
            raise RankLost(f"rank {self.rank}: torch.distributed could not start ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        from steppo import advantages

        advantages.set_reducer(self.all_reduce_sum)
        try:  # a heartbeat in the launcher's store tells, after a failure, which rank vanished
            self._store = dist.distributed_c10d._get_default_store()
            self._heartbeat_thread = threading.Thread(target=self._heartbeat, daemon=True, name="stepgym-heartbeat")
            self._heartbeat_thread.start()
        except Exception:  # noqa: BLE001 - the diagnosis is optional
            self._store = None
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(signal.SIGTERM, _on_sigterm)

    def close(self) -> None:
        import torch.distributed as dist

        self._stop_heartbeat.set()
        thread = self._heartbeat_thread
        if thread is not None:
            # the store must outlive any call the heartbeat has in flight: a store torn down under a
            # running call aborts the process ("terminate called without an active exception")
            thread.join(timeout=2 * _HEARTBEAT_S + 5)
            self._heartbeat_thread = None
        if self.active and dist.is_initialized():
            from steppo import advantages

            advantages.set_reducer(None)
            with contextlib.suppress(Exception):
                dist.destroy_process_group()

    def _heartbeat(self) -> None:
        key = f"stepgym/heartbeat/{self.rank}"
        while not self._stop_heartbeat.wait(_HEARTBEAT_S):
            try:
                self._store.add(key, 1)
            except Exception:  # noqa: BLE001 - the store went away with the job
                return

    # -- collectives ----------------------------------------------------------------------------
    def _device(self) -> torch.device:
        import torch.distributed as dist

        return torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """The elementwise sum of ``t`` over the ranks (a new tensor on ``t``'s device)."""
        if not self.active:
            return t
        import torch.distributed as dist

        with self.guard():
            buf = t.detach().to(self._device()).clone()
            dist.all_reduce(buf)
        return buf.to(t.device)

    def all_reduce_min(self, x: float) -> float:
        if not self.active:
            return x
        import torch.distributed as dist

        with self.guard():
            buf = torch.tensor([x], dtype=torch.float64, device=self._device())
            dist.all_reduce(buf, op=dist.ReduceOp.MIN)
        return float(buf[0])

    def total(self, n: int) -> int:
        """``n`` summed over the ranks."""
        if not self.active:
            return n
        return int(self.all_reduce_sum(torch.tensor([float(n)], dtype=torch.float64))[0])

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on any."""
        if not self.active:
            return flag
        return bool(self.all_reduce_sum(torch.tensor([float(flag)], dtype=torch.float64))[0] > 0)

    def all_gather_object(self, obj: Any) -> list[Any]:
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        with self.guard():
            dist.all_gather_object(out, obj)
        return out

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters on every rank (a random init must not differ)."""
        if not self.active:
            return
        import torch.distributed as dist

        with self.guard(), torch.no_grad():
            for p in module.parameters():
                buf = p.data.to(self._device())
                dist.broadcast(buf, 0)
                if buf.data_ptr() != p.data.data_ptr():
                    p.data.copy_(buf)

    def all_reduce_grads(self, params: Sequence[torch.nn.Parameter], bucket_numel: int = 1 << 24) -> None:
        """Sum the gradients of ``params`` over the ranks (in buckets of ``bucket_numel`` values).

        A parameter with no gradient on any rank keeps ``grad = None`` (AdamW skips it, as one
        process would); one with a gradient on some ranks only counts zeros for the others.
        """
        if not self.active:
            return
        import torch.distributed as dist

        dev = self._device()
        has = self.all_reduce_sum(torch.tensor([float(p.grad is not None) for p in params], dtype=torch.float32))
        live = [p for p, h in zip(params, has.tolist()) if h > 0]
        for p in live:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        with self.guard():
            bucket: list[torch.nn.Parameter] = []
            size = 0
            for p in live + [None]:  # type: ignore[list-item]
                if p is not None and (size + p.numel() <= bucket_numel or not bucket):
                    bucket.append(p)
                    size += p.numel()
                    continue
                if bucket:
                    flat = torch.cat([q.grad.reshape(-1).to(dev) for q in bucket])
                    dist.all_reduce(flat)
                    offset = 0
                    for q in bucket:
                        n = q.numel()
                        q.grad.copy_(flat[offset:offset + n].view_as(q.grad))
                        offset += n
                bucket, size = ([p], p.numel()) if p is not None else ([], 0)

    # -- failure ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Turn a failed collective (or the launcher's SIGTERM) into one :class:`RankLost` line."""
        try:
            yield
        except (RankLost, KeyboardInterrupt):
            raise
        except (RuntimeError, Terminated) as exc:
            raise self.lost(exc) from None

    def lost(self, exc: BaseException) -> RankLost:
        """The :class:`RankLost` for ``exc``: which rank stopped, and the checkpoint to resume from."""
        vanished = self._silent_ranks()
        if isinstance(exc, Terminated):
            how = "the launcher stopped this rank"
        elif "timeout" in str(exc).lower() or "timed out" in str(exc).lower():
            how = f"a collective timed out after {self.timeout_s:g} s (--dist-timeout)"
        else:
            how = f"a collective failed ({type(exc).__name__})"
        who = (f"rank {', '.join(map(str, vanished))} vanished" if vanished
               else "another rank vanished")
        ckpt = ""
        if self.checkpoint_dir and os.path.isdir(self.checkpoint_dir):
            names = sorted(n for n in os.listdir(self.checkpoint_dir) if n.startswith("iter_") and n.endswith(".pt"))
            ckpt = os.path.join(self.checkpoint_dir, names[-1]) if names else ""
        where = (f"the last checkpoint is {ckpt}; continue with the same command plus --resume (any number of "
                 "processes)" if ckpt else "no checkpoint was saved yet; start again (--overwrite)")
        return RankLost(f"distributed training stopped during {self.what}: {who} ({how}, seen by rank "
                        f"{self.rank} of {self.world}); {where}")

    def _silent_ranks(self) -> list[int]:
        """Ranks whose heartbeat did not move over ~2.5 heartbeats (empty when unknown)."""
        if self._store is None:
            return []
        try:
            self._store.set_timeout(timedelta(seconds=3))
            keys = [f"stepgym/heartbeat/{r}" for r in range(self.world)]
            before = [self._store.add(k, 0) for k in keys]
            time.sleep(2.5 * _HEARTBEAT_S)
            after = [self._store.add(k, 0) for k in keys]
        except Exception:  # noqa: BLE001 - the store went down with rank 0
            return [0] if self.rank != 0 else []
        return [r for r in range(self.world) if r != self.rank and after[r] == before[r]]


def _on_sigterm(signum: int, frame: Any) -> None:  # pragma: no cover - exercised via subprocess tests
    raise Terminated()


_CONTEXT: DistContext | None = None


def context(timeout_s: float | None = None) -> DistContext:
    """This process's :class:`DistContext` (from ``RANK``/``WORLD_SIZE``), started on first use."""
    global _CONTEXT
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if _CONTEXT is None or _CONTEXT.world != world:
        _CONTEXT = DistContext(int(os.environ.get("RANK", "0") or 0), world,
                               timeout_s if timeout_s is not None else DEFAULT_TIMEOUT_S)
    elif timeout_s is not None:
        _CONTEXT.timeout_s = timeout_s
    _CONTEXT.init()
    return _CONTEXT


def n_minibatches(global_rows: int, minibatch_size: int) -> int:
    """Minibatches per epoch of a distributed update (the same on every rank)."""
    return max(1, math.ceil(global_rows / minibatch_size))


def split_units(units: Sequence[list[int]], k: int) -> list[list[list[int]]]:
    """``k`` consecutive chunks of ``units`` (lists of rows) with about equal rows (some may be empty).

    Example:
        >>> split_units([[0], [1, 2], [3], [4, 5, 6], [7]], 2)
        [[[0], [1, 2], [3]], [[4, 5, 6], [7]]]
        >>> split_units([[0, 1]], 3)
        [[[0, 1]], [], []]
    """
    total = sum(len(u) for u in units)
    chunks: list[list[list[int]]] = [[] for _ in range(k)]
    seen = 0
    for u in units:
        # the chunk whose share of the rows this unit's first row falls in
        chunks[min(k - 1, seen * k // max(1, total))].append(u)
        seen += len(u)
    return chunks
