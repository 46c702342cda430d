"""Context wrappers: what the model reads at each step (the state s_t of the step-level MDP).

An env's observation is only the latest thing that happened; a model needs the task and
what it already tried. These wrappers keep the episode's transcript (the first
observation is the *task*, then one (action, observation) pair per step) and turn it into
the next prompt:

* :class:`HistoryPrompt`: the whole transcript, with a documented template.
* :class:`ContextWindow`: the task and the last ``max_steps`` steps.
* :class:`TokenBudget`: the task and as many recent steps as fit ``max_tokens`` tokens of
  a Hugging Face tokenizer; an oversized latest observation is cut in the middle.
* :class:`ChatMessages`: the same state as chat messages (``info["messages"]``) and, with
  a tokenizer, as text through its chat template.

Each writes ``info["context"]``::

    {"truncated": bool,        # something was left out or cut
     "tokens_before": int | None,  # tokens of the full transcript (None without a tokenizer)
     "tokens_after": int | None,   # tokens of the prompt returned
     "steps_dropped": int,     # oldest steps left out
     "steps_kept": int,        # steps shown
     "tokens_cut": int}        # tokens cut out of the latest step (TokenBudget)

Use one context wrapper per stack (they would otherwise build a history of histories);
:class:`TokenBudget` takes ``max_steps=`` and ``chat=True`` to combine what the others do.
All of them compose with the reward, format, malformed-action and recording wrappers in
any order, and forget the transcript on ``reset``.

The default text template (:class:`HistoryTemplate`) renders::

    <task: the first observation>

    [... 3 earlier step(s) omitted ...]      <- only when steps were dropped

    [Step 4]
    Action:
    <the model's step 4>
    Observation:
    <what the env answered>

    [Step 5]
    ...
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from stepgym.core import clip_text
from stepgym.errors import InvalidArgument
from stepgym.prompts import transcript_chat
from stepgym.spaces import UnicodeText
from stepgym.wrappers._common import UNBOUNDED, episode_bound, find_wrapper, text_bound
from stepgym.wrappers.malformed import MalformedActionPolicy

__all__ = [
    "HistoryTemplate",
    "HistoryPrompt",
    "ContextWindow",
    "TokenBudget",
    "ChatMessages",
    "TokenCounter",
    "clean_text",
]


@dataclass(frozen=True)
class HistoryTemplate:
    """How the transcript becomes prompt text. Fields are ``str.format`` templates.

    Attributes:
        task: the head of the prompt; field ``{task}`` (the first observation).
        step: one past step; fields ``{index}`` (1-based step number), ``{action}``,
            ``{observation}``.
        omitted: stands in for dropped steps; field ``{n}`` (how many).
        suffix: the end of the prompt (e.g. ``"\\n\\nYour next step:"``); no fields.
        cut: marks text cut out of an oversized observation or action; field ``{n}``
            (tokens cut).

    Example:
        >>> t = HistoryTemplate(step="\\n> {action}\\n{observation}")
        >>> t.step.format(index=1, action="look", observation="A room.")
        '\\n> look\\nA room.'
    """

    task: str = "{task}"
    step: str = "\n\n[Step {index}]\nAction:\n{action}\nObservation:\n{observation}"
    omitted: str = "\n\n[... {n} earlier step(s) omitted ...]"
    suffix: str = ""
    cut: str = "\n[... {n} tokens cut ...]\n"

    def __post_init__(self) -> None:
        checks = {
            "task": (self.task, {"task": "t"}),
            "step": (self.step, {"index": 1, "action": "a", "observation": "o"}),
            "omitted": (self.omitted, {"n": 1}),
            "suffix": (self.suffix, {}),
            "cut": (self.cut, {"n": 1}),
        }
        for name, (tpl, fields) in checks.items():
            if not isinstance(tpl, str):
                raise InvalidArgument(f"HistoryTemplate.{name} must be a str, got {type(tpl).__name__}")
            try:
                tpl.format(**fields)
            except (KeyError, IndexError, ValueError) as exc:
                raise InvalidArgument(
                    f"HistoryTemplate.{name} = {tpl!r} is not a valid template: {exc!r}; "
                    f"it may use only the fields {sorted(fields) or 'none'} (write literal braces as {{{{ }}}})"
                ) from None
        if "{task}" not in self.task:
            raise InvalidArgument(f"HistoryTemplate.task must contain {{task}} (the task is never dropped), got {self.task!r}")


class TokenCounter:
    """Counts tokens of text with a Hugging Face tokenizer, fast.

    Uses the Rust backend of fast tokenizers directly (no Python-side batching), and
    falls back to ``tokenizer.encode``. Special tokens the tokenizer would add around a
    sequence (BOS, ``[CLS]``) are not counted: a prompt's budget is its own text; chat
    templates write their special tokens as text, which is counted.

    Example:
        >>> from transformers import AutoTokenizer  # doctest: +SKIP
        >>> TokenCounter(AutoTokenizer.from_pretrained("gpt2")).count("hello world")  # doctest: +SKIP
        2
    """

    def __init__(self, tokenizer: Any) -> None:
        if tokenizer is None or not (hasattr(tokenizer, "encode") or hasattr(tokenizer, "backend_tokenizer")):
            raise InvalidArgument(
                f"expected a Hugging Face tokenizer (with .encode), got {type(tokenizer).__name__}; "
                "load one with transformers.AutoTokenizer.from_pretrained(...) or stepgym.models.load_tokenizer(...)"
            )
        self.tokenizer = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._backend = backend if backend is not None and hasattr(backend, "encode") else None

    def _fast(self) -> Any:
        b = self._backend
        # A truncation or padding setting left on the backend by an earlier
        # tokenizer(..., truncation=True) call would make counts wrong: use the slow path.
        if b is None or b.truncation is not None or b.padding is not None:
            return None
        return b

    def count(self, text: str) -> int:
        b = self._fast()
        if b is not None:
            return len(b.encode(text, add_special_tokens=False).ids)
        return len(self.tokenizer(text, add_special_tokens=False, truncation=False, padding=False)["input_ids"])

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of each token; proportional spans when the tokenizer has none."""
        b = self._fast()
        if b is not None:
            return list(b.encode(text, add_special_tokens=False).offsets)
        n = self.count(text)
        if n == 0:
            return []
        step = len(text) / n
        return [(int(i * step), int((i + 1) * step) if i < n - 1 else len(text)) for i in range(n)]


