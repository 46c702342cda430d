"""``stepgym check``: run the text-env checker and print a pass/fail table."""

from __future__ import annotations

import argparse

from stepgym.commands._common import add_env_kwargs_option, parse_env_kwargs
from stepgym.errors import InvalidArgument

HELP = "check envs against the stepgym and Gymnasium contracts"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("env_ids", nargs="*", metavar="ID", help="env ids (module:ns/Name-v0 for third-party envs)")
    p.add_argument("--all", action="store_true",
                   help="check every registered stepgym/ env whose optional extra (if any) is installed")
    p.add_argument("--episodes", type=int, default=3, help="seeded episodes per determinism/expert check (default 3)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    add_env_kwargs_option(p)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from stepgym.checker import run_checks
    from stepgym.registration import is_available, list_envs

    if args.episodes < 1:
        raise InvalidArgument(f"--episodes must be at least 1, got {args.episodes}")
    from rich.markup import escape

    console = Console()
    ids = list(args.env_ids)
    if args.all:
        envs = list_envs("stepgym")
        ids += [e.id for e in envs if is_available(e)]
        missing = [e for e in envs if not is_available(e)]
        for e in missing:
            console.print(f"[yellow]skipped {e.id}: needs `{escape(e.requires)}`[/]")
    if not ids:
        raise InvalidArgument("name env ids to check, or pass --all (see `stepgym list`)")
    kwargs = parse_env_kwargs(args.env_kwargs)
    table = Table(title="stepgym check")
    table.add_column("env", style="bold cyan", no_wrap=True)
    table.add_column("result")
    table.add_column("checks", justify="right")
    table.add_column("problems")
    failed = 0
    for env_id in ids:
        try:
            results = run_checks(env_id, env_kwargs=kwargs, episodes=args.episodes, seed=args.seed)
        except Exception as exc:  # a broken constructor is a failed check, not a crash of the table
            from stepgym.errors import UnknownEnvError

            if isinstance(exc, UnknownEnvError):
                raise
            table.add_row(env_id, "[bold red]FAIL[/]", "0", f"make raised {type(exc).__name__}: {exc}")
            failed += 1
            continue
        bad = [r for r in results if not r.passed]
        failed += bool(bad)
        problems = "\n".join(f"{r.name}: {r.message}" for r in bad)
        table.add_row(env_id, "[bold red]FAIL[/]" if bad else "[bold green]pass[/]",
                      f"{len(results) - len(bad)}/{len(results)}", problems)
    console.print(table)
    return 1 if failed else 0
