"""Live progress bars: one look for every long phase of ``stepgym eval``, ``train`` and ``sft``.

:func:`progress_bar` is the one bar: description, bar, done/total, live numbers, elapsed
and remaining time. It shows only on a terminal (never in a pipe, a log file or a test's
captured output) and not when disabled (``--no-progress``).

:func:`episode_progress` is the progress of a batch of episodes (an evaluation): episodes
done / total, successes so far and tokens/s, fed by an :class:`~stepgym.agents.EvalProgress`
callback. Rich shows one live display at a time, so inside a running :func:`progress_bar`
(the iterations of ``stepgym train``) the episodes become a second line of that bar, removed
when they end; otherwise they get a bar of their own that clears itself when done, leaving
the caller's result line as the record.

Example:
    >>> import io
    >>> from rich.console import Console
    >>> from stepgym.agents.evaluate import EvalProgress
    >>> screen = io.StringIO()
    >>> console = Console(file=screen, force_terminal=True, color_system=None, width=100)
    >>> with episode_progress(console, "eval", total=4) as report:
    ...     report(EvalProgress(done=2, total=4, successes=1, errors=0, steps=6, tokens=120.0,
    ...                         tokens_estimated=False, elapsed_s=2.0))
    >>> "2/4 success 1/2 | 60 tok/s" in screen.getvalue()
    True
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich and the eval module load lazily
    from rich.progress import Progress

    from stepgym.agents.evaluate import EvalProgress

__all__ = ["progress_bar", "episode_progress", "episode_stats", "active_bar", "shows_live"]

#: the bar of :func:`progress_bar` running on each console (rich allows one live display per console)
_ACTIVE: weakref.WeakKeyDictionary[Any, Progress] = weakref.WeakKeyDictionary()


def shows_live(console: Any, enabled: bool = True) -> bool:
    """Whether a live bar shows on ``console``: enabled, a terminal, not quiet.

    Example:
        >>> import io
        >>> from rich.console import Console
        >>> shows_live(Console(file=io.StringIO())), shows_live(Console(force_terminal=True))
        (False, True)
    """
    return bool(enabled and console is not None and console.is_terminal and not console.quiet)


def episode_stats(p: EvalProgress | None) -> str:
    """The live numbers after an episode bar: successes so far, agent errors, tokens/s.

    Example:
        >>> from stepgym.agents.evaluate import EvalProgress
        >>> episode_stats(EvalProgress(done=4, total=8, successes=3, errors=1, steps=9, tokens=500.0,
        ...                            tokens_estimated=False, elapsed_s=2.0))
        'success 3/4 | [red]1 error(s)[/] | 250 tok/s'
    """
    if p is None:
        return ""
    parts = [f"success {p.successes}/{p.done}" if p.done else "success -"]
    if p.errors:
        parts.append(f"[red]{p.errors} error(s)[/]")
    rate = p.tokens_per_s
    if rate is not None:
        parts.append(f"{rate:.0f} tok/s")
    return " | ".join(parts)


def progress_bar(console: Any, enabled: bool = True, *, transient: bool = False) -> Progress:
    """The rich progress bar of every long phase (a context manager; add tasks to it).

    Args:
        console: the ``rich.console.Console`` the bar and the lines printed meanwhile go to
            (print through ``bar.console`` so lines appear above the bar).
        enabled: False: no bar at all. It is also off when ``console`` is not a terminal.
        transient: clear the bar when it stops.

    A task's ``stats`` field (markup) shows after the counts.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class _Stats(ProgressColumn):
        """A task's ``stats`` field (markup); empty for a task without one."""

        def render(self, task: Any) -> Text:
            return Text.from_markup(str(task.fields.get("stats", "")))

    class _Bar(Progress):
        """Registers itself as the console's running bar, so evaluations can join it."""

        def start(self) -> None:
            super().start()
            if not self.disable:
                _ACTIVE[self.console] = self

        def stop(self) -> None:
            if _ACTIVE.get(self.console) is self:
                del _ACTIVE[self.console]
            super().stop()

    return _Bar(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Stats(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not shows_live(console, enabled),
        transient=transient,
    )


def active_bar(console: Any) -> Progress | None:
    """The :func:`progress_bar` running on ``console``, if any."""
    return _ACTIVE.get(console) if console is not None else None


@contextlib.contextmanager
def episode_progress(
    console: Any, description: str, total: int, enabled: bool = True, *, join_only: bool = False
) -> Iterator[Callable[[EvalProgress], None]]:
    """Show the progress of ``total`` episodes; yields the callback that reports it.

    Inside a running :func:`progress_bar` on the same console, the episodes are a task of
    that bar (removed at the end); otherwise a transient bar of their own, unless
    ``join_only`` (episodes collected in a background thread, which must not start a live
    display of its own). Off a terminal, or with ``enabled`` False, the callback does nothing.
    """
    outer = active_bar(console) if shows_live(console, enabled) else None
    if outer is None and (join_only or not shows_live(console, enabled)):
        yield lambda p: None
        return
    if outer is not None:
        task = outer.add_task(description, total=total)
        done = [-1]

        def report(p: EvalProgress) -> None:
            # redrawn at once when an episode ends (a short evaluation is not missed between refreshes)
            outer.update(task, completed=p.done, stats=episode_stats(p), refresh=p.done != done[0])
            done[0] = p.done

        try:
            yield report
        finally:
            outer.remove_task(task)
        return
    with progress_bar(console, enabled, transient=True) as bar:
        task = bar.add_task(description, total=total)
        done_own = [-1]

        def report_own(p: EvalProgress) -> None:
            bar.update(task, completed=p.done, stats=episode_stats(p), refresh=p.done != done_own[0])
            done_own[0] = p.done

        yield report_own
