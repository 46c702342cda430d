"""The ``python`` tool: run the agent's code in a sandboxed child process.

ToolUse-v0 offers it when ``"python"`` is in its ``tools`` tuple, for tasks where
computing is easier in code than with the calculator. The code never runs in the env's
process; see :mod:`stepgym.tools.sandbox` for the isolation layers and
docs/security.md for the threat model.

Determinism: the child runs with ``PYTHONHASHSEED=0``, so set and dict orders repeat, but
a program that reads the clock or draws from an unseeded ``random`` prints different text
on each run; trajectories with such calls do not replay byte for byte.
"""

from __future__ import annotations

import math
import signal as _signal
from typing import Any

from stepgym.core import clip_text
from stepgym.errors import InvalidArgument
from stepgym.tools.base import ToolOutput
from stepgym.tools.sandbox import ISOLATIONS, Limits, RunResult, Sandbox

__all__ = ["PythonTool"]


#: C0/C1 control characters (except newline and tab) become visible escapes: a model has
#: no use for them, and raw ESC sequences would reach the terminal of whoever renders the
#: observation (`stepgym play`, logs).
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)] if c not in (0x09, 0x0A)}


def _visible(text: str) -> str:
    return text.translate(_CONTROL)


def _signal_name(num: int) -> str:
    try:
        return _signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


