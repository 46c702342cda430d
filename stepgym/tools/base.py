"""The Tool protocol and argument validation shared by tool-using envs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from stepgym.core import quote_action

__all__ = ["Tool", "ToolOutput", "validate_arguments", "describe_tools"]


@dataclass(slots=True)
class ToolOutput:
    """What a tool returns: text for the model, and whether the call succeeded."""

    text: str
    ok: bool = True


@runtime_checkable
class Tool(Protocol):
    """A callable tool an env offers to the agent.

    Attributes:
        name: what the agent writes in ``"name"``.
        description: one line for the tool list in the first observation.
        parameters: JSON-schema object of the arguments: ``{"type": "object",
            "properties": {"query": {"type": "string", "description": ...}},
            "required": ["query"]}``. Types used: string, number, integer.

    ``__call__(**arguments)`` runs the tool on validated arguments and returns a
    :class:`ToolOutput` (or a plain ``str``, taken as a success). It must not raise for
    bad input values: it returns ``ToolOutput(text=<why>, ok=False)``.
    """

    name: str
    description: str
    parameters: dict[str, Any]

    def __call__(self, **arguments: Any) -> ToolOutput | str: ...


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
}


def validate_arguments(tool: Tool, arguments: dict[str, Any]) -> dict[str, Any] | str:
    """Check ``arguments`` against ``tool.parameters``.

    Returns the arguments (numbers given for string parameters are converted to text,
    which models often do) or an error message naming the tool's signature.
    """
    props: dict[str, Any] = tool.parameters.get("properties", {})
    required: list[str] = tool.parameters.get("required", [])
    sig = signature(tool)
    unknown = [k for k in arguments if k not in props]
    if unknown:
        return f"{tool.name} got unknown argument(s) {', '.join(quote_action(str(k), 40) for k in unknown[:5])}; call it as {sig}."
    missing = [k for k in required if k not in arguments]
    if missing:
        return f"{tool.name} is missing argument(s) {', '.join(missing)}; call it as {sig}."
    out: dict[str, Any] = {}
    for key, value in arguments.items():
        want = props[key].get("type", "string")
        ok_types = _TYPES.get(want, (object,))
        if want == "string" and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, bool) and want != "boolean" or not isinstance(value, ok_types):
            return f"argument {key!r} of {tool.name} must be a {want}, got {type(value).__name__}; call it as {sig}."
        out[key] = value
    return out


def signature(tool: Tool) -> str:
    """``name(arg: type, ...)`` for messages and tool lists."""
    props = tool.parameters.get("properties", {})
    args = ", ".join(f"{k}: {v.get('type', 'string')}" for k, v in props.items())
    return f"{tool.name}({args})"


def describe_tools(tools: list[Tool]) -> str:
    """The tool list as the first observation shows it, with the JSON schema of arguments."""
    import json

    lines = []
    for t in tools:
        schema = json.dumps(t.parameters.get("properties", {}), ensure_ascii=False)
        lines.append(f"- {signature(t)}: {t.description}\n  arguments schema: {schema}")
    return "\n".join(lines)