_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def clean_text(text: Any) -> str:
    """``text`` as a ``str`` any tokenizer accepts: lone surrogates become U+FFFD.

    Model output decoded from tokens is always valid, but an env or a hand-written action
    may carry a lone surrogate, which Hugging Face tokenizers reject with a TypeError.

    Example:
        >>> clean_text("ok \\udc80") == "ok \\ufffd"
        True
    """
    if not isinstance(text, str):
        text = str(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE_RE.sub("\ufffd", text)
    return text


# -- the shared machinery -------------------------------------------------------------
class _ContextWrapper(gym.Wrapper):
    """Keeps the transcript and builds the prompt; subclasses choose what is shown."""

    def __init__(self, env: gym.Env, *, template: HistoryTemplate | None, max_steps: int | None) -> None:
        inner = find_wrapper(env, _ContextWrapper)
        if inner is not None:
            raise InvalidArgument(
                f"{type(self).__name__} wraps an env that already has a context wrapper "
                f"({type(inner).__name__}); use one context wrapper per stack. "
                "TokenBudget(env, tokenizer, max_tokens, max_steps=k, chat=True) combines a step window, "
                "a token budget and chat messages."
            )
        super().__init__(env)
        if template is not None and not isinstance(template, HistoryTemplate):
            raise InvalidArgument(f"template must be a HistoryTemplate, got {type(template).__name__}")
        if max_steps is not None and (not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 0):
            raise InvalidArgument(f"max_steps must be a non-negative int or None, got {max_steps!r}")
        self.template = template or HistoryTemplate()
        self.max_steps = max_steps
        self._task = ""
        self._steps: list[tuple[str, str]] = []
        # The prompt holds past actions (any unicode) and observations, so it is wider
        # than the inner observation space, and not limited to its charset.
        obs_max = text_bound(env.observation_space)
        act_max = text_bound(env.action_space)
        horizon = episode_bound(env)
        retry = find_wrapper(env, MalformedActionPolicy)
        if horizon is not None and retry is not None and retry.mode == "reprompt":
            horizon *= 1 + retry.max_retries  # retries are steps of the transcript too
        shown = min(x for x in (horizon, max_steps, UNBOUNDED) if x is not None)
        per_step = obs_max + act_max + len(self.template.step) + 32
        bound = obs_max + len(self.template.task) + len(self.template.omitted) + len(self.template.suffix) + 32
        self._max_chars = min(UNBOUNDED, bound + shown * per_step)
        self.observation_space = UnicodeText(self._max_chars, min_length=0)

    # subclasses --------------------------------------------------------------------
    def _build(self) -> tuple[str, dict[str, Any], list[dict[str, str]] | None]:
        raise NotImplementedError

    def _on_reset(self) -> None:
        """Called after the transcript was cleared and the task set."""

    # gymnasium ---------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._task = clean_text(obs)
        self._steps = []
        self._on_reset()
        return self._emit(info)

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._steps.append((clean_text(action), clean_text(obs)))
        prompt, info = self._emit(info)
        return prompt, reward, terminated, truncated, info

    def _emit(self, info: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        prompt, ctx, messages = self._build()
        if len(prompt) > self._max_chars:  # safety net; the bound is computed to hold
            prompt = clip_text(prompt, self._max_chars)
        info = dict(info)
        info["context"] = ctx
        if messages is not None:
            info["messages"] = messages
        return prompt, info

    # rendering helpers -------------------------------------------------------------
    @property
    def transcript(self) -> tuple[str, list[tuple[str, str]]]:
        """``(task, [(action, observation), ...])`` of the current episode."""
        return self._task, list(self._steps)

    def _window_start(self) -> int:
        n = len(self._steps)
        return n if self.max_steps == 0 else max(0, n - self.max_steps) if self.max_steps is not None else 0

    def _step_text(self, index: int, action: str, obs: str) -> str:
        return self.template.step.format(index=index + 1, action=action, observation=obs)

    def _render_text(self, start: int, omitted: str | None = None, last: tuple[str, str] | None = None) -> str:
        t = self.template
        parts = [t.task.format(task=self._task)]
        if start > 0:
            # omitted="" leaves the line out (the last resort of TokenBudget)
            parts.append(t.omitted.format(n=start) if omitted is None else omitted)
        n = len(self._steps)
        for i in range(start, n):
            a, o = last if (last is not None and i == n - 1) else self._steps[i]
            parts.append(self._step_text(i, a, o))
        parts.append(t.suffix)
        return "".join(parts)

    def _messages(
        self, start: int, system: str | None, omitted: str | None = None, last: tuple[str, str] | None = None
    ) -> list[dict[str, str]]:
        n = len(self._steps)
        turns = [last if (last is not None and i == n - 1) else self._steps[i] for i in range(start, n)]
        # The note joins the task message so user/assistant turns keep alternating.
        note = (self.template.omitted.format(n=start) if omitted is None else omitted) if start > 0 else ""
        return transcript_chat(self._task, turns, system, note)

    def _context(self, start: int, tokens_before: int | None = None, tokens_after: int | None = None,
                 tokens_cut: int = 0) -> dict[str, Any]:
        return {
            "truncated": start > 0 or tokens_cut > 0,
            "tokens_before": tokens_before,
            "tokens_after": tokens_after,
            "steps_dropped": start,
            "steps_kept": len(self._steps) - start,
            "tokens_cut": tokens_cut,
        }


class HistoryPrompt(_ContextWrapper):
    """The observation becomes the full prompt: task, every past (action, observation), latest.

    See :class:`HistoryTemplate` for the layout and how to change it. Observations grow
    with the episode; use :class:`ContextWindow` or :class:`TokenBudget` to bound them.

    Args:
        env: any text env (its first observation is taken as the task).
        template: a :class:`HistoryTemplate`.

    Example:
        >>> import gymnasium as gym, stepgym
        >>> from stepgym.wrappers import HistoryPrompt
        >>> env = HistoryPrompt(gym.make("stepgym/ToolUse-v0"))
        >>> task, _ = env.reset(seed=0)
        >>> prompt, *_ = env.step("Action: lookup[Belxo, population]")
        >>> prompt.startswith(task), "[Step 1]\\nAction:\\nAction: lookup[Belxo, population]" in prompt
        (True, True)
    """

    def __init__(self, env: gym.Env, template: HistoryTemplate | None = None) -> None:
        super().__init__(env, template=template, max_steps=None)

    def _build(self):
        start = self._window_start()
        return self._render_text(start), self._context(start), None


class ContextWindow(_ContextWrapper):
    """The task and the last ``max_steps`` steps; older steps become one "omitted" line.

    Args:
        env: any text env.
        max_steps: how many recent steps to show (0 shows the task and a count only).
        template: a :class:`HistoryTemplate`.

    Example:
        >>> import gymnasium as gym, stepgym
        >>> from stepgym.wrappers import ContextWindow
        >>> env = ContextWindow(gym.make("stepgym/ToolUse-v0"), max_steps=1)
        >>> _ = env.reset(seed=0)
        >>> _ = env.step("hi")
        >>> prompt, _, _, _, info = env.step("hello")
        >>> info["context"]["steps_dropped"], "[Step 2]" in prompt, "[Step 1]" in prompt
        (1, True, False)
    """

    def __init__(self, env: gym.Env, max_steps: int, template: HistoryTemplate | None = None) -> None:
        if max_steps is None:
            raise InvalidArgument("ContextWindow needs max_steps (an int >= 0); use HistoryPrompt for the full history")
        super().__init__(env, template=template, max_steps=max_steps)

    def _build(self):
        start = self._window_start()
        return self._render_text(start), self._context(start), None


def _check_chat_tokenizer(tokenizer: Any, who: str) -> None:
    if not hasattr(tokenizer, "apply_chat_template"):
        raise InvalidArgument(f"{who} needs a Hugging Face tokenizer with apply_chat_template, got {type(tokenizer).__name__}")
    if getattr(tokenizer, "chat_template", None) is None:
        raise InvalidArgument(
            f"{who}: the tokenizer has no chat template (tokenizer.chat_template is None); "
            "use a chat model's tokenizer, set tokenizer.chat_template, or pass tokenizer=None"
        )


def _chat_text(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


class ChatMessages(_ContextWrapper):
    """The state as chat messages, so chat models see the turn structure they were trained on.

    ``info["messages"]`` is ``[system?], user: task, assistant: action 1, user: observation 1,
    ...``. With a ``tokenizer`` the observation is that list rendered through
    ``tokenizer.apply_chat_template(..., add_generation_prompt=True)``; without one it is
    the :class:`HistoryPrompt` text.

    Args:
        env: any text env.
        tokenizer: a Hugging Face tokenizer with a chat template, or ``None``.
        system: an optional system message.
        max_steps: show only the last ``max_steps`` steps (``None``: all).

    Example:
        >>> import gymnasium as gym, stepgym
        >>> from stepgym.wrappers import ChatMessages
        >>> env = ChatMessages(gym.make("stepgym/ToolUse-v0"), system="Be brief.")
        >>> _ = env.reset(seed=0)
        >>> _, _, _, _, info = env.step("hi")
        >>> [m["role"] for m in info["messages"]]
        ['system', 'user', 'assistant', 'user']
    """

    def __init__(
        self,
        env: gym.Env,
        tokenizer: Any = None,
        *,
        system: str | None = None,
        max_steps: int | None = None,
        template: HistoryTemplate | None = None,
    ) -> None:
        super().__init__(env, template=template, max_steps=max_steps)
        if tokenizer is not None:
            _check_chat_tokenizer(tokenizer, "ChatMessages")
        if system is not None and not isinstance(system, str):
            raise InvalidArgument(f"system must be a str or None, got {type(system).__name__}")
        self.tokenizer = tokenizer
        self.system = system

    def _build(self):
        start = self._window_start()
        messages = self._messages(start, self.system)
        text = _chat_text(self.tokenizer, messages) if self.tokenizer is not None else self._render_text(start)
        return text, self._context(start), messages


class TokenBudget(_ContextWrapper):
    """Guarantee that the prompt fits ``max_tokens`` tokens of ``tokenizer``; never drop the task.

    Each step the wrapper shows the task, then as many of the most recent steps as fit,
    oldest dropped first (one "omitted" line, or ``summarize(dropped_steps)``, stands in
    for them). When even the latest step does not fit, its observation is cut in the
    middle (head and tail kept, at token boundaries, with a ``[... n tokens cut ...]``
    marker), then, if needed, its action. The guarantee is checked on the final text with
    one exact count, so it holds whatever the tokenizer does at piece boundaries.

    Cost per step: one tokenisation of the new step (counts are cached per step, so the
    history is never re-tokenised) plus one exact count of the prompt, which is at most
    ``max_tokens`` long. See ``bench/wrappers.py`` for figures.

    ``info["context"]`` reports ``tokens_before`` (the whole transcript, summed from the
    cached per-piece counts), ``tokens_after`` (the exact count of the returned prompt),
    ``steps_dropped`` and ``tokens_cut``. Counting excludes special tokens the tokenizer
    adds around a sequence (BOS, ``[CLS]``); keep that much headroom if your model adds them.

    Args:
        env: any text env.
        tokenizer: a Hugging Face tokenizer.
        max_tokens: the budget.
        max_steps: also keep at most this many recent steps (a :class:`ContextWindow`).
        chat: render (and count) through the tokenizer's chat template, as
            :class:`ChatMessages` does; ``info["messages"]`` lists the kept messages.
        system: system message in chat mode.
        template: a :class:`HistoryTemplate` (text mode; ``omitted`` and ``cut`` in both).
        summarize: ``summarize([(action, observation), ...]) -> str`` replaces the
            "omitted" line with a summary of the dropped steps.

    Raises:
        InvalidArgument: at ``reset`` when the task alone exceeds ``max_tokens`` (the
            task is never cut, so the budget cannot hold).

    Example:
        >>> import gymnasium as gym, stepgym
        >>> from stepgym.wrappers import TokenBudget
        >>> from stepgym.models import load_tokenizer  # doctest: +SKIP
        >>> env = TokenBudget(gym.make("stepgym/ToolUse-v0"), load_tokenizer("smollm2-135m"), 512)  # doctest: +SKIP
        >>> prompt, info = env.reset(seed=0)  # doctest: +SKIP
        >>> info["context"]["tokens_after"] <= 512  # doctest: +SKIP
        True
    """

    def __init__(
        self,
        env: gym.Env,
        tokenizer: Any,
        max_tokens: int,
        *,
        max_steps: int | None = None,
        chat: bool = False,
        system: str | None = None,
        template: HistoryTemplate | None = None,
        summarize: Callable[[list[tuple[str, str]]], str] | None = None,
    ) -> None:
        super().__init__(env, template=template, max_steps=max_steps)
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise InvalidArgument(f"max_tokens must be a positive int, got {max_tokens!r}")
        self.counter = TokenCounter(tokenizer)
        if chat:
            _check_chat_tokenizer(tokenizer, "TokenBudget(chat=True)")
        if summarize is not None and not callable(summarize):
            raise InvalidArgument(f"summarize must be a callable or None, got {summarize!r}")
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.chat = bool(chat)
        self.system = system
        self.summarize = summarize
        self._base = 0  # tokens of the prompt with no steps (task, system, suffix, template)
        self._per_step_overhead = 0
        self._counts: list[int] = []  # estimated tokens of each step's piece, cached
        self._total = 0  # sum of self._counts

    # -- counting --------------------------------------------------------------------
    def _count(self, text: str) -> int:
        return self.counter.count(text)

    def _piece_count(self, index: int, action: str, obs: str) -> int:
        if self.chat:
            return self._count(action) + self._count(obs) + self._per_step_overhead
        return self._count(self._step_text(index, action, obs))

    def _render(self, start: int, omitted: str | None, last: tuple[str, str] | None):
        if self.chat:
            msgs = self._messages(start, self.system, omitted, last)
            return _chat_text(self.tokenizer, msgs), msgs
        return self._render_text(start, omitted, last), None

    def _on_reset(self) -> None:
        self._counts = []
        self._total = 0
        base_text, _ = self._render(0, None, None)
        self._base = self._count(base_text)
        if self._base > self.max_tokens:
            raise InvalidArgument(
                f"TokenBudget: the task alone takes {self._base} tokens but max_tokens={self.max_tokens}; "
                f"the task is never cut, so raise max_tokens to at least {self._base} (better: leave room "
                "for a few steps)"
            )
        if self.chat:
            # Tokens the chat template adds around one (assistant, user) pair, measured once.
            self._steps = [("x", "y")]
            one = self._count(self._render(0, None, None)[0])
            self._steps = []
            self._per_step_overhead = max(0, one - self._base - self._count("x") - self._count("y"))

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        a, o = clean_text(action), clean_text(obs)
        self._steps.append((a, o))
        c = self._piece_count(len(self._steps) - 1, a, o)
        self._counts.append(c)
        self._total += c
        prompt, info = self._emit(info)
        return prompt, reward, terminated, truncated, info

    # -- selection -------------------------------------------------------------------
    def _omitted_text(self, start: int) -> str | None:
        if start == 0 or self.summarize is None:
            return None
        return str(self.summarize(self._steps[:start]))

    def _build(self):
        n = len(self._steps)
        budget = self.max_tokens
        tokens_before = self._base + self._total
        start = self._window_start()
        if n == 0 or start == n:  # nothing to show but the task (max_steps=0)
            text, msgs = self._render(n, self._omitted_text(n), None)
            exact = self._base if n == 0 else self._count(text)
            if exact > budget:
                text, msgs = self._render(n, "", None)
                exact = self._count(text)
            return text, self._context(n, tokens_before, exact), msgs
        # Newest-first estimate from the cached counts: keep a contiguous run of recent
        # steps (the latest always) whose pieces fit beside the task and the omitted line.
        room = budget - self._base - self._count(self.template.omitted.format(n=n))
        first = n - 1
        used = self._counts[n - 1]
        while first - 1 >= start and used + self._counts[first - 1] <= room:
            first -= 1
            used += self._counts[first]
        start = first
        # Exact check on the real text; drop or cut more until it fits.
        last: tuple[str, str] | None = None
        tokens_cut = 0
        while True:
            omitted = self._omitted_text(start)
            text, msgs = self._render(start, omitted, last)
            exact = self._count(text)
            if exact <= budget:
                return text, self._context(start, tokens_before, exact, tokens_cut), msgs
            over = exact - budget
            if start < n - 1:
                # drop enough of the oldest kept steps to cover the excess (at least one)
                freed = 0
                while start < n - 1 and freed < over:
                    freed += self._counts[start]
                    start += 1
                continue
            cut = self._cut_latest(start, omitted, exact)
            if cut is None:
                # Even an empty latest step does not fit: show the task and a count only.
                text, msgs = self._render(n, self._omitted_text(n), None)
                exact = self._count(text)
                if exact > budget:
                    # the task alone fits (checked at reset): drop the omitted line too
                    text, msgs = self._render(n, "", None)
                    exact = self._count(text)
                return text, self._context(n, tokens_before, exact, self._counts[-1]), msgs
            last, tokens_cut = cut

    def _cut_latest(self, start: int, omitted: str | None, exact: int) -> tuple[tuple[str, str], int] | None:
        """Cut the latest observation (then action) in the middle until the prompt fits."""
        action, obs = self._steps[-1]
        budget = self.max_tokens
        cut_obs, obs_cut = obs, 0
        cut_act, act_cut = action, 0
        over = exact - budget
        for part in ("observation", "action"):
            text = obs if part == "observation" else action
            offs = self.counter.offsets(text)
            m = len(offs)
            if m == 0:
                continue
            marker_tokens = self._count(self.template.cut.format(n=m))
            keep = max(0, m - over - marker_tokens - 2)
            while True:
                piece = self._cut_text(text, offs, keep)
                if part == "observation":
                    cut_obs, obs_cut = piece, m - keep
                else:
                    cut_act, act_cut = piece, m - keep
                last = (cut_act, cut_obs)
                rendered, _ = self._render(start, omitted, last)
                exact = self._count(rendered)
                if exact <= budget:
                    return last, obs_cut + act_cut
                if keep == 0:
                    break
                keep = max(0, keep - (exact - budget) - 1)
            over = exact - budget
        return None

    def _cut_text(self, text: str, offs: Sequence[tuple[int, int]], keep: int) -> str:
        m = len(offs)
        if keep >= m:
            return text
        marker = self.template.cut.format(n=m - keep)
        if keep <= 0:
            return marker
        h = keep - keep // 2
        t = keep // 2
        head_end = offs[h - 1][1]
        tail_start = offs[m - t][0] if t else len(text)
        tail_start = max(tail_start, head_end)
        return text[:head_end] + marker + text[tail_start:]
