"""The whole job in one call: an optional behaviour-cloning warm start, then RL.

``stepgym train`` calls :func:`train`; so can a script::

    from steppo import train
    from steppo.config import SFTConfig, StepPOConfig

    cfg = StepPOConfig(model="smollm2-135m", env="stepgym/ToolUse-v0", iterations=3, out="runs/mine")
    summary = train(cfg, warm_start=SFTConfig.for_warm_start(cfg, episodes=32, epochs=3, lr=3e-4))
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from stepgym.registration import check_trainable
from steppo.config import SFTConfig, TrainConfig
from steppo.run_dir import RunDir

__all__ = ["train"]


def train(cfg: TrainConfig, warm_start: SFTConfig | None = None, *, console: Any = None,
          base_eval_episodes: int | None = None) -> dict[str, Any]:
    """Train ``cfg``; with ``warm_start``, behaviour-clone the env's expert first and start RL from it.

    Bad env input and an ``--out`` that holds another run fail before any model loads or any
    file is written. With ``cfg.resume`` a finished warm start in ``warm_start.out`` is reused.
    The base model's evaluation before the warm start (greedy) runs ``base_eval_episodes``
    held-out episodes (default: ``cfg.eval_episodes``).

    Returns:
        the trainer's summary, plus ``base_eval`` (the model's held-out scores before the warm
        start, when one ran with ``cfg.eval_before``) and ``eval_gain`` (the first and last held-out
        evaluations paired by seed, with 95% intervals; :func:`steppo.report.paired_gain`).
    """
    from rich.console import Console

    check_trainable(cfg.env, cfg.env_kwargs, expert=warm_start is not None)
    RunDir(cfg.out).check(resume=cfg.resume, overwrite=cfg.overwrite)
    if cfg.init:
        from steppo.loading import resolve_init

        resolve_init(cfg.init)  # a missing folder is a one-line error, never a request to the model hub
    from steppo.trainer import Trainer  # the model and its engine load only once the input is valid

    from steppo import distributed

    ctx = distributed.context(cfg.dist_timeout)  # torchrun (WORLD_SIZE > 1): joins the other processes
    console = console or Console(highlight=False)
    base_eval: dict[str, float] = {}
    if warm_start is not None:
        if cfg.resume and os.path.isdir(os.path.join(warm_start.out, "policy")):
            console.print(f"warm start: reusing {warm_start.out}/policy")
        elif not ctx.is_main:  # rank 0 runs the warm start; the others wait for its policy folder
            ctx.total(0)
        else:
            from steppo.sft import run_sft

            console.print(f"[bold]warm start[/]: behaviour cloning {warm_start.episodes} expert episodes "
                          f"-> {warm_start.out}")
            n_base = cfg.eval_episodes if base_eval_episodes is None else base_eval_episodes
            base_eval = run_sft(warm_start, console, eval_episodes=n_base if cfg.eval_before else 0,
                                eval_seed=cfg.eval_seed)["base_eval"]
            ctx.total(0)
        cfg = dataclasses.replace(cfg, init=warm_start.out)
    if not ctx.active:
        summary = Trainer(cfg, console=console).train()
    else:
        try:
            summary = Trainer(cfg, console=console).train()
            ctx.total(0)  # leave together: no rank tears its process group down while rank 0 still saves
        except distributed.Terminated as exc:  # torchrun stops this rank: another one failed
            raise ctx.lost(exc) from None
        finally:
            ctx.close()
    summary["base_eval"] = base_eval
    summary.update(_eval_gain(cfg.out))
    return summary


def _eval_gain(out: str) -> dict[str, Any]:
    """``eval_gain``: the first and last held-out evaluations of the run in ``out``, paired by seed.

    Success before and after with 95% Wilson intervals and the gain with Newcombe's paired
    interval (:func:`steppo.report.paired_gain`); empty when the run has not two comparable ones.
    """
    from steppo import report

    rows = [r for r in report.read_metrics(os.path.join(out, "metrics.jsonl")) if "eval/successes" in r]
    if len(rows) < 2 or len(rows[0]["eval/successes"]) != len(rows[-1]["eval/successes"]):
        return {}
    return {"eval_gain": report.paired_gain(rows[0]["eval/successes"], rows[-1]["eval/successes"])}
