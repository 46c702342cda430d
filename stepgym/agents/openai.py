"""An agent over any OpenAI-compatible chat-completions server (stdlib HTTP only).

Works with vLLM, SGLang, llama.cpp's server, ``stepgym serve`` and hosted APIs. The
server's ``tool_calls`` are mapped to the env's canonical action format
(``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``).
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from stepgym.actions import format_tool_call
from stepgym.agents.base import AgentError, BaseAgent, ToolSpec, chat_messages, parse_tools
from stepgym.errors import InvalidArgument, InvalidConfig

__all__ = [
    "OpenAIAgent",
    "APIError",
    "BatchAPIError",
    "ContextOverflow",
    "context_overflow",
    "context_from_models",
    "tool_calls_to_action",
    "RETRY_STATUS",
    "DEFAULT_MAX_TOKENS",
]

#: HTTP statuses worth retrying (rate limits, overload, transient server faults).
RETRY_STATUS: frozenset[int] = frozenset({408, 409, 429, 500, 502, 503, 504})
#: Completion tokens asked for per action unless told otherwise. Without a ``max_tokens``
#: some servers reserve the whole remaining context for the reply.
DEFAULT_MAX_TOKENS = 512


class APIError(AgentError):
    """The server answered with an error that retrying will not fix (or retries ran out)."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class BatchAPIError(APIError):
    """Some requests of an ``act_batch`` call failed; the others have their actions.

    ``actions[i]`` is the action of entry ``i`` (``None`` where it failed) and
    ``errors[i]`` the exception of a failed entry. :func:`~stepgym.agents.evaluate.evaluate`
    reads both, so one episode's error ends that episode only.
    """

    def __init__(self, actions: list[str | None], errors: dict[int, BaseException], token_counts: list[int]) -> None:
        first = errors[min(errors)]
        super().__init__(
            f"{len(errors)} of {len(actions)} request(s) failed; first: {first}",
            getattr(first, "status", None),
            getattr(first, "body", None),
        )
        self.actions = actions
        self.errors = errors
        self.token_counts = token_counts


# -- the server's context size ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContextOverflow:
    """What a "prompt too long" error says: the context size and the prompt's tokens (when given)."""

    context: int | None
    prompt_tokens: int | None


# "This model's maximum context length is 4096 tokens" (OpenAI, vLLM, stepgym serve),
# "exceeds the available context size (4096 tokens)" (llama.cpp),
# "longer than the model's context length (4096 tokens)" (SGLang).
_CONTEXT_RES = (
    re.compile(r"maximum context length (?:is |of )?(\d+)", re.I),
    re.compile(r"context (?:size|length|window) \((\d+) tokens?\)", re.I),
    re.compile(r"context (?:size|length|window) (?:is |of )(\d+)", re.I),
)
# "(4211 in the messages, ...)", "your request has 4176 input tokens", "your messages resulted in
# 8500 tokens", "request (4476 tokens) exceeds", "The input (5000 tokens) is longer", "4500 tokens
# from the input messages".
_PROMPT_RES = (
    re.compile(r"\((\d+) in the messages", re.I),
    re.compile(r"has (\d+) input tokens", re.I),
    re.compile(r"messages resulted in (\d+) tokens", re.I),
    re.compile(r"(?:request|input|prompt) \((\d+) tokens?\)", re.I),
    re.compile(r"(\d+) tokens from the input", re.I),
)
_OVERFLOW_HINTS = (
    "context_length_exceeded",
    "exceed_context_size",
    "context length",
    "context size",
    "context window",
    "prompt is too long",
    "input is too long",
    "too many tokens",
)
_TOOLS_RE = re.compile(r"\btools?\b|tool_choice|tool[ _-]?call|tool[ _-]choice|\bfunctions?\b|function_call", re.I)


def _error_fields(body: Any) -> dict[str, Any]:
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return err
        return body
    return {"message": str(body or "")}


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, str) and value.isdigit() and int(value) > 0:
        return int(value)
    return None


