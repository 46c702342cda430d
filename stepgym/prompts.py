"""From an episode to a model's prompt: chat messages and token ids.

An episode is its observations and the actions taken between them (one more observation
than actions; the first observation is the *task*). Every place that shows an episode to
a model renders it here, so a policy is evaluated on the prompts it was trained on:

* :func:`history_turns_kept` — how many past (action, observation) turns a window of
  ``max_history_turns`` turns shows, with old turns leaving ``history_stride`` at a time.
* :func:`windowed_chat` / :func:`episode_chat` — the chat of the task and the kept turns
  (model agents with ``history_turns``, the trainer's prompts).
* :func:`transcript_chat` — the chat of a task and a list of turns with a given note after
  the task (the context wrappers of :mod:`stepgym.wrappers.context`).
* :class:`ChatPromptBuilder` — the chat as prompt token ids under a token budget
  (``max_prompt_tokens``), continuing token-in/token-out from the previous step's ids.

Example:
    >>> [m["role"] for m in episode_chat(["task", "o1", "o2"], ["a1", "a2"], max_history_turns=1)]
    ['user', 'assistant', 'user']
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from stepgym.errors import InvalidArgument

__all__ = [
    "history_turns_kept",
    "transcript_chat",
    "windowed_chat",
    "episode_chat",
    "PromptBuilder",
    "ChatPromptBuilder",
]


def history_turns_kept(n_turns: int, max_turns: int, stride: int = 1) -> int:
    """How many of ``n_turns`` past (action, observation) turns a windowed prompt shows.

    Up to ``max_turns`` all of them; beyond that the oldest leave ``stride`` at a time, so
    the start of the prompt stays the same for ``stride`` steps (``stride=1``: a sliding window).

    Example:
        >>> [history_turns_kept(n, 4, 2) for n in range(9)]
        [0, 1, 2, 3, 4, 3, 4, 3, 4]
    """
    if n_turns <= max_turns:
        return n_turns
    dropped = -(-(n_turns - max_turns) // stride) * stride  # the overflow, rounded up to whole strides
    return n_turns - dropped


def transcript_chat(task: str, turns: Sequence[tuple[str, str]], system: str | None = None,
                    note: str = "") -> list[dict[str, str]]:
    """``[system?], user: task + note, then assistant: action / user: observation`` per turn.

    ``note`` is appended to the task message (e.g. how many turns were left out), so user
    and assistant turns keep alternating.

    Example:
        >>> [(m["role"], m["content"]) for m in transcript_chat("task", [("a", "o")], note=" (1 omitted)")]
        [('user', 'task (1 omitted)'), ('assistant', 'a'), ('user', 'o')]
    """
    msgs: list[dict[str, str]] = []
    if system:
        msgs.append({"role": "system", "content": system})
    msgs.append({"role": "user", "content": task + note})
    for a, o in turns:
        msgs.append({"role": "assistant", "content": a})
        msgs.append({"role": "user", "content": o})
    return msgs


def windowed_chat(observations: Sequence[str], actions: Sequence[str], turns: int,
                  system_prompt: str | None = None) -> list[dict[str, str]]:
    r"""The chat of an episode that shows its task and its last ``turns`` turns.

    ``observations`` has one more element than ``actions``. The first observation (the task)
    is always the first user turn; when older turns are left out it says how many, and when
    none is kept it carries the latest observation. The trainer's prompts
    (:class:`ChatPromptBuilder`) and :class:`~stepgym.agents.CheckpointAgent` both render
    this chat, so a checkpoint is evaluated on the prompts it was trained on.

    Example:
        >>> [m["content"] for m in windowed_chat(["task", "o1", "o2"], ["a1", "a2"], 1)]
        ['task\n\n[1 earlier step(s) omitted]', 'a2', 'o2']
    """
    pairs = list(zip(actions, observations[1:]))
    kept = pairs[len(pairs) - turns:] if 0 < turns < len(pairs) else (pairs if turns > 0 else [])
    dropped = len(pairs) - len(kept)
    note = ""
    if dropped and kept:
        note = f"\n\n[{dropped} earlier step(s) omitted]"
    if not kept and pairs:
        # no history kept: the latest observation still has to be visible
        note = f"\n\n[{len(pairs)} step(s) so far]\nLast observation: {pairs[-1][1]}"
    return transcript_chat(observations[0], kept, system_prompt, note)


def episode_chat(observations: Sequence[str], actions: Sequence[str], max_history_turns: int,
                 history_stride: int = 1, system_prompt: str | None = None) -> list[dict[str, str]]:
    r""":func:`windowed_chat` with the turns a window of ``max_history_turns`` keeps.

    Example:
        >>> chat = episode_chat(["task", "o1", "o2", "o3"], ["a1", "a2", "a3"], 2, history_stride=2)
        >>> [m["content"] for m in chat]
        ['task\n\n[2 earlier step(s) omitted]', 'a3', 'o3']
    """
    turns = history_turns_kept(len(actions), max_history_turns, history_stride)
    return windowed_chat(observations, actions, turns, system_prompt)


class PromptBuilder(ABC):
    """Renders an episode's history into the prompt token ids of the next step (s_t)."""

    @abstractmethod
    def build(self, observations: list[str], actions: list[str],
              previous: tuple[list[int], str, list[int]] | None = None) -> tuple[list[int], str]:
        """``observations`` has one more element than ``actions``; returns (ids, text).

        ``previous`` = (prompt ids, prompt text, response ids) of the step before, when there
        is one: a builder may continue from those exact ids instead of re-tokenising the
        model's own action (token-in / token-out across steps).
        """


