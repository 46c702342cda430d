"""``stepgym bench``: microseconds per step() and reset() of envs."""

from __future__ import annotations

import argparse

from stepgym.commands._common import add_env_kwargs_option, parse_env_kwargs
from stepgym.errors import InvalidArgument

HELP = "time step() and reset() of envs (median microseconds per call)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", action="append", help="env id (repeatable); default: every registered stepgym/ env")
    p.add_argument("--episodes", type=int, default=200, help="episodes per repetition (default 200)")
    p.add_argument("--repeats", type=int, default=5, help="repetitions; the median of their medians is shown (default 5)")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.add_argument("--no-import", action="store_true", help="skip timing `import stepgym`")
    add_env_kwargs_option(p)


def run(args: argparse.Namespace) -> int:
    from stepgym.benchmark import TRIVIAL_ID, import_times, summarize, time_env
    from stepgym.registration import list_envs, resolve_env_id

    if args.episodes < 1 or args.repeats < 1:
        raise InvalidArgument("--episodes and --repeats must be at least 1")
    kwargs = parse_env_kwargs(args.env_kwargs)
    ids = [resolve_env_id(i) for i in args.env] if args.env else [e.id for e in list_envs("stepgym") if not e.requires]
    rows: list[tuple[str, str, dict[str, float]]] = []
    for env_id in [TRIVIAL_ID, *ids]:
        try:
            reps = [time_env(env_id, args.episodes, {} if env_id == TRIVIAL_ID else kwargs) for _ in range(args.repeats)]
        except Exception as exc:  # an env that cannot run here: report, keep timing the others
            rows.append((env_id, f"error: {type(exc).__name__}: {exc}", {}))
            continue
        rows.append((env_id, "", summarize(reps)))
    imports = None if args.no_import else import_times(max(11, 2 * args.repeats + 1))
    if args.markdown:
        print("| env | call | median µs |\n|---|---|---:|")
        for env_id, err, med in rows:
            if err:
                print(f"| {env_id} | {err} | |")
            for k, v in med.items():
                print(f"| {env_id} | {k} | {v:.1f} |")
        if imports:
            g, s = imports
            print(f"\n`import gymnasium`: {g * 1e3:.0f} ms; `import gymnasium; import stepgym`: {s * 1e3:.0f} ms "
                  f"(stepgym adds {(s - g) * 1e3:.0f} ms)")
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"µs per call (median of {args.repeats} repetitions x {args.episodes} episodes)")
    t.add_column("env", style="cyan")
    t.add_column("call")
    t.add_column("median µs", justify="right")
    for env_id, err, med in rows:
        if err:
            t.add_row(env_id, err, "")
        for k, v in med.items():
            t.add_row(env_id, k, f"{v:.1f}")
    console = Console()
    console.print(t)
    if imports:
        g, s = imports
        console.print(f"import gymnasium: {g * 1e3:.0f} ms; + import stepgym: {s * 1e3:.0f} ms (stepgym adds {(s - g) * 1e3:.0f} ms)")
    return 0
