"""Action formats LLMs emit, and :class:`ParseActions`, which normalises them.

Models trained on different recipes write the same decision in different ways:

=========  ==============================================================  =================
format     example                                                         parsed as
=========  ==============================================================  =================
hermes     ``<tool_call>{"name": "lookup", "arguments": {...}}</tool_call>``  tool call
json       ``{"name": "lookup", "arguments": {...}}`` (also in a fence)     tool call
react      ``Thought: ...\\nAction: lookup[Belxo, population]``             tool call
answer     ``<answer>42</answer>``                                          final answer
boxed      ``... so the result is \\boxed{42}``                              final answer
=========  ==============================================================  =================

:func:`parse_action` tries the formats in that order and never raises: it returns a
:class:`ParsedAction` or a :class:`~stepgym.actions.ParseError` whose message the model can
act on. The tool-call formats reuse :func:`stepgym.actions.parse_tool_call`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from stepgym.actions import ParseError, format_tool_call, parse_tool_call
from stepgym.errors import InvalidArgument
from stepgym.spaces import DEFAULT_ACTION_CHARS, UnicodeText
from stepgym.wrappers._common import text_bound

__all__ = [
    "FORMATS",
    "ParsedAction",
    "parse_action",
    "parse_answer_tag",
    "parse_boxed",
    "format_hermes",
    "format_answer_tag",
    "ParseActions",
]

#: Every format :func:`parse_action` knows, in the order it tries them.
FORMATS: tuple[str, ...] = ("hermes", "json", "react", "answer", "boxed")

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_BOXED = "\\boxed{"


@dataclass(slots=True)
class ParsedAction:
    """One decision, whatever format it came in.

    Attributes:
        kind: ``"tool_call"`` or ``"answer"``.
        style: the format it was written in (one of :data:`FORMATS`).
        name: tool name (``kind == "tool_call"``); ``"answer"`` for answers.
        arguments: tool arguments; empty for ReAct calls until mapped (see ``raw_input``).
        raw_input: for ReAct calls, the text inside the brackets.
        text: for answers, the answer text.
    """

    kind: str
    style: str
    name: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    raw_input: str | None = None
    text: str | None = None


def parse_answer_tag(text: str) -> str | None:
    """The content of the last ``<answer>...</answer>`` block, or ``None``.

    Example:
        >>> parse_answer_tag("I think <answer>4</answer> no wait <answer> 5 </answer>")
        '5'
        >>> parse_answer_tag("no tags") is None
        True
    """
    if "<" not in text:  # cheap pre-check: most actions carry no tag
        return None
    found = _ANSWER_RE.findall(text)
    return found[-1].strip() if found else None


def parse_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}``, braces matched, or ``None``.

    Example:
        >>> parse_boxed(r"so x = \\boxed{\\frac{1}{2}}.")
        '\\\\frac{1}{2}'
        >>> parse_boxed(r"unclosed \\boxed{12") is None
        True
    """
    start = text.rfind(_BOXED)
    while start != -1:
        i = start + len(_BOXED)
        depth = 1
        j = i
        while j < len(text):
            c = text[j]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[i:j].strip()
            j += 1
        # unbalanced: try an earlier \boxed{ (the model may have restarted)
        start = text.rfind(_BOXED, 0, start)
    return None


