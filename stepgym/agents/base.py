"""The Agent protocol, a base class with per-episode memory, and wrappers for callables.

An agent maps text to text: ``act(observation, info) -> action``. ``act_batch`` does
the same for several episodes that run side by side (one per sub-env of a vector env);
its optional ``slots`` argument names which parallel episode each entry belongs to, so
an agent that remembers the conversation keeps one memory per slot. ``reset()`` forgets
everything; ``reset(slot)`` forgets one slot when its episode ends.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from stepgym.errors import InvalidArgument, StepgymError
from stepgym.prompts import history_turns_kept, windowed_chat  # noqa: F401 - re-exported

__all__ = [
    "Agent",
    "BaseAgent",
    "CallableAgent",
    "AgentError",
    "ToolSpec",
    "as_agent",
    "parse_tools",
    "chat_messages",
    "history_turns_kept",
    "windowed_chat",
]


class AgentError(StepgymError, RuntimeError):
    """An agent could not produce an action (server error, model failure, input ended)."""


@runtime_checkable
class Agent(Protocol):
    """Anything that maps an observation (and info) to an action string.

    Example:
        >>> from stepgym.agents import Agent, CallableAgent
        >>> isinstance(CallableAgent(lambda obs: "look"), Agent)
        True
    """

    def act(self, observation: str, info: dict[str, Any]) -> str: ...

    def act_batch(self, observations: Sequence[str], infos: Sequence[dict[str, Any]]) -> list[str]: ...

    def reset(self) -> None: ...


class BaseAgent:
    """Base class for stepgym's agents.

    Subclasses implement :meth:`_act_batch` (or :meth:`act` for one-at-a-time agents).
    The base keeps, per slot, the chat so far (``self.memory[slot]``: a list of
    ``{"role", "content"}`` messages) for agents that need the conversation, and
    ``last_token_counts``: the number of generated tokens per action of the last call
    (``None`` when the agent does not count tokens; ``stepgym eval`` then estimates).

    Attributes:
        name: short label used in tables and leaderboards.
        counts_tokens: True for model agents whose ``last_token_counts`` are real tokens.
    """

    name: str = "agent"
    counts_tokens: bool = False

    def __init__(self) -> None:
        self.memory: dict[int, list[dict[str, Any]]] = {}
        self.last_token_counts: list[int] | None = None

    # -- public API ---------------------------------------------------------------------
    def act(self, observation: str, info: dict[str, Any] | None = None) -> str:
        """One action for one observation (slot 0)."""
        return self.act_batch([observation], [info or {}], slots=[0])[0]

    def act_batch(
        self,
        observations: Sequence[str],
        infos: Sequence[dict[str, Any]] | None = None,
        *,
        slots: Sequence[int] | None = None,
    ) -> list[str]:
        """One action per observation; ``slots[i]`` identifies the episode of entry ``i``."""
        observations = list(observations)
        infos = [dict(i or {}) for i in (infos or [{}] * len(observations))]
        if len(infos) != len(observations):
            raise InvalidArgument(
                f"act_batch needs one info per observation: got {len(observations)} observations and {len(infos)} infos"
            )
        slots = list(range(len(observations))) if slots is None else [int(s) for s in slots]
        if len(slots) != len(observations):
            raise InvalidArgument(f"act_batch got {len(observations)} observations but {len(slots)} slots")
        actions = self._act_batch(observations, infos, slots)
        for a in actions:
            if not isinstance(a, str):
                raise AgentError(f"{type(self).__name__} returned a {type(a).__name__}; actions must be str")
        return actions

    def reset(self, slot: int | None = None) -> None:
        """Forget the memory of every slot (``slot=None``) or of one slot."""
        if slot is None:
            self.memory.clear()
        else:
            self.memory.pop(int(slot), None)

    def close(self) -> None:
        """Release resources (HTTP clients, models); the default does nothing."""

    # -- subclass API ---------------------------------------------------------------------
    def _act_batch(self, observations: list[str], infos: list[dict[str, Any]], slots: list[int]) -> list[str]:
        # One-at-a-time agents override _act_one; the default loops over it.
        return [self._act_one(o, i, s) for o, i, s in zip(observations, infos, slots, strict=True)]

    def _act_one(self, observation: str, info: dict[str, Any], slot: int) -> str:
        raise NotImplementedError(f"{type(self).__name__} implements neither _act_batch nor _act_one")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class CallableAgent(BaseAgent):
    """Wraps any callable as an agent: ``fn(observation) -> action`` or ``fn(observation, info)``.

    Args:
        fn: the policy. Its arity decides whether ``info`` is passed.
        name: label for tables (default: the function's name).

    Example:
        >>> agent = CallableAgent(lambda obs: "look around")
        >>> agent.act("You are in a room.", {})
        'look around'
    """

    def __init__(self, fn: Callable[..., str], name: str | None = None) -> None:
        super().__init__()
        if not callable(fn):
            raise InvalidArgument(f"CallableAgent needs a callable str -> str, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        if self.name == "<lambda>":
            self.name = "callable"
        self._takes_info = _accepts_two_args(fn)

    def _act_one(self, observation: str, info: dict[str, Any], slot: int) -> str:
        out = self.fn(observation, info) if self._takes_info else self.fn(observation)
        if not isinstance(out, str):
            raise AgentError(f"the policy {self.name!r} returned {type(out).__name__}; it must return a str")
        return out


def _accepts_two_args(fn: Callable[..., Any]) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    has_var = any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values())
    return len(positional) >= 2 or has_var


class _ProtocolAdapter(BaseAgent):
    """Gives a third-party object with ``act``/``act_batch`` the ``slots`` keyword."""

    def __init__(self, agent: Any) -> None:
        super().__init__()
        self.inner = agent
        self.name = getattr(agent, "name", type(agent).__name__)

    def _act_batch(self, observations: list[str], infos: list[dict[str, Any]], slots: list[int]) -> list[str]:
        if hasattr(self.inner, "act_batch"):
            return list(self.inner.act_batch(observations, infos))
        return [self.inner.act(o, i) for o, i in zip(observations, infos, strict=True)]

    def reset(self, slot: int | None = None) -> None:
        # A plain protocol agent has one reset for everything; call it when all is reset.
        if slot is None and hasattr(self.inner, "reset"):
            self.inner.reset()

    @property
    def last_token_counts(self) -> list[int] | None:  # type: ignore[override]
        return getattr(self.inner, "last_token_counts", None)

    @last_token_counts.setter
    def last_token_counts(self, value: list[int] | None) -> None:
        pass


def as_agent(obj: Any) -> BaseAgent:
    """Turn an agent, a protocol object or a plain ``str -> str`` callable into a :class:`BaseAgent`.

    Example:
        >>> as_agent(lambda obs: "hi").act("hello")
        'hi'
    """
    if isinstance(obj, BaseAgent):
        return obj
    if hasattr(obj, "act"):
        return _ProtocolAdapter(obj)
    if callable(obj):
        return CallableAgent(obj)
    raise InvalidArgument(
        f"expected an Agent (with act/act_batch/reset) or a callable str -> str, got {type(obj).__name__}"
    )


# -- reading the tools an env offers from its first observation ---------------------------------


@dataclass(slots=True)
class ToolSpec:
    """A tool as announced in an observation: name, description, JSON schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def openai_schema(self) -> dict[str, Any]:
        """The tool as an OpenAI chat-completions ``tools`` entry."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


# "- name(arg: type, ...): description" then optionally "  arguments schema: {...}" (describe_tools).
_TOOL_LINE_RE = re.compile(r"^\s*[-*]\s*([A-Za-z_][\w.-]*)\(([^)]*)\)\s*:?\s*(.*)$")
_SCHEMA_RE = re.compile(r"^\s*arguments schema:\s*(\{.*\})\s*$")


def parse_tools(observation: str) -> list[ToolSpec]:
    """The tools listed in an observation in the format of ``stepgym.tools.base.describe_tools``.

    Example:
        >>> obs = "Tools:\\n- search(query: string): find facts\\n- answer(text: string): finish"
        >>> [(t.name, list(t.parameters["properties"])) for t in parse_tools(obs)]
        [('search', ['query']), ('answer', ['text'])]
    """
    tools: list[ToolSpec] = []
    seen: set[str] = set()
    for line in observation.splitlines():
        m = _TOOL_LINE_RE.match(line)
        if m:
            name, args, desc = m.group(1), m.group(2), m.group(3).strip()
            if name in seen:
                continue
            props: dict[str, Any] = {}
            for part in filter(None, (a.strip() for a in args.split(","))):
                arg, _, typ = part.partition(":")
                props[arg.strip()] = {"type": (typ.strip() or "string")}
            seen.add(name)
            tools.append(ToolSpec(name, desc, {"type": "object", "properties": props, "required": list(props)}))
            continue
        s = _SCHEMA_RE.match(line)
        if s and tools:
            try:
                props = json.loads(s.group(1))
            except ValueError:
                continue
            if isinstance(props, dict) and props:
                tools[-1].parameters = {"type": "object", "properties": props, "required": list(props)}
    return tools


def chat_messages(
    memory: list[dict[str, Any]],
    observation: str,
    info: dict[str, Any],
    system_prompt: str | None = None,
) -> list[dict[str, Any]]:
    """The chat to send a model: ``info["messages"]`` when a wrapper rendered one, else memory + observation.

    The observation is appended to ``memory`` as a user turn (callers append the
    assistant's action after generating).
    """
    rendered = info.get("messages")
    if isinstance(rendered, list) and rendered and all(isinstance(m, dict) for m in rendered):
        msgs = [dict(m) for m in rendered]
        if system_prompt and msgs[0].get("role") != "system":
            msgs.insert(0, {"role": "system", "content": system_prompt})
        return msgs
    if not memory and system_prompt:
        memory.append({"role": "system", "content": system_prompt})
    memory.append({"role": "user", "content": observation})
    return list(memory)
