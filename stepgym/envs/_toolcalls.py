"""Small helpers shared by the tool-calling envs of this package (MultiHopQA, PaperSearch).

``FunctionTool`` adapts a bound method to the :class:`~stepgym.tools.base.Tool` protocol;
``dispatch`` turns one LLM step into a validated call or an error message the model can act
on (unknown tool, bad arguments, unparsable text), in any format
:func:`~stepgym.actions.parse_tool_call` accepts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stepgym.actions import TOOL_CALL_FORMAT_HELP, ParseError, parse_tool_call
from stepgym.core import quote_action
from stepgym.tools.base import ToolOutput, signature, validate_arguments

__all__ = ["FunctionTool", "dispatch", "tool_error_obs"]


@dataclass
class FunctionTool:
    """A tool backed by a Python callable.

    Example:
        >>> t = FunctionTool("echo", "Repeat the text.", {"type": "object",
        ...     "properties": {"text": {"type": "string"}}, "required": ["text"]}, lambda text: text)
        >>> t(text="hi")
        'hi'
    """

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., ToolOutput | str] = field(repr=False)

    def __call__(self, **arguments: Any) -> ToolOutput | str:
        return self.fn(**arguments)


def _react_arguments(tool: FunctionTool, raw: str | None) -> dict[str, Any]:
    """Map ReAct ``tool[input]`` onto the tool's arguments: the first parameter takes the text."""
    props = list(tool.parameters.get("properties", {}))
    raw = (raw or "").strip()
    if not props or not raw:
        return {}
    return {props[0]: raw}


def dispatch(action: str, tools: dict[str, FunctionTool]) -> tuple[FunctionTool, dict[str, Any]] | str:
    """Parse ``action`` and validate it against ``tools``.

    Returns ``(tool, arguments)`` or an error message (a complete sentence for the model).

    Example:
        >>> t = FunctionTool("echo", "Repeat.", {"type": "object",
        ...     "properties": {"text": {"type": "string"}}, "required": ["text"]}, lambda text: text)
        >>> dispatch("Action: echo[hi]", {"echo": t})[1]
        {'text': 'hi'}
        >>> dispatch("hello", {"echo": t})[:15]
        'no tool call fo'
    """
    call = parse_tool_call(action)
    if isinstance(call, ParseError):
        return call.message
    name = call.name
    if call.style == "react":
        # ReAct agents write Search[...] / Finish[...] (HotpotQA's ReAct prompt).
        name = name.lower()
        if name == "finish":
            name = "answer" if "answer" in tools else "submit"
    tool = tools.get(name)
    if tool is None:
        names = ", ".join(sorted(tools))
        return f"unknown tool {quote_action(call.name, 40)}; the tools are: {names}. {TOOL_CALL_FORMAT_HELP}"
    args = _react_arguments(tool, call.raw_input) if call.style == "react" else call.arguments
    checked = validate_arguments(tool, args)
    if isinstance(checked, str):
        return checked
    return tool, checked


def tool_error_obs(message: str, tools: dict[str, FunctionTool]) -> str:
    """The observation for an action that could not be run."""
    sigs = ", ".join(signature(t) for t in tools.values())
    return f"Invalid action: {message}\nAvailable tools: {sigs}."
