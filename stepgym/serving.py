"""An OpenAI-compatible chat-completions server over a local model (FastAPI + uvicorn).

``stepgym serve --model SPEC`` runs it; :func:`create_app` builds the ASGI app for any
backend, and :func:`serve_in_thread` runs one in the background (tests, notebooks).

Endpoints: ``POST /v1/chat/completions`` (``stream`` supported as server-sent events),
``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /health``. Bad requests get the
status codes and error bodies of the OpenAI API:
``{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}``.

When the request carries ``tools`` and the model writes a Hermes
``<tool_call>{...}</tool_call>``, the answer has ``tool_calls`` (as vLLM's hermes parser
does), so tool-calling clients work unchanged.

Streaming (``"stream": true``) sends the chunks of the OpenAI spec (see
:func:`stream_chunks`): tool-call deltas carry their ``index``, the first one of each
call its ``id``, ``type`` and ``function.name``; the last chunk of a choice has the
``finish_reason`` (``tool_calls``, ``stop`` or ``length``); ``stream_options:
{"include_usage": true}`` adds a usage chunk; ``data: [DONE]`` ends the stream. The
completion is generated in full first, then streamed, so the first chunk arrives when
the generation is done.

Concurrency: uvicorn's event loop accepts connections and answers ``/health`` and
``/v1/models`` at once; each chat completion runs its model call in a worker thread
(Starlette's threadpool, 40 threads), so a slow generation never blocks accepting
other requests. :class:`TransformersBackend` runs one ``generate`` at a time and
batches the requests queued meanwhile; :class:`CallableBackend` calls its function
concurrently from the worker threads.
"""

# No `from __future__ import annotations` here: FastAPI reads the route annotations
# (Request) at runtime, and they are imported inside create_app.
import itertools
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from stepgym.errors import DependencyNotInstalled

__all__ = [
    "ChatBackend",
    "TransformersBackend",
    "CallableBackend",
    "RequestError",
    "create_app",
    "serve_in_thread",
    "ServerHandle",
    "backend_from_spec",
    "stream_chunks",
]

_SERVE_PIP = 'pip install "stepgym[serve]"'
_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
#: Most completions per request (``n``); keeps one request from monopolising the model.
MAX_N = 8


class RequestError(Exception):
    """A request the server refuses, with the OpenAI error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(slots=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    #: seconds the request waited for the model, and how many requests shared its generate call
    wait_s: float = 0.0
    batch: int = 1


class ChatBackend(Protocol):
    """What the server needs from a model: chat in, completions out."""

    def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None,
        max_tokens: int | None,
        temperature: float | None,
        top_p: float | None,
        stop: list[str] | None,
        n: int,
    ) -> list[Completion]: ...


@dataclass(slots=True)
class _Job:
    """One request waiting in :class:`TransformersBackend`'s queue."""

    prompt: str
    key: tuple[Any, ...]  # generation settings; only jobs with equal keys share a generate call
    queued_at: float
    result: list[Completion] | None = None
    error: BaseException | None = None