class ChatPromptBuilder(PromptBuilder):
    """First observation + the last ``max_history_turns`` (action, observation) turns.

    With ``history_stride=K`` the oldest turns leave K at a time (see :meth:`turns_kept`), so
    the prompt's start changes once every K steps instead of at every step.

    Uses the tokenizer's chat template when it has one (user = observations, assistant =
    actions), plain ``User:``/``Assistant:`` text otherwise. The first observation (the task)
    is always kept; older turns are dropped first when the prompt exceeds
    ``max_prompt_tokens``, then the text is cut from the left as a last resort.

    Given the previous step (``previous=(prompt_ids, prompt_text, response_ids)``), a prompt
    whose text extends the previous prompt and the action is built from those exact ids: the
    previous prompt ids, then the response ids the model sampled, then the tokens of the new
    text (chat markup and observation). A sampled action whose ids differ from what the
    tokenizer would make of its text therefore reaches the next step as sampled, and the
    sampler's cache and the trainer's packing keep working. When the window of turns slides
    (or the prompt would exceed ``max_prompt_tokens``) the text is tokenised afresh.

    Example:
        >>> from stepgym.models import load_tokenizer
        >>> pb = ChatPromptBuilder(load_tokenizer("tiny"), max_history_turns=1)
        >>> ids, text = pb.build(["Task: 1+1?", "2"], ["calc"])
        >>> text.count("Task"), ids == pb.tokenizer(text, add_special_tokens=False)["input_ids"]
        (1, True)
    """

    def __init__(self, tokenizer: Any, max_history_turns: int = 4, max_prompt_tokens: int = 1024,
                 system_prompt: str | None = None, history_stride: int = 1):
        if not 1 <= history_stride <= max(1, max_history_turns):
            raise InvalidArgument(f"history_stride must be from 1 to max_history_turns={max_history_turns}, "
                                  f"got {history_stride}")
        self.tokenizer = tokenizer
        self.max_history_turns = max_history_turns
        self.history_stride = history_stride
        self.max_prompt_tokens = max_prompt_tokens
        self.system_prompt = system_prompt
        self.has_template = bool(getattr(tokenizer, "chat_template", None))

    def _render(self, observations: list[str], actions: list[str], turns: int) -> str:
        msgs = windowed_chat(observations, actions, turns, self.system_prompt)
        if self.has_template:
            return self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        names = {"system": "System", "user": "User", "assistant": "Assistant"}
        return "".join(f"{names[m['role']]}: {m['content']}\n" for m in msgs) + "Assistant:"

    def build(self, observations: list[str], actions: list[str],
              previous: tuple[list[int], str, list[int]] | None = None) -> tuple[list[int], str]:
        if len(observations) != len(actions) + 1:
            raise InvalidArgument(f"expected len(observations) == len(actions) + 1, got {len(observations)} and {len(actions)}")
        turns = self.turns_kept(len(actions))
        text = self._render(observations, actions, turns)
        if previous is not None:
            cont = self._continue(previous, text)
            if cont is not None:
                return cont
        while True:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) <= self.max_prompt_tokens or turns == 0:
                break
            turns -= 1
            text = self._render(observations, actions, turns)
        if len(ids) > self.max_prompt_tokens:
            ids = ids[-self.max_prompt_tokens:]
            text = self.tokenizer.decode(ids)
        return list(ids), text

    def turns_kept(self, n_turns: int) -> int:
        """How many of ``n_turns`` past turns the prompt shows (before any cut for length).

        Example:
            >>> from stepgym.models import load_tokenizer
            >>> pb = ChatPromptBuilder(load_tokenizer("tiny"), max_history_turns=4, history_stride=2)
            >>> [pb.turns_kept(n) for n in range(9)]
            [0, 1, 2, 3, 4, 3, 4, 3, 4]
        """
        return history_turns_kept(n_turns, self.max_history_turns, self.history_stride)

    def _continue(self, previous: tuple[list[int], str, list[int]], text: str) -> tuple[list[int], str] | None:
        prev_ids, prev_text, response_ids = previous
        head = prev_text + self.tokenizer.decode(response_ids, skip_special_tokens=False)
        if not prev_ids or not text.startswith(head):
            return None  # the window slid, or the action text is not what was sampled
        tail = self.tokenizer(text[len(head):], add_special_tokens=False)["input_ids"]
        ids = list(prev_ids) + list(response_ids) + list(tail)
        return (ids, text) if len(ids) <= self.max_prompt_tokens else None
