"""Agents: anything that maps an observation to an action string.

Build one from a spec, as the command line does::

    from stepgym.agents import make_agent
    agent = make_agent("expert", env=env)        # random | expert | human
    agent = make_agent("hf:HuggingFaceTB/SmolLM2-135M-Instruct")
    agent = make_agent("checkpoint:runs/tooluse")  # a training run (its policy/ dir)
    agent = make_agent("openai:Qwen/Qwen3-8B@http://127.0.0.1:8000/v1")
    action = agent.act(obs, info)

Or wrap your own ``str -> str`` function with :class:`CallableAgent`. torch and
transformers load only when a model agent is created.
"""

from __future__ import annotations

import difflib
from typing import Any

from stepgym.agents.base import (
    Agent,
    AgentError,
    BaseAgent,
    CallableAgent,
    ToolSpec,
    as_agent,
    chat_messages,
    parse_tools,
)
from stepgym.agents.hf import CheckpointAgent, Generation, TransformersAgent, load_causal_lm, resolve_checkpoint
from stepgym.agents.openai import APIError, BatchAPIError, OpenAIAgent, tool_calls_to_action
from stepgym.agents.simple import ExpertAgent, HumanAgent, RandomAgent, UserQuit
from stepgym.errors import InvalidArgument

__all__ = [
    # protocol and base
    "Agent",
    "BaseAgent",
    "CallableAgent",
    "as_agent",
    "make_agent",
    "AGENT_SPECS",
    # built-in agents
    "RandomAgent",
    "ExpertAgent",
    "HumanAgent",
    "TransformersAgent",
    "CheckpointAgent",
    "OpenAIAgent",
    "BatchAPIError",
    # helpers
    "ToolSpec",
    "parse_tools",
    "chat_messages",
    "tool_calls_to_action",
    "load_causal_lm",
    "resolve_checkpoint",
    "Generation",
    # errors
    "AgentError",
    "APIError",
    "UserQuit",
]

#: The spec forms ``make_agent`` accepts, as shown in help texts.
AGENT_SPECS = "random | expert | human | hf:PATH_OR_ID | checkpoint:DIR | openai:MODEL@BASE_URL"

_PLAIN = ("random", "expert", "human")
_PREFIXED = ("hf", "checkpoint", "openai")


def make_agent(spec: Any, env: Any = None, **kwargs: Any) -> BaseAgent:
    """Create an agent from a spec string (or pass an agent / ``str -> str`` callable through).

    Args:
        spec: ``random``, ``expert``, ``human``, ``hf:PATH_OR_ID``, ``checkpoint:DIR``
            or ``openai:MODEL@BASE_URL`` (``openai:MODEL`` takes the URL from
            ``OPENAI_BASE_URL``).
        env: the env (single, vector or list of envs) the agent plays; the expert needs it,
            the random agent uses its action space as a fallback, the human for hints.
        **kwargs: settings of the agent's class (e.g. ``temperature=0.0`` for model agents,
            ``seed=`` for the random agent).

    Example:
        >>> import stepgym
        >>> from stepgym.agents import make_agent
        >>> env = stepgym.make("stepgym/ToolUse-v0")
        >>> obs, info = env.reset(seed=0)
        >>> agent = make_agent("expert", env=env)
        >>> obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
    """
    if not isinstance(spec, str):
        return as_agent(spec)
    text = spec.strip()
    kind, sep, rest = text.partition(":")
    if not sep:
        if text == "random":
            return RandomAgent(env, **kwargs)
        if text == "expert":
            return ExpertAgent(env, **kwargs)
        if text == "human":
            return HumanAgent(env, **kwargs)
        if text in _PREFIXED:
            raise InvalidArgument(f"agent spec {text!r} needs a target after the colon, e.g. {_example(text)}")
        raise InvalidArgument(_unknown(text))
    if not rest:
        raise InvalidArgument(f"agent spec {text!r} is missing the part after ':', e.g. {_example(kind)}")
    if kind == "hf":
        return TransformersAgent(rest, **kwargs)
    if kind == "checkpoint":
        return CheckpointAgent(rest, **kwargs)
    if kind == "openai":
        from stepgym.agents.openai import _split_spec

        model, base_url = _split_spec(rest)
        return OpenAIAgent(model, base_url, **kwargs)
    raise InvalidArgument(_unknown(text))


def _example(kind: str) -> str:
    return {
        "hf": "hf:HuggingFaceTB/SmolLM2-135M-Instruct or hf:./my_model",
        "checkpoint": "checkpoint:runs/my_run",
        "openai": "openai:my-model@http://127.0.0.1:8000/v1",
    }.get(kind, AGENT_SPECS)


def _unknown(text: str) -> str:
    head = text.split(":")[0]
    close = difflib.get_close_matches(head, list(_PLAIN + _PREFIXED), n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown agent spec {text!r}: expected one of {AGENT_SPECS}.{hint}"
