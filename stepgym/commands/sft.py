"""``stepgym sft``: behaviour cloning from an env's expert (the warm start of ``stepgym train``).

Options are generated from :class:`steppo.config.SFTConfig`. No torch at import time.
"""

from __future__ import annotations

import argparse

from stepgym.commands._common import add_env_kwargs_option, with_env_kwarg_items

HELP = "behaviour-clone an env's expert into a policy folder (warm start for `stepgym train --init`)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from steppo.config import SFTConfig, add_config_arguments

    # -k KEY=VALUE as in eval/play (the config's own --env-kwargs JSON option is the other spelling)
    add_env_kwargs_option(p, dest="_env_kwarg_items", json_option=False)
    add_config_arguments(p, (SFTConfig,))


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from steppo.config import config_from_args

    cfg = config_from_args(args, "sft")
    cfg = with_env_kwarg_items(cfg, args._env_kwarg_items)
    from stepgym.registration import check_trainable

    check_trainable(cfg.env, cfg.env_kwargs, expert=True)  # bad env input fails here, before a model loads
    from steppo.sft import run_sft

    console = Console(highlight=False)
    res = run_sft(cfg, console)
    console.print(f"policy saved to {res['policy']}; train from it with: stepgym train --init {cfg.out} ...")
    return 0
