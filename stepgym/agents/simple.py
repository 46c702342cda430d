"""Agents without a model: random, expert, and a human at the terminal."""

from __future__ import annotations

import re
import sys
import zlib
from dataclasses import dataclass, field
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


_LEGAL_RE = re.compile(r"Legal (\w+): ([^.\n]+)\.")
_ONE_OF_RE = re.compile(r"(?:one (?:move|of)|one \w+ of)\s*:?\s*([\w-]+(?:, [\w-]+)*,? or [\w-]+)")
_QUOTED_RE = re.compile(r"'([A-Za-z][\w ]*)'")
_EXAMPLE_RE = re.compile(r"e\.g\.,? ([^\n]+?)(?: or <answer>|[.,;)]?\n|[.;)]? *$)")
_WRAPPED_WORD_RE = re.compile(r"([\[(<{]*)([A-Za-z]+)([\])>}]*)")
_EXPR_RE = re.compile(r"[\d\s+\-*/().]+")
_NUMBERS_RE = re.compile(r"Numbers: ([\d, ]+)")


@dataclass
class _Format:
    """The action format an observation describes (see ``RandomAgent._text_action``)."""

    options: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    example: str | None = None
    numbers: list[str] = field(default_factory=list)
    answer_tag: bool = False

    def anything(self) -> bool:
        return bool(self.options or self.templates or self.example is not None or self.numbers)

    def merged(self, new: _Format) -> _Format:
        return _Format(
            new.options or self.options,
            new.templates or self.templates,
            new.example if new.example is not None else self.example,
            new.numbers or self.numbers,
            self.answer_tag or new.answer_tag,
        )


def _parse_format(observation: str) -> _Format:
    fmt = _Format(answer_tag="<answer>" in observation)
    m = _ONE_OF_RE.search(observation)
    if m:
        fmt.options = [o.strip() for o in re.split(r",\s*|\s+or\s+", m.group(1)) if o.strip()]
    answer_part = observation[observation.find("Answer") :] if "Answer" in observation else ""
    fmt.templates = [q for q in _QUOTED_RE.findall(answer_part) if len(q) <= 40]
    m = _EXAMPLE_RE.search(observation)
    if m:
        ex = m.group(1).strip()
        # Trailing punctuation and quotes are prose, as is a ")" that closes a parenthesis of the prose.
        while ex and (ex[-1] in ".,;'\"`" or (ex[-1] == ")" and ex.count(")") > ex.count("("))):
            ex = ex[:-1]
        fmt.example = ex.lstrip("'\"`")
    m = _NUMBERS_RE.search(observation)
    if m:
        fmt.numbers = [n.strip() for n in m.group(1).split(",") if n.strip()]
    return fmt


