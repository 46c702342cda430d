"""One distributed update over a given global rollout (run by tests/steppo/test_distributed.py under torchrun).

``python -m torch.distributed.run --standalone --nproc-per-node N tests/steppo/dist_update_worker.py ROLLOUT CFG``:
each rank takes the episodes ``shard_seeds`` gives it from the pickled global rollout, runs
``Trainer.update`` on them, and rank 0 writes ``checkpoints/iter_000001.pt``.
"""

from __future__ import annotations

import json
import pickle
import sys

import tests.steppo.toy  # noqa: F401  (registers steppotest/Boxes-v0)
from steppo import distributed
from steppo.config import make_train_config
from steppo.rollout import RolloutBatch
from steppo.trainer import Trainer


def main(rollout_path: str, cfg_path: str) -> None:
    with open(cfg_path) as fh:
        cfg = make_train_config(json.load(fh))
    with open(rollout_path, "rb") as fh:
        rollout: RolloutBatch = pickle.load(fh)
    trainer = Trainer(cfg)
    trainer.setup()
    d = trainer.dist
    lo, hi = distributed.shard_seeds(cfg.episodes_per_iteration, cfg.group_size, d.rank, d.world)
    first = cfg.episodes_per_iteration  # iteration 1's traj ids start there
    mine = range(first + lo, first + hi)
    shard = RolloutBatch(steps=[s for s in rollout.steps if s.traj_id in mine],
                         episodes=[e for e in rollout.episodes if e.traj_id in mine])
    trainer.update(shard, 1)
    trainer.save_checkpoint(1)
    d.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
