"""Agents without a model: random, expert, and a human at the terminal."""

from __future__ import annotations

import re
import sys
from typing import IO, Any

import numpy as np

from stepgym.actions import format_tool_call
from stepgym.agents.base import AgentError, BaseAgent, ToolSpec, parse_tools
from stepgym.errors import InvalidArgument

__all__ = ["RandomAgent", "ExpertAgent", "HumanAgent", "UserQuit", "ADMISSIBLE_KEYS"]

#: info keys under which envs list the commands that are valid now (first one found is used).
ADMISSIBLE_KEYS: tuple[str, ...] = ("admissible_commands", "valid_actions", "legal_actions", "available_actions")


_WORD_RE = re.compile(r"[^\W_][\w'-]*")


class UserQuit(AgentError):
    """The human typed ``/quit`` or closed the input (Ctrl-D)."""


def _sub_envs(env: Any) -> list[Any] | None:
    """The list of envs behind a single env, a Gymnasium vector env or a list."""
    if env is None:
        return None
    if isinstance(env, (list, tuple)):
        return list(env)
    if hasattr(env, "envs"):  # gymnasium SyncVectorEnv
        return list(env.envs)
    return [env]


class RandomAgent(BaseAgent):
    """Plausible but random actions in the env's own format.

    When the observation lists tools (``- name(arg: type): ...``, as ToolUse-v0 and the
    other tool envs print them), the agent writes a random call of a random tool in the
    canonical ``<tool_call>`` format, with argument values of the right type drawn from
    words of the observation; now and then a malformed call (``p_malformed``). When
    ``info`` lists admissible commands (text-world envs), it picks one. Otherwise it
    samples the env's action space, or strings words of the observation together.

    Args:
        env: optional env (single, vector or list) whose action space is the fallback.
        seed: seed of the agent's own RNG (reproducible runs).
        p_malformed: probability of a deliberately malformed tool call.

    Example:
        >>> agent = RandomAgent(seed=0)
        >>> action = agent.act("Tools:\\n- search(query: string): find facts", {})
        >>> action.startswith("<tool_call>") or "search" in action
        True
    """

    name = "random"

    def __init__(self, env: Any = None, seed: int | None = 0, p_malformed: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= p_malformed <= 1.0:
            raise InvalidArgument(f"p_malformed must be in [0, 1], got {p_malformed!r}")
        self.envs = _sub_envs(env)
        self.rng = np.random.default_rng(seed)
        self.p_malformed = p_malformed
        self._tools: dict[int, list[ToolSpec]] = {}

    def reset(self, slot: int | None = None) -> None:
        super().reset(slot)
        if slot is None:
            self._tools.clear()
        else:
            self._tools.pop(int(slot), None)

    def _act_one(self, observation: str, info: dict[str, Any], slot: int) -> str:
        for key in ADMISSIBLE_KEYS:
            options = info.get(key)
            if isinstance(options, (list, tuple)) and options and all(isinstance(o, str) for o in options):
                return str(options[int(self.rng.integers(len(options)))])
        found = parse_tools(observation)
        if found:
            self._tools[slot] = found
        tools = self._tools.get(slot)
        # Plain words only: fragments of tags or JSON would make every call malformed.
        words = [w for w in _WORD_RE.findall(observation) if len(w) >= 3] or ["x"]
        if tools:
            tool = tools[int(self.rng.integers(len(tools)))]
            args = {k: self._value(v, words) for k, v in tool.parameters.get("properties", {}).items()}
            if self.rng.random() < self.p_malformed:
                return self._malformed(tool.name, args)
            return format_tool_call(tool.name, args)
        if self.envs:
            env = self.envs[slot % len(self.envs)]
            try:
                return str(env.action_space.sample())
            except Exception:  # a space without sample(): fall through to words
                pass
        n = int(self.rng.integers(1, 4))
        return " ".join(str(self.rng.choice(words)) for _ in range(n))

    def _value(self, schema: Any, words: list[str]) -> Any:
        typ = schema.get("type", "string") if isinstance(schema, dict) else "string"
        if typ == "integer":
            return int(self.rng.integers(0, 100))
        if typ == "number":
            return round(float(self.rng.uniform(-100, 100)), 2)
        if typ == "boolean":
            return bool(self.rng.integers(2))
        if isinstance(schema, dict) and isinstance(schema.get("enum"), list) and schema["enum"]:
            return schema["enum"][int(self.rng.integers(len(schema["enum"])))]
        n = int(self.rng.integers(1, 3))
        return " ".join(str(self.rng.choice(words)) for _ in range(n))

    def _malformed(self, name: str, args: dict[str, Any]) -> str:
        text = format_tool_call(name, args)
        kind = int(self.rng.integers(3))
        if kind == 0:
            return text[: -len("</tool_call>")]  # unclosed tag
        if kind == 1:
            return format_tool_call(name + "_x", args)  # unknown tool
        return f"I will call {name} now."  # a thought without a call


class ExpertAgent(BaseAgent):
    """Asks the env itself for a correct step: ``env.unwrapped.expert_action()``.

    Args:
        env: the env being played: one env, a Gymnasium ``SyncVectorEnv`` (slot ``i``
            is sub-env ``i``) or a list of envs.

    Example:
        >>> import stepgym
        >>> env = stepgym.make("stepgym/ToolUse-v0")
        >>> obs, info = env.reset(seed=0)
        >>> agent = ExpertAgent(env)
        >>> obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
    """

    name = "expert"

    def __init__(self, env: Any = None) -> None:
        super().__init__()
        self.envs = _sub_envs(env)

    def bind(self, env: Any) -> ExpertAgent:
        """Point the agent at another env (or vector env); returns ``self``."""
        self.envs = _sub_envs(env)
        return self

    def _act_one(self, observation: str, info: dict[str, Any], slot: int) -> str:
        if not self.envs:
            raise InvalidArgument(
                "the expert agent reads the env's state: create it with make_agent('expert', env=env)"
            )
        if slot >= len(self.envs):
            raise InvalidArgument(f"slot {slot} is out of range for {len(self.envs)} env(s)")
        env = self.envs[slot]
        expert = getattr(getattr(env, "unwrapped", env), "expert_action", None)
        if expert is None:
            raise InvalidArgument(
                f"{type(getattr(env, 'unwrapped', env)).__name__} has no expert_action(); "
                "the expert agent works on envs that define one (every stepgym built-in does)"
            )
        return str(expert())


class HumanAgent(BaseAgent):
    """You, at the terminal: shows each observation in a rich panel and reads your action.

    Type the action and press Enter. End a line with ``\\`` to continue it on the next
    line. ``/hint`` prints the expert's next step (when the env is known), ``/quit`` or
    end of input (Ctrl-D) raises :class:`UserQuit`.

    Args:
        env: optional env, used only for ``/hint``.
        input: where actions are read from (default ``sys.stdin``; tests pass a ``StringIO``).
        console: a ``rich.console.Console`` to print to (default: stdout).
        show_observation: print the observation before asking (``stepgym play`` may print
            it itself and pass False).
        prompt: the text shown before reading an action (``None``: show nothing).

    Example:
        >>> import io
        >>> from rich.console import Console
        >>> agent = HumanAgent(input=io.StringIO("look\\n"), console=Console(file=io.StringIO()))
        >>> agent.act("You are in a kitchen.", {})
        'look'
    """

    name = "human"

    def __init__(
        self,
        env: Any = None,
        *,
        input: IO[str] | None = None,
        console: Any = None,
        show_observation: bool = True,
        prompt: str | None = "action> ",
    ) -> None:
        super().__init__()
        from rich.console import Console

        self.envs = _sub_envs(env)
        self.input = input
        self.console = console if console is not None else Console()
        self.show_observation = show_observation
        self.prompt = prompt

    def _readline(self) -> str:
        stream = self.input if self.input is not None else sys.stdin
        line = stream.readline()
        if line == "":
            raise UserQuit("input ended (Ctrl-D); stopping")
        return line.rstrip("\n").rstrip("\r")

    def _act_one(self, observation: str, info: dict[str, Any], slot: int) -> str:
        from rich.panel import Panel
        from rich.text import Text

        if self.show_observation:
            title = "observation" if slot == 0 else f"observation (episode slot {slot})"
            self.console.print(Panel(Text(observation), title=title, border_style="cyan"))
            if info.get("error"):
                self.console.print(Text(f"last action error: {info['error']}", style="yellow"))
        while True:
            if self.prompt:
                self.console.print(Text(self.prompt, style="bold green"), end="")
            lines = [self._readline()]
            while lines[-1].endswith("\\"):
                lines[-1] = lines[-1][:-1]
                self.console.print(Text("....... ", style="green"), end="")
                lines.append(self._readline())
            action = "\n".join(lines)
            cmd = action.strip()
            if cmd == "/quit":
                raise UserQuit("quit by the user")
            if cmd == "/hint":
                self._hint(slot)
                continue
            return action

    def _hint(self, slot: int) -> None:
        from rich.text import Text

        if not self.envs:
            self.console.print(Text("no hint: the env was not given to the human agent", style="yellow"))
            return
        try:
            hint = ExpertAgent(self.envs)._act_one("", {}, min(slot, len(self.envs) - 1))
        except Exception as exc:  # the env may have no expert; say so instead of crashing
            self.console.print(Text(f"no hint available: {exc}", style="yellow"))
            return
        self.console.print(Text("expert would do: ", style="magenta") + Text(hint))
