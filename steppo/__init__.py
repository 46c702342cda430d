"""steppo: the StepPO reference trainer for stepgym environments.

Step-level GAE and a step-level importance ratio (see docs/algorithm.md), with token-PPO,
GRPO, RLOO, REINFORCE++, GSPO and GiGPO baselines on the same rollouts. Needs the
``train`` extra: ``pip install "stepgym[train]"``.

``steppo.train(cfg, warm_start=...)`` runs the whole job (:mod:`steppo.pipeline`); algorithms
are registered in :mod:`steppo.algos`. Importing ``steppo`` alone loads no torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["train"]


def train(cfg: Any, warm_start: Any = None, *, console: Any = None) -> dict[str, Any]:
    """Run a training job: see :func:`steppo.pipeline.train`."""
    from steppo.pipeline import train as _train

    return _train(cfg, warm_start, console=console)
