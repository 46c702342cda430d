"""``stepgym replay FILE``: show recorded episodes (from ``RecordTrajectories``) with rich."""

from __future__ import annotations

import argparse

HELP = "show episodes recorded by RecordTrajectories (a .jsonl file)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="the .jsonl file written by stepgym.wrappers.RecordTrajectories")
    p.add_argument("--episode", type=int, action="append", default=None, metavar="N",
                   help="show only the N-th episode of the file (0-based, file order); repeatable")
    p.add_argument("--limit", type=int, default=3, help="show at most this many episodes in full (default 3)")
    p.add_argument("--summary", action="store_true", help="only the table of episodes")
    p.add_argument("--prompts", action="store_true", help="also show the prompt each action was taken from")
    p.add_argument("--max-chars", type=int, default=1500,
                   help="cut each text shown to this many characters (default 1500; 0 = no limit)")


def _clip(text: object, limit: int) -> str:
    from stepgym.core import clip_text

    s = text if isinstance(text, str) else repr(text)
    # show lone surrogates (recorded as \udXXX escapes) as escapes, not as a replacement char
    s = s.encode("utf-8", errors="backslashreplace").decode("utf-8")
    return clip_text(s, limit) if limit > 0 else s


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console, Group
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    from stepgym.errors import InvalidArgument
    from stepgym.wrappers.recording import read_recording

    path = Path(args.file)
    if not path.is_file():
        raise InvalidArgument(f"no such file: {str(path)!r}; pass the .jsonl path given to RecordTrajectories(path)")
    if args.limit < 0 or args.max_chars < 0:
        raise InvalidArgument("--limit and --max-chars must be >= 0")
    episodes, skipped = read_recording(path)
    console = Console()
    if not episodes:
        console.print(f"[yellow]{path}: no recorded steps[/]" + (f" ({skipped} unreadable lines)" if skipped else ""))
        return 0
    if args.episode:
        bad = [i for i in args.episode if not 0 <= i < len(episodes)]
        if bad:
            raise InvalidArgument(f"--episode {bad[0]} is out of range: the file has episodes 0..{len(episodes) - 1}")

    table = Table(title=f"{path.name}: {len(episodes)} episode(s)" + (f", {skipped} unreadable line(s) skipped" if skipped else ""))
    for col, just in (("#", "right"), ("run", "left"), ("episode", "right"), ("env", "left"), ("seed", "right"),
                      ("steps", "right"), ("return", "right"), ("end", "left"), ("success", "left")):
        table.add_column(col, justify=just, overflow="fold")  # type: ignore[arg-type]
    for i, ep in enumerate(episodes):
        steps = ep["steps"]
        last = steps[-1]
        ret = sum(float(s.get("reward", 0.0)) for s in steps)
        end = "terminated" if last.get("terminated") else "truncated" if last.get("truncated") else "unfinished"
        success = last.get("info", {}).get("success")
        table.add_row(str(i), escape(str(ep["run"])), str(ep["episode"]), escape(str(last.get("env_id") or "-")),
                      str(last.get("seed")), str(len(steps)), f"{ret:.3f}", end,
                      {True: "[green]yes[/]", False: "[red]no[/]"}.get(success, "-"))
    console.print(table)
    if args.summary:
        return 0

    chosen = args.episode if args.episode else list(range(min(args.limit, len(episodes))))
    lim = args.max_chars
    for i in chosen:
        ep = episodes[i]
        console.rule(f"episode {i} (run {ep['run']}, #{ep['episode']})")
        for s in ep["steps"]:
            parts: list[object] = []
            if args.prompts and "prompt" in s:
                parts.append(Text("prompt", style="bold dim"))
                parts.append(Text(_clip(s["prompt"], lim), style="dim"))
            parts.append(Text("action", style="bold cyan"))
            parts.append(Text(_clip(s.get("action", ""), lim)))
            parts.append(Text("observation", style="bold magenta"))
            parts.append(Text(_clip(s.get("observation", ""), lim)))
            info = s.get("info") or {}
            flags = [f"reward {float(s.get('reward', 0.0)):+.3f}"]
            if "reward_components" in info:
                flags.append(escape("(" + ", ".join(f"{k} {float(v):+.3f}" for k, v in info["reward_components"].items()) + ")"))
            if info.get("action_valid") is False:
                flags.append("[red]invalid[/]")
            if s.get("terminated"):
                flags.append("[bold]terminated[/]")
            if s.get("truncated"):
                flags.append("[bold]truncated[/]")
            if "success" in info:
                flags.append("[green]success[/]" if info["success"] else "[red]failure[/]")
            style = "red" if info.get("action_valid") is False else "green" if info.get("success") else "blue"
            console.print(Panel(Group(*parts), title=f"step {s.get('step')}", subtitle=" ".join(flags),
                                border_style=style, title_align="left", subtitle_align="right"))
    return 0
