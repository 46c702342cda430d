"""An agent over any OpenAI-compatible chat-completions server (stdlib HTTP only).

Works with vLLM, SGLang, llama.cpp's server, ``stepgym serve`` and hosted APIs. The
server's ``tool_calls`` are mapped to the env's canonical action format
(``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``).
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from stepgym.actions import format_tool_call
from stepgym.agents.base import AgentError, BaseAgent, ToolSpec, chat_messages, parse_tools
from stepgym.errors import InvalidArgument, InvalidConfig

__all__ = ["OpenAIAgent", "APIError", "tool_calls_to_action", "RETRY_STATUS"]

#: HTTP statuses worth retrying (rate limits, overload, transient server faults).
RETRY_STATUS: frozenset[int] = frozenset({408, 409, 429, 500, 502, 503, 504})


class APIError(AgentError):
    """The server answered with an error that retrying will not fix (or retries ran out)."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


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
        max_tokens: completion tokens at most per action (None: the server's default).
        system_prompt: optional system message put first in every chat.
        history: keep each episode's chat (else send the latest observation only).
        tools: ``"auto"`` sends the tools listed in the observation as OpenAI ``tools`` and
            maps ``tool_calls`` back to ``<tool_call>`` actions (if the server rejects
            ``tools``, the agent retries once without and stops sending them);
            ``"none"`` never sends them.
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
        max_tokens: int | None = None,
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

    def complete(self, messages: list[dict[str, Any]], tools: list[ToolSpec] | None = None) -> tuple[str, int]:
        """One chat completion: ``(action text, completion tokens)``."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "top_p": self.top_p,
        }
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.seed is not None:
            body["seed"] = self.seed
        if tools and self.tools_mode == "auto":
            body["tools"] = [t.openai_schema() for t in tools]
        try:
            out = self._post("/chat/completions", body)
        except APIError as exc:
            if "tools" in body and exc.status in (400, 422):
                # Servers started without tool support reject `tools`; the tools are in the text anyway.
                self.tools_mode = "none"
                body.pop("tools")
                out = self._post("/chat/completions", body)
            else:
                raise
        choices = out.get("choices") if isinstance(out, dict) else None
        if not choices:
            raise APIError(f"the server's answer has no choices: {str(out)[:300]}")
        message = choices[0].get("message") or {}
        action = tool_calls_to_action(message)
        usage = out.get("usage") or {}
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
        if len(jobs) == 1 or self.concurrency == 1:
            results = [self.complete(m, t) for m, t in jobs]
        else:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(jobs))) as pool:
                results = list(pool.map(lambda job: self.complete(*job), jobs))
        self.last_token_counts = [n for _, n in results]
        actions = [a for a, _ in results]
        if self.history:
            for slot, info, action in zip(slots, infos, actions, strict=True):
                if "messages" not in info:
                    self.memory[slot].append({"role": "assistant", "content": action})
        return actions

    def list_models(self) -> list[str]:
        """Model ids the server offers (``GET /v1/models``)."""
        req = urllib.request.Request(
            self.base_url + "/models", headers=({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                data = json.loads(resp.read().decode("utf-8"))
        except (TimeoutError, urllib.error.URLError, ValueError) as exc:
            raise APIError(f"could not list models at {self.base_url}/models: {exc}") from None
        return [m.get("id", "") for m in data.get("data", [])]


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