class TransformersBackend:
    """Serves a :class:`~stepgym.agents.TransformersAgent` (a local model or checkpoint).

    Requests arrive on many threads (the server runs each one in a worker thread), but
    only one ``generate`` runs at a time: it uses the CPU/GPU fully, and the tokenizer's
    padding settings are not shared across threads. Requests that wait meanwhile are
    batched: the next ``generate`` takes every queued request with the same settings
    (``max_tokens``, ``temperature``, ``top_p``, ``stop``, ``n``), up to ``max_batch``
    prompts, oldest first. Eight eval episodes in parallel thus cost about one batched
    generation per step instead of eight in a row.

    The agent's ``stop`` strings (a policy folder's trained ones) end every completion
    and stay in its text, so a policy stops where it learned to; a request's ``stop``
    strings are added to them and, as in the OpenAI API, cut from the text.

    Args:
        agent: the model agent whose ``render`` and ``generate`` answer requests.
        max_batch: prompts per ``generate`` at most (default: the agent's ``batch_size``).
        gather_s: how long an idle model waits for more requests before it starts a batch
            (requests sent at once arrive milliseconds apart; default 0.02).
    """

    def __init__(self, agent: Any, max_batch: int | None = None, gather_s: float = 0.02) -> None:
        self.agent = agent
        self.max_batch = max(1, int(max_batch or getattr(agent, "batch_size", 8) or 8))
        self.gather_s = max(0.0, float(gather_s)) if self.max_batch > 1 else 0.0
        self._cond = threading.Condition()
        self._queue: list[_Job] = []
        self._busy = False
        cfg = getattr(agent.model, "config", None)
        self.context = int(getattr(cfg, "max_position_embeddings", 0) or 0) or None

    def complete(self, messages, *, tools, max_tokens, temperature, top_p, stop, n) -> list[Completion]:
        prompt = self.agent.render(messages, tools=tools)
        max_new = max_tokens or self.agent.max_new_tokens
        key = (max_new, temperature, top_p, tuple(stop) if stop is not None else None, n)
        job = _Job(prompt, key, time.perf_counter())
        with self._cond:
            self._queue.append(job)
            self._cond.notify_all()
        # Whichever waiting thread finds the model idle runs the next batch (its own job
        # may or may not be in it), then hands over; each thread returns once its job is done.
        while True:
            with self._cond:
                while self._busy and job.result is None and job.error is None:
                    self._cond.wait()
                if job.result is not None or job.error is not None:
                    break
                self._busy = True
                # Requests sent together (an eval's parallel episodes) arrive a few ms apart:
                # wait that long for them, so the first does not run alone.
                deadline = time.perf_counter() + self.gather_s
                while len(self._queue) < self.max_batch and (left := deadline - time.perf_counter()) > 0:
                    self._cond.wait(left)
                head = self._queue[0].key
                batch = [j for j in self._queue if j.key == head][: self.max_batch]
                for j in batch:
                    self._queue.remove(j)
            try:
                self._run(batch)
            except BaseException as exc:  # noqa: BLE001 - every request of the batch gets the error
                for j in batch:
                    if j.result is None:
                        j.error = exc
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
        if job.error is not None:
            raise job.error
        if job.result is None:  # pragma: no cover - a batch run sets a result or an error on every job
            raise RuntimeError("internal error: a generation job finished with neither a result nor an error")
        return job.result

    def _run(self, batch: list[_Job]) -> None:
        """Generate for ``batch`` (equal settings) in one call; runs with the model to itself."""
        max_new, temperature, top_p, stop, n = batch[0].key
        started = time.perf_counter()
        fits, counts = [], []
        for j in batch:
            n_prompt = len(self.agent.tokenizer(j.prompt, add_special_tokens=False)["input_ids"])
            if self.context is not None and n_prompt + max_new > self.context:
                j.error = RequestError(
                    400,
                    f"This model's maximum context length is {self.context} tokens. However, you requested "
                    f"{n_prompt + max_new} tokens ({n_prompt} in the messages, {max_new} in the completion). "
                    "Please reduce the length of the messages or completion.",
                    param="messages",
                    code="context_length_exceeded",
                )
            else:
                fits.append(j)
                counts.append(n_prompt)
        if not fits:
            return
        # The agent's own stop strings (a policy folder's trained ones, e.g. "</tool_call>",
        # kept in the text) apply with the request's (cut from the text, as OpenAI does).
        own = tuple(getattr(self.agent, "stop", ()) or ())
        gens = self.agent.generate(
            [j.prompt for j in fits],
            max_new_tokens=max_new,
            temperature=temperature,
            top_p=top_p,
            stop=own + tuple(s for s in stop or () if s not in own),
            num_return_sequences=n,
        )
        for k, j in enumerate(fits):
            out = []
            for g in gens[k * n : (k + 1) * n]:
                text = g.text
                for s in stop or ():
                    if s and text.endswith(s):
                        text = text[: -len(s)]  # OpenAI semantics: the stop sequence is not returned
                        break
                out.append(
                    Completion(
                        text,
                        g.prompt_tokens,
                        g.completion_tokens,
                        g.finish_reason,
                        wait_s=started - j.queued_at,
                        batch=len(fits),
                    )
                )
            j.result = out


