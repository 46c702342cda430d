"""``stepgym sft``: behaviour cloning from an env's expert (the warm start of ``stepgym train``).

Options are generated from :class:`steppo.config.SFTConfig`. No torch at import time.
"""

from __future__ import annotations

import argparse

HELP = "behaviour-clone an env's expert into a policy folder (warm start for `stepgym train --init`)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from steppo.config import SFTConfig, add_config_arguments

    add_config_arguments(p, (SFTConfig,))


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from steppo.config import config_from_args

    cfg = config_from_args(args, "sft")
    from stepgym.registration import check_trainable

    check_trainable(cfg.env, cfg.env_kwargs, expert=True)  # bad env input fails here, before a model loads
    from steppo.sft import run_sft

    console = Console(highlight=False)
    res = run_sft(cfg, console)
    console.print(f"policy saved to {res['policy']}; train from it with: stepgym train --init {cfg.out} ...")
    return 0
