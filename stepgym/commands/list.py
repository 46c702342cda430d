"""``stepgym list``: a table of registered envs."""

from __future__ import annotations

import argparse
import importlib.util

HELP = "list registered environments"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--all", action="store_true", help="include envs of every namespace, not only stepgym/")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from stepgym.registration import list_envs

    envs = list_envs(None if args.all else "stepgym", remote=True)  # remote: OpenEnv-v0 and the pool
    if args.json:
        import json

        print(json.dumps([{"id": e.id, "description": e.description, "max_steps": e.max_steps,
                           "reward_range": e.reward_range, "requires": e.requires} for e in envs], indent=1))
        return 0
    table = Table(title=f"{len(envs)} registered environments")
    table.add_column("id", style="bold cyan", no_wrap=True)
    table.add_column("description")
    table.add_column("max steps", justify="right")
    table.add_column("reward range", justify="right")
    for e in envs:
        rr = f"[{e.reward_range[0]:g}, {e.reward_range[1]:g}]" if e.reward_range else "?"
        missing = bool(e.requires) and importlib.util.find_spec(e.requires.split()[-1]) is None
        desc = escape(e.description) + (f" [dim](needs: {escape(e.requires)})[/]" if missing else "")
        table.add_row(e.id, desc, str(e.max_steps) if e.max_steps else "-", rr)
    Console().print(table)
    return 0