class RandomAgent(BaseAgent):
    """Plausible but random actions in the env's own format.

    When the observation lists tools (``- name(arg: type): ...``, as ToolUse-v0 and the
    other tool envs print them), the agent writes a random call of a random tool in the
    canonical ``<tool_call>`` format, with argument values of the right type drawn from
    words of the observation; now and then a malformed call (``p_malformed``). When
    ``info`` lists admissible commands (text-world envs), it picks one. When the
    observation describes a text format (``Legal cells: 1, 2, 3.``, ``one move: left,
    down, right or up``, ``'propose N N N'``, ``e.g. 25 * 4 + 3``), it writes a random
    action of that form. Otherwise it samples the env's action space, or strings words of
    the observation together.

    Args:
        env: optional env (single, vector or list) whose action space is the fallback.
        seed: seed of the agent's RNG; each episode draws from a generator seeded by this
            seed and its first observation, so results do not depend on scheduling.
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
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._rngs: dict[int, np.random.Generator] = {}
        self.p_malformed = p_malformed
        self._tools: dict[int, list[ToolSpec]] = {}
        self._formats: dict[int, _Format] = {}

    def reset(self, slot: int | None = None) -> None:
        super().reset(slot)
        if slot is None:
            self._tools.clear()
            self._formats.clear()
            self._rngs.clear()
        else:
            self._tools.pop(int(slot), None)
            self._formats.pop(int(slot), None)
            self._rngs.pop(int(slot), None)

    def _act_one(self, observation: str, info: dict[str, Any], slot: int) -> str:
        if slot not in self._rngs:
            # One generator per episode, seeded by the agent's seed and the episode's first
            # observation: the same task gets the same random actions however episodes are
            # scheduled over parallel envs.
            task = zlib.crc32(observation.encode("utf-8", "surrogatepass"))
            self._rngs[slot] = np.random.default_rng(None if self.seed is None else [self.seed, task])
        self.rng = self._rngs[slot]
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
        text_action = self._text_action(observation, slot, words)
        if text_action is not None:
            return text_action
        if self.envs:
            env = self.envs[slot % len(self.envs)]
            try:
                return str(env.action_space.sample())
            except Exception:  # a space without sample(): fall through to words
                pass
        n = int(self.rng.integers(1, 4))
        return " ".join(str(self.rng.choice(words)) for _ in range(n))

    def _text_action(self, observation: str, slot: int, words: list[str]) -> str | None:
        """A random action in the format the observation describes, or None if it describes none.

        Reads what stepgym's text envs print: ``Legal cells: 1, 2, 3.``, ``Answer with one
        move: left, down, right or up``, quoted templates (``'propose N N N'``, ``'accept'``)
        and ``e.g. EXAMPLE`` (an expression, a word, a number). The format seen in the first
        observation is remembered for the rest of the episode.
        """
        fmt = _parse_format(observation)
        if fmt.anything():
            # Keep what this observation says, fall back on the episode's first description.
            old = self._formats.get(slot)
            self._formats[slot] = fmt if old is None else old.merged(fmt)
        legal = _LEGAL_RE.search(observation)
        fmt = self._formats.get(slot)
        if fmt is None:
            if legal is None:
                return None
            fmt = _Format(answer_tag="<answer>" in observation)
        choices = [c.strip() for c in legal.group(2).split(",") if c.strip()] if legal else list(fmt.options)
        kinds = []
        if choices:
            kinds.append("choice")
        if fmt.templates:
            kinds.append("template")
        if fmt.example is not None and not choices:
            kinds.append("example")
        if not kinds:
            return None
        kind = kinds[int(self.rng.integers(len(kinds)))]
        if kind == "choice":
            action = str(choices[int(self.rng.integers(len(choices)))])
        elif kind == "template":
            template = fmt.templates[int(self.rng.integers(len(fmt.templates)))]
            action = re.sub(r"\bN\b", lambda _: str(int(self.rng.integers(0, 5))), template)
        else:
            action = self._like_example(fmt, observation, words)
        if fmt.answer_tag and self.rng.random() < 0.3:
            action = f"<answer>{action}</answer>"
        return action

    def _like_example(self, fmt: _Format, observation: str, words: list[str]) -> str:
        example = fmt.example or ""
        if _EXPR_RE.fullmatch(example) and re.search(r"[-+*/]", example):
            pool = fmt.numbers or re.findall(r"\d+", example)
            k = int(self.rng.integers(2, min(4, len(pool)) + 1)) if len(pool) >= 2 else 1
            picked = [str(x) for x in self.rng.choice(pool, size=k, replace=False)]
            ops = [str(self.rng.choice(["+", "-", "*", "/"])) for _ in range(k - 1)]
            return " ".join(p for pair in zip(picked, [*ops, ""], strict=True) for p in pair if p)
        if example.isdigit():
            return str(int(self.rng.integers(0, 2 * int(example) + 2)))
        wrapped = _WRAPPED_WORD_RE.fullmatch(example)
        head, tail = "", ""
        if wrapped:  # e.g. '[apple]': keep the brackets, vary the word
            head, example, tail = wrapped.groups()
        same = [w.lower() for w in words if len(w) == len(example) and w.isalpha()]
        if same:
            return head + str(self.rng.choice(same)) + tail
        letters = list("abcdefghijklmnopqrstuvwxyz")
        return head + "".join(str(self.rng.choice(letters)) for _ in range(max(1, len(example)))) + tail

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