def context_overflow(status: int | None, body: Any) -> ContextOverflow | None:
    """A :class:`ContextOverflow` when an error response says the prompt does not fit, else None.

    Reads the formats of OpenAI, vLLM, SGLang, llama.cpp's server and ``stepgym serve``.

    Example:
        >>> context_overflow(400, {"error": {"message": "This model's maximum context length is 4096 tokens. "
        ...     "However, you requested 4723 tokens (4211 in the messages, 512 in the completion)."}})
        ContextOverflow(context=4096, prompt_tokens=4211)
        >>> context_overflow(400, {"error": {"code": 400, "type": "exceed_context_size_error",
        ...     "message": "the request exceeds the available context size, try increasing it",
        ...     "n_prompt_tokens": 2100, "n_ctx": 2048}})
        ContextOverflow(context=2048, prompt_tokens=2100)
        >>> context_overflow(400, {"error": {"message": "Invalid 'tools': expected an array"}}) is None
        True
    """
    if status is None or not 400 <= status < 500:
        return None
    fields = _error_fields(body)
    message = str(fields.get("message") or fields.get("detail") or "")
    code = " ".join(str(fields.get(k) or "") for k in ("code", "type"))
    context = _int(fields.get("n_ctx"))
    prompt = _int(fields.get("n_prompt_tokens"))
    for rx in _CONTEXT_RES:
        m = rx.search(message)
        if context is None and m:
            context = int(m.group(1))
    for rx in _PROMPT_RES:
        m = rx.search(message)
        if prompt is None and m:
            prompt = int(m.group(1))
    text = (message + " " + code).lower()
    if context is None and not any(h in text for h in _OVERFLOW_HINTS):
        return None
    return ContextOverflow(context, prompt)


def _tools_rejected(status: int | None, body: Any) -> bool:
    """True when a 400/422 says the request's tools (or tool choice) are the problem."""
    if status not in (400, 422) or context_overflow(status, body) is not None:
        return False
    fields = _error_fields(body)
    param = str(fields.get("param") or "")
    if param.split(".")[0].split("[")[0] in ("tools", "tool_choice", "functions", "function_call"):
        return True
    return bool(_TOOLS_RE.search(str(fields.get("message") or fields.get("detail") or "")))


#: Keys under which servers announce a model's context size in ``/v1/models``.
_CONTEXT_KEYS = ("max_model_len", "context_length", "context_window", "max_context_length", "n_ctx", "n_ctx_train")


def context_from_models(payload: Any, model: str | None = None) -> int | None:
    """The context size a ``/v1/models`` answer gives for ``model`` (else its only model).

    vLLM sends ``max_model_len``, llama.cpp ``meta.n_ctx_train``, others ``context_length``.

    Example:
        >>> context_from_models({"data": [{"id": "m", "max_model_len": 2048}]}, "m")
        2048
        >>> context_from_models({"data": [{"id": "m", "meta": {"n_ctx_train": 4096}}]}, "other")
        4096
        >>> context_from_models({"data": [{"id": "a"}, {"id": "b", "context_length": 8}]}, "a") is None
        True
    """
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        return None
    cards = [c for c in data if isinstance(c, dict)]
    mine = [c for c in cards if c.get("id") == model]
    if not mine and len(cards) == 1:
        mine = cards
    for card in mine[:1]:
        for where in (card, card.get("meta"), card.get("metadata"), card.get("top_provider")):
            if isinstance(where, dict):
                for key in _CONTEXT_KEYS:
                    value = _int(where.get(key))
                    if value is not None:
                        return value
    return None


