"""The ``stepgym`` command.

Each subcommand lives in ``stepgym/commands/<name>.py`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Those modules import only light
things at module level so ``stepgym --help`` stays fast; heavy imports (torch) happen
inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from stepgym.errors import StepgymError

#: Subcommands in the order ``stepgym --help`` shows them.
COMMANDS: tuple[str, ...] = ("list", "play", "check", "eval", "train", "sft", "serve", "serve-env", "replay", "bench")


class _Parser(argparse.ArgumentParser):
    """Bad arguments get one line (what is wrong, where to look), not the whole usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="stepgym",
        description="Text environments for LLM agents, and the StepPO trainer.",
    )
    from stepgym import __version__

    parser.add_argument("--version", action="version", version=f"stepgym {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = f"stepgym.commands.{name.replace('-', '_')}"  # serve-env lives in serve_env.py
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        # argparse %-formats help strings: "95% CI" must not break `stepgym --help`.
        p = sub.add_parser(name, help=mod.HELP.replace("%", "%%"), description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stepgym`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except StepgymError as exc:
        from rich.console import Console
        from rich.markup import escape

        # escape: messages quote pip commands such as "stepgym[train]", which are not markup.
        # soft_wrap: one error is one line, also when stderr is a file or a pipe.
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