def parse_action(text: str, formats: Sequence[str] = FORMATS) -> ParsedAction | ParseError:
    """Parse one decision from a whole LLM step, in any of ``formats``.

    Tool-call formats are tried first (a tool call may contain the word "answer");
    the last ``<answer>`` block or ``\\boxed{}`` counts, as in reasoning-model recipes.

    Example:
        >>> parse_action('<tool_call>{"name": "lookup", "arguments": {"entity": "Belxo"}}</tool_call>').arguments
        {'entity': 'Belxo'}
        >>> parse_action("Thought: done.\\nAction: Finish[42]").raw_input
        '42'
        >>> parse_action(r"The area is \\boxed{12}.").text
        '12'
        >>> parse_action("hello").message[:17]
        'no action found ('
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise InvalidArgument(f"formats must be a non-empty subset of {FORMATS}, got {tuple(formats)!r}")
    if not isinstance(text, str):
        return ParseError(f"the action must be text, got {type(text).__name__}.")
    error: ParseError | None = None
    if any(f in formats for f in ("hermes", "json", "react")):
        call = parse_tool_call(text)
        if not isinstance(call, ParseError) and call.style in formats:
            return ParsedAction(kind="tool_call", style=call.style, name=call.name,
                                arguments=dict(call.arguments), raw_input=call.raw_input)
        if isinstance(call, ParseError) and ("<tool_call>" in text or text.strip().startswith("{")):
            # A tool call was attempted but is broken; keep its specific message.
            error = call
    if "answer" in formats:
        ans = parse_answer_tag(text)
        if ans is not None:
            return ParsedAction(kind="answer", style="answer", name="answer", text=ans)
    if "boxed" in formats:
        ans = parse_boxed(text)
        if ans is not None:
            return ParsedAction(kind="answer", style="boxed", name="answer", text=ans)
    if error is not None:
        return error
    if not text.strip():
        return ParseError("the action is empty. " + _format_help(formats))
    return ParseError(f"no action found ({', '.join(formats)} accepted). " + _format_help(formats))


def _format_help(formats: Sequence[str]) -> str:
    if "hermes" in formats:
        return 'Write one tool call as <tool_call>{"name": TOOL, "arguments": {...}}</tool_call>.'
    if "answer" in formats:
        return "Write your final answer as <answer>...</answer>."
    return f"Use one of the formats: {', '.join(formats)}."


def format_hermes(action: ParsedAction, answer_tool: str = "answer", answer_arg: str = "text") -> str:
    """Canonical Hermes text of a parsed action; answers become a call of ``answer_tool``.

    Example:
        >>> format_hermes(ParsedAction(kind="answer", style="boxed", name="answer", text="12"))
        '<tool_call>{"name": "answer", "arguments": {"text": "12"}}</tool_call>'
    """
    if action.kind == "answer":
        return format_tool_call(answer_tool, {answer_arg: action.text or ""})
    return format_tool_call(action.name, action.arguments)


def format_answer_tag(action: ParsedAction) -> str:
    """``<answer>...</answer>`` text of a parsed action, for envs whose actions are commands.

    A tool call becomes its first argument (or the ReAct input).

    Example:
        >>> format_answer_tag(ParsedAction(kind="answer", style="boxed", text="up"))
        '<answer>up</answer>'
    """
    if action.kind == "answer":
        return f"<answer>{action.text}</answer>"
    if action.raw_input is not None:
        return f"<answer>{action.raw_input}</answer>"
    value = next(iter(action.arguments.values()), "") if action.arguments else action.name
    return f"<answer>{value}</answer>"


Formatter = Callable[[ParsedAction], str]


class ParseActions(gym.Wrapper):
    """Accept any supported action format and pass the env its canonical one.

    The wrapper parses each action with :func:`parse_action` and rewrites it with
    ``formatter`` (the Hermes tool call by default). ReAct inputs are mapped onto the
    tool's parameters when the env lists its tools (``env.unwrapped.tools``, a mapping of
    name to :class:`~stepgym.tools.base.Tool`): one parameter takes the whole input,
    several take comma-separated parts; ``Finish[x]`` is the answer tool. An action that
    parses in no format is passed through unchanged, so the env answers it with its own
    error message.

    ``info["action_format"]`` says which format the action was in (``None`` if none) and
    ``info["raw_action"]`` keeps the model's text.

    Args:
        env: any text env.
        formats: formats to accept (default all of :data:`FORMATS`).
        formatter: ``ParsedAction -> str``; default :func:`format_hermes`. Use
            :func:`format_answer_tag` for envs whose actions are commands.
        answer_tool / answer_arg: the tool and argument answers are sent to.

    Example:
        >>> import gymnasium as gym, stepgym
        >>> from stepgym.wrappers import ParseActions
        >>> env = ParseActions(gym.make("stepgym/ToolUse-v0"))
        >>> obs, info = env.reset(seed=0)
        >>> obs, r, term, trunc, info = env.step("Action: lookup[Belxo, population]")
        >>> info["action_format"], info["action_valid"]
        ('react', True)
    """

    def __init__(
        self,
        env: gym.Env,
        *,
        formats: Sequence[str] = FORMATS,
        formatter: Formatter | None = None,
        answer_tool: str = "answer",
        answer_arg: str = "text",
    ) -> None:
        super().__init__(env)
        bad = [f for f in formats if f not in FORMATS]
        if bad or not formats:
            raise InvalidArgument(f"formats must be a non-empty subset of {FORMATS}, got {tuple(formats)!r}")
        if formatter is not None and not callable(formatter):
            raise InvalidArgument(f"formatter must be a callable ParsedAction -> str, got {formatter!r}")
        self.formats = tuple(formats)
        self.formatter = formatter
        # Any text is a possible action here (formats are rewritten before the env sees
        # them), so a plain Text action space with a small charset is widened.
        bound = max(text_bound(env.action_space, DEFAULT_ACTION_CHARS), DEFAULT_ACTION_CHARS)
        self.action_space = UnicodeText(bound, min_length=0)
        self.answer_tool = answer_tool
        self.answer_arg = answer_arg

    def normalize(self, action: str) -> tuple[str, str | None]:
        """``(canonical action, format)``; ``(action, None)`` when nothing parses."""
        parsed = parse_action(action, self.formats)
        if isinstance(parsed, ParseError):
            return action, None
        if parsed.kind == "tool_call" and parsed.style == "react":
            if parsed.name.lower() == "finish":
                parsed = ParsedAction(kind="answer", style="react", name=self.answer_tool, text=parsed.raw_input)
            else:
                parsed.arguments = self._react_arguments(parsed)
        if self.formatter is not None:
            return self.formatter(parsed), parsed.style
        return format_hermes(parsed, self.answer_tool, self.answer_arg), parsed.style

    def _react_arguments(self, parsed: ParsedAction) -> dict[str, Any]:
        raw = parsed.raw_input or ""
        tools = getattr(self.env.unwrapped, "tools", None)
        tool = tools.get(parsed.name) if isinstance(tools, Mapping) else None
        params = list(getattr(tool, "parameters", {}).get("properties", {})) if tool is not None else []
        if not params:
            return {"input": raw}
        if len(params) == 1:
            return {params[0]: raw}
        parts = [p.strip() for p in raw.rsplit(",", len(params) - 1)]
        if len(parts) != len(params):
            return {params[0]: raw}  # the env's validation explains the signature
        return dict(zip(params, parts))

    def step(self, action: str):
        canonical, style = self.normalize(action) if isinstance(action, str) else (action, None)
        obs, reward, terminated, truncated, info = self.env.step(canonical)
        info = dict(info)
        info["action_format"] = style
        info["raw_action"] = action
        return obs, reward, terminated, truncated, info