def tool_calls_to_action(message: dict[str, Any]) -> str:
    """The env action for an assistant message: its text, then its first tool call as ``<tool_call>``.

    Example:
        >>> tool_calls_to_action({"content": "Let me search.", "tool_calls": [{"type": "function",
        ...     "function": {"name": "search", "arguments": "{\\"query\\": \\"x\\"}"}}]})
        'Let me search. <tool_call>{"name": "search", "arguments": {"query": "x"}}</tool_call>'
    """
    content = message.get("content") or ""
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    calls = message.get("tool_calls") or []
    if not calls:
        return str(content)
    fn = (calls[0] or {}).get("function") or {}
    name = str(fn.get("name", ""))
    raw = fn.get("arguments", {})
    if isinstance(raw, str):
        try:
            args = json.loads(raw) if raw.strip() else {}
        except ValueError:
            # Keep the malformed JSON visible to the env, which answers with a parse error.
            call = '<tool_call>{"name": ' + json.dumps(name) + ', "arguments": ' + raw + "}</tool_call>"
            return (str(content).strip() + " " + call).strip()
    else:
        args = raw
    call = format_tool_call(name, args if isinstance(args, dict) else {"value": args})
    return (str(content).strip() + " " + call).strip()


def _split_spec(spec: str) -> tuple[str | None, str | None]:
    """``MODEL@BASE_URL`` -> (model, base_url); either part may be missing."""
    for marker in ("@http://", "@https://"):
        i = spec.find(marker)
        if i >= 0:
            return spec[:i] or None, spec[i + 1 :]
    return (spec or None), None


