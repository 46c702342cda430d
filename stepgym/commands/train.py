"""``stepgym train``: train an LLM policy on any registered text env with StepPO or a baseline.

Every option is generated from the fields of :mod:`steppo.config` (``StepPOConfig`` /
``GRPOConfig``); ``--preset demo`` is the README's main job (SmolLM2-135M on ToolUse-v0
easy, a noisy-expert behaviour-cloning warm start, then 4 StepPO iterations).

No torch at import time: ``stepgym --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os

from stepgym.commands._common import add_env_kwargs_option, with_env_kwarg_items

HELP = "train an LLM policy on a text env (StepPO, PPO, GRPO, RLOO, REINFORCE++, GSPO, GiGPO)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from steppo.config import PRESETS, GRPOConfig, StepPOConfig, add_config_arguments

    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="start from a named set of options; explicit options override it "
                        "(demo: SmolLM2-135M on ToolUse-v0 easy, a noisy-expert BC warm start, then 4 StepPO "
                        "iterations, RL's own held-out gain in about 6 min on 2 CPU cores; learn: the same recipe "
                        "on the tiny model, StepPO to 6,000 env steps, about 3.5 min; tiny: a smoke run)")
    p.add_argument("--sft-episodes", dest="sft_episodes", type=int, default=None, metavar="N",
                   help="warm start: behaviour-clone N expert episodes into OUT/sft first when --init is not given "
                        "(0 = no warm start; the demo preset uses 128)")
    # -k KEY=VALUE as in eval/play (the config's own --env-kwargs JSON option is the other spelling)
    add_env_kwargs_option(p, dest="_env_kwarg_items", json_option=False)
    add_config_arguments(p, (StepPOConfig, GRPOConfig))
    p.add_argument("--async", dest="async_rollout", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                   help="the short spelling of --async-rollout")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from stepgym.errors import InvalidConfig
    from steppo.config import PRESETS, SFTConfig, config_from_args

    preset = dict(PRESETS[args.preset]) if args.preset else {}
    sft_episodes = args.sft_episodes if args.sft_episodes is not None else int(preset.get("sft_episodes", 0))
    if sft_episodes < 0:
        raise InvalidConfig("sft_episodes", sft_episodes, "an integer >= 0")
    cfg = config_from_args(args, "train", preset)
    cfg = with_env_kwarg_items(cfg, args._env_kwarg_items)
    warm_start = None
    if sft_episodes and not cfg.init:
        warm_start = SFTConfig.for_warm_start(
            cfg, episodes=sft_episodes, epochs=int(preset.get("sft_epochs", 2)),
            lr=float(preset.get("sft_lr", 1e-4 if cfg.model != "tiny" else 1e-3)),
            demo_noise=float(preset.get("sft_demo_noise", 0.0)))

    from steppo.pipeline import train  # checks the env and OUT before any model loads

    # under torchrun, rank 0 alone prints (os.environ["RANK"]; unset in one process)
    console = Console(highlight=False, quiet=os.environ.get("RANK", "0") not in ("", "0"))
    base_n = preset.get("base_eval_episodes")
    summary = train(cfg, warm_start, console=console, base_eval_episodes=None if base_n is None else int(base_n))
    first, last = summary.get("eval_success_first"), summary.get("eval_success_last")
    if first is not None and last is not None:
        base_eval = summary["base_eval"]
        parts = []
        if base_eval:
            parts.append(f"{cfg.model} alone {base_eval['eval/success_rate']:.2f}")
            parts.append(f"after the warm start {first:.2f}")
        else:
            parts.append(f"before {first:.2f}")
        parts.append(f"after {summary['iterations_done']} {cfg.algo} iterations {last:.2f}")
        console.print("[bold]held-out success:[/] " + " -> ".join(parts))
        gain = summary.get("eval_gain")
        if gain:
            console.print(f"  {gain['n']} held-out seeds, 95% intervals: before {gain['before']:.2f} "
                          f"[{gain['before_low']:.2f}, {gain['before_high']:.2f}], after {gain['after']:.2f} "
                          f"[{gain['after_low']:.2f}, {gain['after_high']:.2f}], gain {gain['gain']:+.2f} "
                          f"[{gain['gain_low']:+.2f}, {gain['gain_high']:+.2f}] (paired by seed: "
                          f"{gain['gained']} seeds gained, {gain['lost']} lost)")
    if summary.get("interrupted"):
        console.print(f"stopped after iteration {summary['iterations_done']}; continue with the same command plus --resume")
        return 130
    return 0