class PythonTool:
    """Runs Python 3 code (standard library only) in a sandbox; returns what it printed.

    Implements the :class:`~stepgym.tools.base.Tool` protocol with ``name="python"``
    and one string argument ``code``. Hostile or broken code never raises: the result is
    ``ToolOutput(text="Error: ...", ok=False)`` with a message the model can act on, and
    the tool keeps working for the next call.

    Args:
        timeout_s: wall-clock seconds per call; the process group is killed after it.
        cpu_s: CPU seconds per call (default: ``timeout_s`` rounded up).
        memory_mb: address-space limit of the child in MiB.
        max_output_chars: characters of output shown to the model (head and tail kept).
        max_code_chars: longest accepted program.
        processes: processes the code may start (bwrap only; without bwrap the guard
            refuses new processes).
        isolation: ``"auto"`` (bubblewrap when it works here, else rlimits + guard),
            ``"bwrap"`` (required) or ``"rlimits"``.
        prestart: keep one sandboxed child started ahead of the next call (each child still
            runs exactly one program), which hides most of the start-up cost (about 2.8x
            faster calls under bwrap, see docs/benchmarks.md); the idle child is killed by
            :meth:`close`, at garbage collection and at exit. The first call starts cold.

    Example:
        >>> from stepgym.tools.python import PythonTool
        >>> tool = PythonTool(timeout_s=5)
        >>> out = tool(code="print(sum(range(10)))")
        >>> out.ok, out.text
        (True, '45')
        >>> bad = tool(code="1 / 0")
        >>> bad.ok, bad.text.splitlines()[-1]
        (False, 'ZeroDivisionError: division by zero')
    """

    name = "python"
    description = (
        "Run Python 3 code (standard library only) in a sandbox with no network and no access to "
        "your files; print() the values you need, the tool returns what was printed."
    )
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "code": {
                "type": "string",
                "description": "A complete Python 3 program; use print() to show results.",
            }
        },
        "required": ["code"],
    }

    def __init__(
        self,
        timeout_s: float = 5.0,
        *,
        cpu_s: int | None = None,
        memory_mb: int = 512,
        max_output_chars: int = 4000,
        max_code_chars: int = 20_000,
        processes: int = 16,
        isolation: str = "auto",
        prestart: bool = True,
    ) -> None:
        if not isinstance(timeout_s, (int, float)) or isinstance(timeout_s, bool) or not timeout_s > 0:
            raise InvalidArgument(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        if not isinstance(max_output_chars, int) or max_output_chars < 64:
            raise InvalidArgument(f"max_output_chars must be an int >= 64, got {max_output_chars!r}")
        if not isinstance(max_code_chars, int) or max_code_chars < 1:
            raise InvalidArgument(f"max_code_chars must be a positive int, got {max_code_chars!r}")
        if isolation not in ISOLATIONS:
            raise InvalidArgument(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
        cpu = int(math.ceil(timeout_s)) if cpu_s is None else cpu_s
        # Bytes kept per stream: 4 bytes per character covers any UTF-8 text.
        self.limits = Limits(
            wall_s=float(timeout_s),
            cpu_s=cpu,
            memory_mb=memory_mb,
            processes=processes,
            output_bytes=max(64, 4 * max_output_chars),
            kill_output_bytes=max(1 << 20, 16 * max_output_chars),
        )
        self.timeout_s = float(timeout_s)
        self.max_output_chars = max_output_chars
        self.max_code_chars = max_code_chars
        self.sandbox = Sandbox(self.limits, isolation=isolation, prestart=prestart)

    @property
    def isolation(self) -> str:
        """``"bwrap"`` or ``"rlimits"``: the layers in force for this tool."""
        return self.sandbox.isolation

    def __call__(self, **arguments: Any) -> ToolOutput:
        try:
            code = arguments.get("code")
            if not isinstance(code, str):
                return ToolOutput(
                    f"Error: python needs a 'code' argument with the program as a string, got "
                    f"{type(code).__name__}. Call it as python(code: string).",
                    ok=False,
                )
            if not code.strip():
                return ToolOutput("Error: the code is empty. Write a Python program that prints its result.", ok=False)
            if len(code) > self.max_code_chars:
                return ToolOutput(
                    f"Error: the code has {len(code)} characters; the limit is {self.max_code_chars}. "
                    "Write a shorter program.",
                    ok=False,
                )
            return self._render(self.sandbox.run(code))
        except Exception as exc:  # the tool must never take the env down
            return ToolOutput(f"Error: the python tool failed: {type(exc).__name__}: {exc}", ok=False)

    def _clip(self, text: str) -> str:
        return clip_text(text, self.max_output_chars)

    def _render(self, r: RunResult) -> ToolOutput:
        lim = self.limits
        r.stdout, r.stderr = _visible(r.stdout), _visible(r.stderr)
        out = r.stdout
        if r.error is not None:
            return ToolOutput(f"Error: the python tool could not run the code ({r.error}).", ok=False)
        if r.output_killed:
            head = self._clip(out) if out else ""
            msg = (f"Error: the code printed more than {lim.kill_output_bytes} bytes and was stopped; "
                   "print only what you need.")
            return ToolOutput(msg + ("\nFirst output:\n" + head if head else ""), ok=False)
        if r.timed_out:
            return ToolOutput(
                f"Error: the code ran longer than the {self.timeout_s:g} s time limit and was stopped "
                "(an infinite loop, or too much work).", ok=False)
        if r.signal is not None:
            if r.signal in (_signal.SIGXCPU, _signal.SIGKILL):
                why = f"used more than {lim.cpu_s} s of CPU time (or was killed) and was stopped"
            else:
                why = f"crashed ({_signal_name(r.signal)})"
            return ToolOutput(f"Error: the code {why}." + (f"\nOutput before that:\n{self._clip(out)}" if out else ""),
                              ok=False)
        err = r.stderr.strip()
        if r.exit_code != 0:
            if "MemoryError" in err:
                err += f"\n(the memory limit is {lim.memory_mb} MB)"
            text = f"Error: the code failed (exit status {r.exit_code}):\n{self._clip(err) if err else '(no message)'}"
            if out.strip():
                text += f"\nOutput before the error:\n{self._clip(out)}"
            return ToolOutput(text, ok=False)
        if r.output_cut:
            out += f"\n[output cut: {r.stdout_bytes} bytes printed, {lim.output_bytes} kept]"
        text = out.rstrip("\n")
        if err:
            text += f"\n[stderr]\n{err}"
        if not text.strip():
            text = "(the code printed nothing; use print() to show results)"
        return ToolOutput(self._clip(text), ok=True)

    def close(self) -> None:
        """Kill the pre-started child (``prestart=True``); the tool still works afterwards."""
        self.sandbox.close()

    def __repr__(self) -> str:
        return f"PythonTool(timeout_s={self.timeout_s:g}, isolation={self.isolation!r})"