class OpenAIAgent(BaseAgent):
    """Any OpenAI-compatible ``/v1/chat/completions`` server as an agent.

    Configuration comes from the arguments, else from the environment variables
    ``OPENAI_BASE_URL`` (default ``https://api.openai.com/v1``), ``OPENAI_API_KEY`` and
    ``OPENAI_MODEL``. Transient failures (connection errors, timeouts, HTTP 408/409/429/5xx)
    are retried with exponential backoff and jitter, honouring ``Retry-After``; other
    errors raise :class:`APIError` with the server's message.

    Args:
        model: model name the server knows (``OPENAI_MODEL`` if None).
        base_url: the server's base URL, ending in ``/v1`` (``OPENAI_BASE_URL`` if None).
        api_key: bearer token (``OPENAI_API_KEY`` if None; local servers need none).
        temperature / top_p: sampling settings sent with each request.
        max_tokens: completion tokens at most per action (default 512; None sends none and
            leaves it to the server, which may then reserve its whole context for the reply).
        max_context: the server's context size in tokens (prompt + completion). None: learned
            from ``/v1/models`` (``max_model_len``, ``context_length``, ``meta.n_ctx_train``)
            or from the first "maximum context length" error.
        system_prompt: optional system message put first in every chat.
        history: keep each episode's chat (else send the latest observation only). A chat
            that outgrows the context keeps its first user turn (the task) and loses its
            oldest turns; when the server rejects a prompt as too long, the agent learns the
            context size from the error, shortens the chat and retries once.
        tools: ``"auto"`` sends the tools listed in the observation as OpenAI ``tools`` and
            maps ``tool_calls`` back to ``<tool_call>`` actions (if the server rejects
            ``tools`` with an error about tools, the agent retries once without and stops
            sending them); ``"none"`` never sends them.
        timeout_s: per-request timeout in seconds.
        max_retries: retries after the first attempt for transient failures.
        backoff_s / max_backoff_s: first backoff delay and its cap.
        concurrency: parallel requests in ``act_batch``.
        seed: sent as ``seed`` (servers that support it sample reproducibly).
        name: label in tables (default ``openai:<model>``).

    Example:
        >>> agent = OpenAIAgent("Qwen/Qwen3-8B", base_url="http://127.0.0.1:8000/v1")  # doctest: +SKIP
        >>> agent.act(obs, info)  # doctest: +SKIP
    """

    counts_tokens = True

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        temperature: float = 0.7,
        top_p: float = 1.0,
        max_tokens: int | None = DEFAULT_MAX_TOKENS,
        max_context: int | None = None,
        system_prompt: str | None = None,
        history: bool = True,
        tools: str = "auto",
        timeout_s: float = 60.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 20.0,
        concurrency: int = 8,
        seed: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        self.model = model or os.environ.get("OPENAI_MODEL")
        if not self.model:
            raise InvalidArgument(
                "OpenAIAgent needs a model name: pass model=..., use the spec openai:MODEL@BASE_URL, "
                "or set OPENAI_MODEL"
            )
        base = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        if not base.startswith(("http://", "https://")):
            raise InvalidConfig("base_url", base, "an http:// or https:// URL such as http://127.0.0.1:8000/v1")
        self.base_url = base.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        if tools not in ("auto", "none"):
            raise InvalidConfig("tools", tools, "'auto' or 'none'")
        if timeout_s <= 0:
            raise InvalidConfig("timeout_s", timeout_s, "a positive number of seconds")
        if max_retries < 0:
            raise InvalidConfig("max_retries", max_retries, "an int >= 0")
        if concurrency < 1:
            raise InvalidConfig("concurrency", concurrency, "an int >= 1")
        if max_tokens is not None and int(max_tokens) < 1:
            raise InvalidConfig("max_tokens", max_tokens, "an int >= 1, or None for the server's default")
        if max_context is not None and int(max_context) < 2:
            raise InvalidConfig("max_context", max_context, "the server's context size in tokens, e.g. 4096")
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.max_tokens = None if max_tokens is None else int(max_tokens)
        self.system_prompt = system_prompt
        self.history = history
        self.tools_mode = tools
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.concurrency = int(concurrency)
        self.seed = seed
        self.name = name or f"openai:{self.model}"
        self._tools: dict[int, list[ToolSpec]] = {}
        self._rng = random.Random(seed)
        #: number of HTTP attempts made (including retries), for logs and tests.
        self.attempts = 0
        #: the server's context size in tokens, once known (argument, /v1/models or an error).
        self.context: int | None = None if max_context is None else int(max_context)
        #: prompt tokens per character, measured from the server's usage counts (None: chars/4).
        self.tokens_per_char: float | None = None
        #: chat turns left out of requests so the prompt fits the context, for logs and tests.
        self.turns_dropped = 0
        #: requests sent again after a "maximum context length" error.
        self.context_retries = 0
        self._ratio_chars = 0
        self._models_probed = max_context is not None
        self._lock = threading.Lock()

    def reset(self, slot: int | None = None) -> None:
        super().reset(slot)
        if slot is None:
            self._tools.clear()
        else:
            self._tools.pop(int(slot), None)

    # -- HTTP -------------------------------------------------------------------------------
    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = self.base_url + path
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last: str = ""
        for attempt in range(self.max_retries + 1):
            self.attempts += 1
            req = urllib.request.Request(url, data=data, headers=headers, method="POST")
            retry_after: float | None = None
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:
                raw = exc.read().decode("utf-8", errors="replace")
                try:
                    payload = json.loads(raw)
                except ValueError:
                    payload = raw
                msg = _error_message(payload) or exc.reason
                if exc.code not in RETRY_STATUS:
                    raise APIError(f"{url} answered HTTP {exc.code}: {msg}", exc.code, payload) from None
                last = f"HTTP {exc.code}: {msg}"
                retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                reason = getattr(exc, "reason", exc)
                last = f"{type(exc).__name__}: {reason}"
            except ValueError as exc:  # the server sent something that is not JSON
                raise APIError(f"{url} answered with invalid JSON: {exc}") from None
            if attempt == self.max_retries:
                break
            delay = min(self.max_backoff_s, self.backoff_s * (2**attempt)) * (1.0 + 0.25 * self._rng.random())
            if retry_after is not None:
                delay = min(self.max_backoff_s, max(delay, retry_after))
            time.sleep(delay)
        raise APIError(
            f"{url} failed after {self.max_retries + 1} attempt(s); last error: {last}. "
            "Check the server is running and OPENAI_BASE_URL points at it (ending in /v1)."
        )

    # -- fitting the chat to the context ----------------------------------------------------------
    def _probe_context(self) -> None:
        """Read the context size from ``/v1/models`` once (servers that publish it)."""
        with self._lock:
            if self._models_probed:
                return
            self._models_probed = True
        try:
            found = context_from_models(self._get("/models", timeout=min(self.timeout_s, 10.0)), self.model)
        except (APIError, OSError, ValueError):
            return
        if found is not None:
            self._learn_context(found)

    def _learn_context(self, context: int) -> None:
        with self._lock:
            self.context = context if self.context is None else min(self.context, context)

    def _learn_ratio(self, prompt_tokens: int, messages: list[dict[str, Any]], tools: Any) -> None:
        chars = _chars(messages, tools)
        if chars <= 0 or prompt_tokens <= 0:
            return
        ratio = prompt_tokens / chars
        with self._lock:
            # The ratio of the longest prompt seen: in short prompts the chat template's own
            # tokens weigh more than they do in the long prompts that have to be fitted.
            if chars >= self._ratio_chars:
                self.tokens_per_char, self._ratio_chars = ratio, chars

    def estimate_tokens(self, messages: list[dict[str, Any]], tools: Any = None) -> int:
        """Prompt tokens of a request, estimated from its characters.

        With the server's usage counts the ratio is measured (plus 5%); before that it is
        characters/4 plus 25%, as tokenizers of small vocabularies make shorter tokens.
        """
        ratio = self.tokens_per_char
        per_char = 0.25 * 1.25 if ratio is None else ratio * 1.05
        return int(per_char * _chars(messages, tools)) + 1

    def fit(
        self, messages: list[dict[str, Any]], tools: Any = None, max_tokens: int | None = None
    ) -> tuple[list[dict[str, Any]], int | None]:
        """``(messages, max_tokens)`` that fit the known context.

        Keeps the system messages and the first user turn (the task), drops the oldest
        turns after it and says so in the task turn (``[N earlier step(s) omitted]``); if
        the task and the latest turn alone are too long, the completion budget shrinks.
        Without a known context the chat is returned as is.
        """
        context = self.context
        if context is None:
            return messages, max_tokens
        margin = max(8, context // 32)
        budget = context - (max_tokens or 0) - margin
        if self.estimate_tokens(messages, tools) <= budget:
            return messages, max_tokens
        fitted, dropped = _drop_oldest_turns(messages, lambda m: self.estimate_tokens(m, tools) <= budget)
        if dropped:
            with self._lock:
                self.turns_dropped += dropped
        need = self.estimate_tokens(fitted, tools)
        if max_tokens is not None and need > budget:
            # Even the shortest chat leaves no room for max_tokens: ask for what is left.
            max_tokens = max(1, min(max_tokens, context - need - margin))
        return fitted, max_tokens

    def complete(self, messages: list[dict[str, Any]], tools: list[ToolSpec] | None = None) -> tuple[str, int]:
        """One chat completion: ``(action text, completion tokens)``.

        The chat is shortened to the server's context first (see :meth:`fit`); a
        "maximum context length" error teaches the agent the context, and the request is
        fitted and sent once more.
        """
        if self.context is None and not self._models_probed:
            self._probe_context()
        schemas = [t.openai_schema() for t in tools] if tools else None
        body: dict[str, Any] = {
            "model": self.model,
            "temperature": self.temperature,
            "top_p": self.top_p,
        }
        if self.seed is not None:
            body["seed"] = self.seed

        def send(msgs: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            use = schemas if schemas and self.tools_mode == "auto" else None
            fitted, max_tokens = self.fit(msgs, use, self.max_tokens)
            req = dict(body, messages=fitted)
            if max_tokens is not None:
                req["max_tokens"] = max_tokens
            if use:
                req["tools"] = use
            try:
                return self._post("/chat/completions", req), fitted
            except APIError as exc:
                if use and _tools_rejected(exc.status, exc.body):
                    # Servers started without tool support reject `tools`; the tools are in the text anyway.
                    self.tools_mode = "none"
                    return send(msgs)
                overflow = context_overflow(exc.status, exc.body)
                if overflow is not None:
                    exc.overflow = overflow  # type: ignore[attr-defined]
                    exc.sent = (fitted, use, max_tokens)  # type: ignore[attr-defined]
                raise

        try:
            out, sent = send(messages)
        except APIError as exc:
            overflow: ContextOverflow | None = getattr(exc, "overflow", None)
            if overflow is None:
                raise
            fitted, use, max_tokens = exc.sent  # type: ignore[attr-defined]
            if overflow.prompt_tokens is not None:
                self._learn_ratio(overflow.prompt_tokens, fitted, use)
            if overflow.context is not None:
                self._learn_context(overflow.context)
            else:
                # The server did not say its size: take it as somewhat below what was asked for.
                asked = (overflow.prompt_tokens or self.estimate_tokens(fitted, use)) + (max_tokens or 0)
                self._learn_context(max(16, int(asked * 0.75)))
            with self._lock:
                self.context_retries += 1
            try:
                out, sent = send(messages)
            except APIError as again:
                if getattr(again, "overflow", None) is None:
                    raise
                raise APIError(
                    f"{again} (the chat was shortened to the server's context of {self.context} tokens "
                    "and still did not fit; try a smaller max_tokens or a larger context)",
                    again.status,
                    again.body,
                ) from None
        choices = out.get("choices") if isinstance(out, dict) else None
        if not choices:
            raise APIError(f"the server's answer has no choices: {str(out)[:300]}")
        message = choices[0].get("message") or {}
        action = tool_calls_to_action(message)
        usage = out.get("usage") or {}
        prompt_tokens = usage.get("prompt_tokens")
        if isinstance(prompt_tokens, int) and prompt_tokens > 0:
            self._learn_ratio(prompt_tokens, sent, schemas if self.tools_mode == "auto" else None)
        tokens = usage.get("completion_tokens")
        if not isinstance(tokens, int):
            tokens = max(1, len(action) // 4)
        return action, tokens

    def _act_batch(self, observations: list[str], infos: list[dict[str, Any]], slots: list[int]) -> list[str]:
        jobs = []
        for obs, info, slot in zip(observations, infos, slots, strict=True):
            found = parse_tools(obs)
            if found:
                self._tools[slot] = found
            memory = self.memory.setdefault(slot, []) if self.history else []
            jobs.append((chat_messages(memory, obs, info, self.system_prompt), self._tools.get(slot)))
        if len(jobs) == 1:
            results = [self.complete(*jobs[0])]  # one request: its error is the call's error
        else:

            def run(job: tuple[list[dict[str, Any]], list[ToolSpec] | None]) -> tuple[str, int] | Exception:
                try:
                    return self.complete(*job)
                except Exception as exc:  # noqa: BLE001 - reported per entry below
                    return exc

            if self.concurrency == 1:
                results = [run(job) for job in jobs]
            else:
                with ThreadPoolExecutor(max_workers=min(self.concurrency, len(jobs))) as pool:
                    results = list(pool.map(run, jobs))
        actions: list[str | None] = [None if isinstance(r, Exception) else r[0] for r in results]
        counts = [0 if isinstance(r, Exception) else r[1] for r in results]
        self.last_token_counts = counts
        if self.history:
            for slot, info, action in zip(slots, infos, actions, strict=True):
                if action is not None and "messages" not in info:
                    self.memory[slot].append({"role": "assistant", "content": action})
        errors = {i: r for i, r in enumerate(results) if isinstance(r, Exception)}
        if errors:
            raise BatchAPIError(actions, errors, counts)
        return [a for a in actions if a is not None]

    def _get(self, path: str, timeout: float | None = None) -> Any:
        req = urllib.request.Request(
            self.base_url + path, headers=({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout_s) as resp:
                return json.loads(resp.read().decode("utf-8"))
        except (TimeoutError, urllib.error.URLError, ValueError) as exc:
            raise APIError(f"could not read {self.base_url}{path}: {exc}") from None

    def list_models(self) -> list[str]:
        """Model ids the server offers (``GET /v1/models``)."""
        data = self._get("/models")
        return [m.get("id", "") for m in data.get("data", [])] if isinstance(data, dict) else []


def _content_chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(str(p.get("text", ""))) if isinstance(p, dict) else len(str(p)) for p in content)
    return len(str(content or ""))


def _chars(messages: list[dict[str, Any]], tools: Any = None) -> int:
    """Characters of a request's prompt: contents, 16 per message for the template, the tools' JSON."""
    n = sum(16 + _content_chars(m.get("content")) + (len(json.dumps(m["tool_calls"])) if m.get("tool_calls") else 0)
            for m in messages)
    return n + (len(json.dumps(tools)) if tools else 0)


def _with_note(message: dict[str, Any], note: str) -> dict[str, Any]:
    out = dict(message)
    content = out.get("content")
    if isinstance(content, list):
        out["content"] = [*content, {"type": "text", "text": note}]
    else:
        out["content"] = str(content or "") + note
    return out


def _drop_oldest_turns(
    messages: list[dict[str, Any]], fits: Any
) -> tuple[list[dict[str, Any]], int]:
    r"""The chat with its oldest turns left out until ``fits(chat)``; also how many were dropped.

    The leading system messages and the first user message stay; a turn is an assistant
    message and what follows it up to the next assistant message. When no turn is left
    the latest observation goes into the task message, so the model still sees it.

    Example:
        >>> chat = [{"role": "user", "content": "task"}, {"role": "assistant", "content": "a1"},
        ...         {"role": "user", "content": "o1"}, {"role": "assistant", "content": "a2"},
        ...         {"role": "user", "content": "o2"}]
        >>> fitted, n = _drop_oldest_turns(chat, lambda m: len(m) <= 3)
        >>> n, [m["content"] for m in fitted]
        (1, ['task\n\n[1 earlier step(s) omitted]', 'a2', 'o2'])
    """
    head = 0
    while head < len(messages) and messages[head].get("role") in ("system", "developer"):
        head += 1
    if head >= len(messages) - 1:
        return messages, 0
    first, rest = messages[head], messages[head + 1 :]
    turns: list[list[dict[str, Any]]] = []
    for m in rest:
        if m.get("role") == "assistant" or not turns:
            turns.append([m])
        else:
            turns[-1].append(m)
    lead = messages[:head]

    def chat(kept: list[list[dict[str, Any]]], dropped: int) -> list[dict[str, Any]]:
        if not dropped:
            return messages
        if kept:
            note = f"\n\n[{dropped} earlier step(s) omitted]"
            return [*lead, _with_note(first, note), *(m for t in kept for m in t)]
        last = rest[-1]
        note = f"\n\n[{dropped} step(s) so far]\nLast observation: {last.get('content') or ''}"
        return [*lead, _with_note(first, note)]

    steps = sum(1 for m in rest if m.get("role") == "assistant")
    for k in range(1, len(turns) + 1):
        kept = turns[k:]
        dropped = steps - sum(1 for t in kept for m in t if m.get("role") == "assistant")
        out = chat(kept, max(dropped, 1))
        if fits(out) or k == len(turns):
            return out, max(dropped, 1)
    return messages, 0  # pragma: no cover - the loop always returns


def _error_message(payload: Any) -> str:
    if isinstance(payload, dict):
        err = payload.get("error")
        if isinstance(err, dict):
            return str(err.get("message", ""))
        if isinstance(err, str):
            return err
        if "detail" in payload:
            return str(payload["detail"])
    return str(payload)[:300] if payload else ""


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
