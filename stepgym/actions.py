"""Parsing of tool-call actions in the formats LLMs emit.

The canonical format is Hermes/Qwen style, which chat models already produce::

    <tool_call>{"name": "search", "arguments": {"query": "Velora"}}</tool_call>

Leniently accepted too: a bare JSON object ``{"name": ..., "arguments": {...}}`` (also
inside a ```json fence) and ReAct ``Action: tool[input]``. Text before the call (a
thought) is allowed. Parsing never raises: it returns :class:`ToolCall` or
:class:`ParseError` with a message the model can act on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ToolCall",
    "ParseError",
    "parse_tool_call",
    "format_tool_call",
    "TOOL_CALL_FORMAT_HELP",
]

_TAG_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_REACT_RE = re.compile(r"Action\s*:\s*([A-Za-z_][\w]*)\s*\[(.*)\]\s*$", re.DOTALL)
_FENCE_RE = re.compile(r"```(?:json)?\s*(\{.*\})\s*```", re.DOTALL)
_MAX_JSON_CHARS = 8192

TOOL_CALL_FORMAT_HELP = (
    'Write one tool call per step as <tool_call>{"name": TOOL, "arguments": {...}}</tool_call>, '
    "optionally after a short thought."
)


@dataclass(slots=True)
class ToolCall:
    """A parsed tool call: ``name`` and ``arguments``; ``style`` says which format it came in."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    style: str = "hermes"
    #: For ReAct calls: the raw text inside the brackets (mapped to arguments by the env).
    raw_input: str | None = None


@dataclass(slots=True)
class ParseError:
    """Why an action could not be parsed, written for the model to read."""

    message: str


def format_tool_call(name: str, arguments: dict[str, Any]) -> str:
    """The canonical text of a tool call.

    Example:
        >>> format_tool_call("answer", {"text": "42"})
        '<tool_call>{"name": "answer", "arguments": {"text": "42"}}</tool_call>'
    """
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False) + "</tool_call>"


def _load_json(text: str) -> Any | ParseError:
    if len(text) > _MAX_JSON_CHARS:
        return ParseError(f"the tool call JSON is {len(text)} characters; keep it under {_MAX_JSON_CHARS}.")
    try:
        return json.loads(text)
    except RecursionError:
        return ParseError("the tool call JSON is nested too deeply.")
    except json.JSONDecodeError as exc:
        return ParseError(f"the tool call is not valid JSON ({exc.msg} at character {exc.pos}).")
    except ValueError as exc:  # e.g. an integer literal past Python's digit limit
        return ParseError(f"the tool call is not valid JSON ({str(exc)[:80]}).")


def _from_obj(obj: Any, style: str) -> ToolCall | ParseError:
    if not isinstance(obj, dict):
        return ParseError(f"the tool call must be a JSON object, got a JSON {type(obj).__name__}.")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return ParseError('the tool call needs a "name" field with the tool name as a string.')
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        # Some models (OpenAI-style) send arguments as a JSON-encoded string.
        loaded = _load_json(args) if args.strip() else {}
        if isinstance(loaded, ParseError):
            return loaded
        args = loaded
    if not isinstance(args, dict):
        return ParseError(f'"arguments" must be a JSON object, got {type(args).__name__}.')
    return ToolCall(name=name, arguments=args, style=style)


def parse_tool_call(action: str) -> ToolCall | ParseError:
    """Parse one tool call from a whole LLM step.

    Example:
        >>> parse_tool_call('I should search. <tool_call>{"name": "search", "arguments": {"query": "x"}}</tool_call>')
        ToolCall(name='search', arguments={'query': 'x'}, style='hermes', raw_input=None)
        >>> parse_tool_call("Action: search[Velora]").raw_input
        'Velora'
        >>> isinstance(parse_tool_call("hello"), ParseError)
        True
    """
    if "<tool_call>" in action:
        bodies = _TAG_RE.findall(action)
        if not bodies:
            return ParseError("the <tool_call> tag is not closed with </tool_call>.")
        if len(bodies) > 1:
            return ParseError(f"found {len(bodies)} tool calls; write exactly one tool call per step.")
        body = bodies[0].strip()
        if "<tool_call>" in body:
            return ParseError("tool call tags are nested; write exactly one <tool_call>...</tool_call>.")
        obj = _load_json(body)
        return obj if isinstance(obj, ParseError) else _from_obj(obj, "hermes")
    stripped = action.strip()
    if stripped.startswith("{") and stripped.endswith("}"):
        obj = _load_json(stripped)
        return obj if isinstance(obj, ParseError) else _from_obj(obj, "json")
    if "```" in stripped:
        m = _FENCE_RE.search(stripped)
        if m:
            obj = _load_json(m.group(1))
            return obj if isinstance(obj, ParseError) else _from_obj(obj, "json")
    if "Action" in action:
        # ReAct: the last "Action: tool[input]" line of the step.
        for line in reversed(stripped.splitlines()):
            m = _REACT_RE.search(line.strip())
            if m:
                return ToolCall(name=m.group(1), arguments={}, style="react", raw_input=m.group(2).strip())
    if not stripped:
        return ParseError("the action is empty. " + TOOL_CALL_FORMAT_HELP)
    return ParseError("no tool call found. " + TOOL_CALL_FORMAT_HELP)