class CallableBackend:
    """Serves any function ``fn(messages) -> str`` (a rule-based policy, another agent...).

    Example:
        >>> backend = CallableBackend(lambda messages: "hello")
        >>> backend.complete([{"role": "user", "content": "hi"}], tools=None, max_tokens=None,
        ...                  temperature=None, top_p=None, stop=None, n=1)[0].text
        'hello'
    """

    def __init__(self, fn: Callable[[list[dict[str, Any]]], str]) -> None:
        self.fn = fn

    def complete(self, messages, *, tools, max_tokens, temperature, top_p, stop, n) -> list[Completion]:
        prompt_chars = sum(len(str(m.get("content") or "")) for m in messages)
        out = []
        for _ in range(n):
            text = str(self.fn(messages))
            finish = "stop"
            for s in stop or ():
                if s and s in text:
                    text = text[: text.index(s)]  # OpenAI semantics: the stop sequence is not returned
            out.append(Completion(text, max(1, prompt_chars // 4), max(1, len(text) // 4), finish))
        return out


def backend_from_spec(spec: str, **settings: Any) -> TransformersBackend:
    """A backend for ``stepgym serve --model SPEC``: ``hf:X``, ``checkpoint:DIR``, or a bare model spec.

    Bare specs (``tiny``, ``smollm2-135m``, an HF id, a path) mean ``hf:SPEC``.
    """
    from stepgym.agents import CheckpointAgent, TransformersAgent

    kind, sep, rest = spec.partition(":")
    if sep and kind == "checkpoint":
        agent = CheckpointAgent(rest, **settings)
    elif sep and kind == "hf":
        agent = TransformersAgent(rest, **settings)
    else:
        agent = TransformersAgent(spec, **settings)
    return TransformersBackend(agent)


# -- request parsing ------------------------------------------------------------------------------


def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise RequestError(
                    400,
                    f"Invalid content part at {where}[{j}]: only text parts "
                    '({"type": "text", "text": ...}) are supported by this model.',
                    param=f"{where}[{j}]",
                    code="invalid_value",
                )
            parts.append(part["text"])
        return "".join(parts)
    raise RequestError(
        400,
        f"Invalid type for '{where}': expected a string or an array of content parts, "
        f"but got {type(content).__name__} instead.",
        param=where,
        code="invalid_type",
    )


def _normalise_messages(raw: Any) -> list[dict[str, str]]:
    """Validate chat messages and flatten them to role/content text the chat template understands."""
    if raw is None:
        raise RequestError(
            400, "Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter"
        )
    if not isinstance(raw, list):
        raise RequestError(
            400,
            f"Invalid type for 'messages': expected an array, but got {type(raw).__name__} instead.",
            param="messages",
            code="invalid_type",
        )
    if not raw:
        raise RequestError(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            param="messages",
            code="empty_array",
        )
    out: list[dict[str, str]] = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise RequestError(
                400,
                f"Invalid type for '{where}': expected an object, but got {type(m).__name__} instead.",
                param=where,
                code="invalid_type",
            )
        role = m.get("role")
        if role is None:
            raise RequestError(
                400,
                f"Missing required parameter: '{where}.role'.",
                param=f"{where}.role",
                code="missing_required_parameter",
            )
        if role not in _ROLES:
            raise RequestError(
                400,
                f"Invalid value: {json.dumps(role)}. Supported values are: "
                + ", ".join(f"'{r}'" for r in _ROLES)
                + ".",
                param=f"{where}.role",
                code="invalid_value",
            )
        content = _text(m.get("content"), f"{where}.content")
        if role == "assistant" and m.get("tool_calls"):
            # Earlier tool calls go back into the text in the Hermes format the model writes.
            calls = []
            for c in m["tool_calls"] if isinstance(m["tool_calls"], list) else []:
                fn = (c or {}).get("function") or {}
                args = fn.get("arguments", {})
                if isinstance(args, str):
                    try:
                        args = json.loads(args) if args.strip() else {}
                    except ValueError:
                        pass
                calls.append("<tool_call>" + json.dumps({"name": fn.get("name"), "arguments": args}) + "</tool_call>")
            content = (content + "\n" if content else "") + "\n".join(calls)
        elif role in ("tool", "function"):
            content = f"<tool_response>\n{content}\n</tool_response>"
            role = "user"
        elif role == "developer":
            role = "system"
        out.append({"role": role, "content": content})
    return out


def _number(body: dict[str, Any], name: str, lo: float, hi: float, integer: bool = False) -> Any:
    v = body.get(name)
    if v is None:
        return None
    ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok_type:
        want = "an integer" if integer else "a number"
        raise RequestError(
            400,
            f"Invalid type for '{name}': expected {want}, but got {type(v).__name__} instead.",
            param=name,
            code="invalid_type",
        )
    kind = "integer" if integer else "decimal"
    if v < lo:
        raise RequestError(
            400,
            f"Invalid '{name}': {kind} below minimum value. Expected a value >= {lo:g}, but got {v} instead.",
            param=name,
            code=f"{kind}_below_min_value",
        )
    if v > hi:
        raise RequestError(
            400,
            f"Invalid '{name}': {kind} above maximum value. Expected a value <= {hi:g}, but got {v} instead.",
            param=name,
            code=f"{kind}_above_max_value",
        )
    return v


def _tool_message(text: str) -> dict[str, Any] | None:
    """``content`` + ``tool_calls`` when the text holds Hermes tool calls, else None."""
    if "<tool_call>" not in text:
        return None
    import re

    calls = []
    for body in re.findall(r"<tool_call>(.*?)</tool_call>", text, flags=re.DOTALL):
        try:
            obj = json.loads(body.strip())
        except ValueError:
            return None  # malformed: hand the raw text back so the client sees what the model wrote
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return None
        args = obj.get("arguments", {})
        calls.append(
            {
                "id": "call_" + secrets.token_hex(12),
                "type": "function",
                "function": {"name": obj["name"], "arguments": json.dumps(args, ensure_ascii=False)},
            }
        )
    if not calls:
        return None
    content = text[: text.index("<tool_call>")].strip()
    return {"role": "assistant", "content": content or None, "tool_calls": calls}


def stream_chunks(
    cid: str, created: int, model: str, choices: list[dict[str, Any]], usage: dict[str, int] | None = None
) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of finished ``choices``, as the OpenAI API streams them.

    Per choice: a first delta with ``role`` (``content`` is ``""``, or ``None`` when the
    choice only calls tools), then the text, then for each tool call a delta with its
    ``index``, ``id``, ``type`` and ``function.name`` (``arguments: ""``) followed by one
    with the arguments, then an empty delta with the ``finish_reason``. With ``usage``
    (``stream_options.include_usage``), every chunk has ``usage: null`` and one last
    chunk with no choices carries the counts. The caller sends ``data: [DONE]`` after.

    Example:
        >>> msg = {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
        ...        "function": {"name": "lookup", "arguments": "{}"}}]}
        >>> chunks = list(stream_chunks("c", 0, "m", [{"index": 0, "message": msg, "finish_reason": "tool_calls"}]))
        >>> [c["choices"][0]["delta"] for c in chunks]  # doctest: +NORMALIZE_WHITESPACE
        [{'role': 'assistant', 'content': None},
         {'tool_calls': [{'index': 0, 'id': 'call_1', 'type': 'function',
                          'function': {'name': 'lookup', 'arguments': ''}}]},
         {'tool_calls': [{'index': 0, 'function': {'arguments': '{}'}}]},
         {}]
        >>> chunks[-1]["choices"][0]["finish_reason"]
        'tool_calls'
    """
    base: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
    if usage is not None:
        base["usage"] = None

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return base | {"choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    for ch in choices:
        i, msg = ch["index"], ch["message"]
        calls = msg.get("tool_calls") or []
        text = msg.get("content") or ""
        yield chunk(i, {"role": "assistant", "content": "" if text or not calls else None})
        if text:
            yield chunk(i, {"content": text})
        for k, call in enumerate(calls):
            fn = call["function"]
            head = {"index": k, "id": call["id"], "type": "function", "function": {"name": fn["name"], "arguments": ""}}
            yield chunk(i, {"tool_calls": [head]})
            if fn.get("arguments"):
                yield chunk(i, {"tool_calls": [{"index": k, "function": {"arguments": fn["arguments"]}}]})
        yield chunk(i, {}, ch["finish_reason"])
    if usage is not None:
        yield base | {"choices": [], "usage": usage}


# -- the app -------------------------------------------------------------------------------------


class _AccessLog:
    """ASGI middleware: one line per request (``/health`` excepted) to ``log``, after it is answered."""

    def __init__(self, app: Any, log: Callable[[str], None]) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") == "/health":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def send_status(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            state = scope.get("state") or {}
            line = f"{scope.get('method', '?')} {scope.get('path', '?')} {status[0]} {time.perf_counter() - t0:.2f}s"
            if state.get("stepgym_log"):
                line += "  " + state["stepgym_log"]
            try:
                self.log(line)
            except Exception:  # noqa: BLE001 - a broken log must not fail the request
                pass


def create_app(
    backend: ChatBackend,
    model_name: str = "stepgym",
    *,
    api_key: str | None = None,
    log: Callable[[str], None] | None = None,
) -> Any:
    """The FastAPI app serving ``backend`` under the model id ``model_name``.

    Args:
        backend: a :class:`TransformersBackend`, :class:`CallableBackend` or anything with
            the :class:`ChatBackend` ``complete`` method.
        model_name: the id clients put in ``"model"`` (others get HTTP 404 ``model_not_found``).
        api_key: when set, requests need ``Authorization: Bearer <api_key>`` (else HTTP 401).
        log: called with one line per answered request (method, path, status, seconds and,
            for chat completions, tokens, finish reasons, queue wait and batch size);
            ``None`` logs nothing. ``/health`` is never logged.

    Example:
        >>> app = create_app(CallableBackend(lambda msgs: "hello"), "echo")
        >>> handle = serve_in_thread(app)  # doctest: +SKIP
    """
    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse, StreamingResponse
        from starlette.exceptions import HTTPException as StarletteHTTPException
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise DependencyNotInstalled("stepgym serve", _SERVE_PIP) from exc

    from starlette.concurrency import run_in_threadpool

    app = FastAPI(title="stepgym OpenAI-compatible server", docs_url=None, redoc_url=None)
    if log is not None:
        app.add_middleware(_AccessLog, log=log)
    created = int(time.time())

    def error(exc: RequestError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestError)
    async def _on_request_error(request: Request, exc: RequestError) -> JSONResponse:
        request.state.stepgym_log = f"{exc.code or exc.type}: {exc.message[:160]}"
        return error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            msg = f"Invalid URL ({request.method} {request.url.path})"
        elif exc.status_code == 405:
            msg = f"Method {request.method} is not allowed for {request.url.path}"
        else:
            msg = str(exc.detail)
        return error(RequestError(exc.status_code, msg, code=None))

    @app.exception_handler(RequestValidationError)
    async def _on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(RequestError(400, str(exc.errors()[:1])))

    @app.exception_handler(Exception)
    async def _on_crash(request: Request, exc: Exception) -> JSONResponse:
        return error(
            RequestError(
                500,
                f"The server had an error while processing your request: {type(exc).__name__}: {exc}",
                type="server_error",
            )
        )

    def check_auth(request: Request) -> None:
        if api_key is None:
            return
        got = request.headers.get("authorization", "")
        if not got.startswith("Bearer ") or not secrets.compare_digest(got[7:].strip(), api_key):
            raise RequestError(
                401, "Incorrect API key provided. Pass it as 'Authorization: Bearer <key>'.", code="invalid_api_key"
            )

    context = getattr(backend, "context", None)  # callable backends have no context window

    def model_card() -> dict[str, Any]:
        card = {"id": model_name, "object": "model", "created": created, "owned_by": "stepgym"}
        if context:
            card["max_model_len"] = context  # vLLM's name: clients fit their prompts before the first 400
        return card

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_auth(request)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str, request: Request) -> dict[str, Any]:
        check_auth(request)
        if model_id != model_name:
            raise RequestError(404, f"The model '{model_id}' does not exist", param="model", code="model_not_found")
        return model_card()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        check_auth(request)
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            raise RequestError(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means you "
                "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)",
            ) from None
        if not isinstance(body, dict):
            raise RequestError(400, f"Invalid request body: expected a JSON object, got {type(body).__name__}.")
        name = body.get("model")
        if name is None:
            raise RequestError(
                400, "you must provide a model parameter", param="model", code="missing_required_parameter"
            )
        if name != model_name:
            raise RequestError(
                404,
                f"The model `{name}` does not exist or you do not have access to it. "
                f"This server serves `{model_name}`.",
                param="model",
                code="model_not_found",
            )
        messages = _normalise_messages(body.get("messages"))
        temperature = _number(body, "temperature", 0, 2)
        top_p = _number(body, "top_p", 0, 1)
        n = _number(body, "n", 1, MAX_N, integer=True) or 1
        max_tokens = _number(body, "max_completion_tokens", 1, 1 << 20, integer=True)
        if max_tokens is None:
            max_tokens = _number(body, "max_tokens", 1, 1 << 20, integer=True)
        stop = body.get("stop")
        if isinstance(stop, str):
            stop = [stop]
        if stop is not None and (
            not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > 4
        ):
            raise RequestError(
                400,
                "Invalid 'stop': expected a string or an array of at most 4 strings.",
                param="stop",
                code="invalid_value",
            )
        tools = body.get("tools")
        if tools is not None:
            if not isinstance(tools, list) or not all(
                isinstance(t, dict)
                and t.get("type") == "function"
                and isinstance(t.get("function"), dict)
                and isinstance(t["function"].get("name"), str)
                for t in tools
            ):
                raise RequestError(
                    400,
                    'Invalid \'tools\': expected an array of {"type": "function", '
                    '"function": {"name": ..., "parameters": {...}}} objects.',
                    param="tools",
                    code="invalid_value",
                )
        if body.get("tool_choice") not in (None, "auto", "none"):
            raise RequestError(
                400,
                "Invalid 'tool_choice': this server supports 'auto' and 'none'.",
                param="tool_choice",
                code="invalid_value",
            )
        use_tools = bool(tools) and body.get("tool_choice") != "none"
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise RequestError(
                400,
                f"Invalid type for 'stream': expected a boolean, but got {type(stream).__name__} instead.",
                param="stream",
                code="invalid_type",
            )

        comps = await run_in_threadpool(
            backend.complete,
            messages,
            tools=tools if use_tools else None,  # {"type": "function", "function": {...}}, as chat templates expect
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            stop=stop,
            n=n,
        )
        cid = "chatcmpl-" + secrets.token_hex(12)
        now = int(time.time())
        choices = []
        for i, c in enumerate(comps):
            msg = _tool_message(c.text) if use_tools else None
            finish = "tool_calls" if msg else c.finish_reason
            choices.append(
                {
                    "index": i,
                    "message": msg or {"role": "assistant", "content": c.text},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            )
        prompt_tokens = comps[0].prompt_tokens if comps else 0
        completion_tokens = sum(c.completion_tokens for c in comps)
        request.state.stepgym_log = (
            f"tokens {prompt_tokens}+{completion_tokens}"
            f"  finish {','.join(ch['finish_reason'] for ch in choices)}"
            + (f"  n {n}" if n > 1 else "")
            + (f"  waited {comps[0].wait_s:.2f}s  batch {comps[0].batch}" if comps else "")
            + ("  stream" if stream else "")
        )
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if not stream:
            return {
                "id": cid,
                "object": "chat.completion",
                "created": now,
                "model": model_name,
                "choices": choices,
                "usage": usage,
            }

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        chunks = stream_chunks(cid, now, model_name, choices, usage if include_usage else None)
        events = ("data: " + json.dumps(c, ensure_ascii=False) + "\n\n" for c in chunks)
        return StreamingResponse(
            itertools.chain(events, ["data: [DONE]\n\n"]),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    return app


# -- running it -----------------------------------------------------------------------------------


@dataclass
class ServerHandle:
    """A server running in a background thread; ``stop()`` shuts it down."""

    server: Any
    thread: threading.Thread
    host: str
    port: int

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``, what OpenAI clients take as base URL."""
        return f"http://{self.host}:{self.port}/v1"

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0, timeout: float = 20.0) -> ServerHandle:
    """Run ``app`` with uvicorn in a daemon thread; ``port=0`` picks a free port.

    Example:
        >>> app = create_app(CallableBackend(lambda msgs: "hi"), "echo")
        >>> with serve_in_thread(app) as server:  # doctest: +SKIP
        ...     print(server.base_url)
    """
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover
        raise DependencyNotInstalled("stepgym serve", _SERVE_PIP) from exc
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"stepgym-serve-{port}")
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the server on {host}:{port} did not start within {timeout:.0f}s")
        time.sleep(0.02)
    return ServerHandle(server, thread, host, port)
