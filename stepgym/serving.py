"""An OpenAI-compatible chat-completions and completions server over a local model (FastAPI + uvicorn).

``stepgym serve --model SPEC`` runs it; :func:`create_app` builds the ASGI app for any
backend, and :func:`serve_in_thread` runs one in the background (tests, notebooks).

Endpoints: ``POST /v1/chat/completions`` (``stream`` supported as server-sent events),
``POST /v1/completions``, ``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /health``, and
the weight updates below. Bad requests get the
status codes and error bodies of the OpenAI API:
``{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}``.

When the request carries ``tools`` and the model writes a Hermes
``<tool_call>{...}</tool_call>``, the answer has ``tool_calls`` (as vLLM's hermes parser
does), so tool-calling clients work unchanged.

Streaming (``"stream": true``) sends the chunks of the OpenAI spec (see
:func:`stream_chunks`) as the tokens are produced (model backends, ``n`` = 1): each chunk's
``content`` delta is the text the new tokens add (a token that ends inside a multi-byte
character, or text that may still turn into a requested ``stop`` string, waits for the
next one). Tool calls can only be parsed once the completion is complete: with ``tools``,
content streams until a ``<tool_call>`` starts; the calls then come at the end as
tool-call deltas (``index``; the first delta of each call with its ``id``, ``type`` and
``function.name``), and text that turns out not to be a well-formed call is sent as
content then. The last chunk of a choice has the ``finish_reason`` (``tool_calls``,
``stop`` or ``length``); ``stream_options: {"include_usage": true}`` adds a usage chunk;
``data: [DONE]`` ends the stream. Backends without token streaming (``CallableBackend``)
and ``n`` > 1 send the finished completion in the same chunks.

Token in, token out (``POST /v1/completions``, as vLLM serves it): ``prompt`` is a string,
a list of token ids, or a list of either; with ``"logprobs": k`` each choice's
``logprobs`` hold the sampled tokens' log-probs under ``softmax(logits / temperature)``
(the quantity the StepPO trainer computes, see :mod:`stepgym.token_generation`), with
``"return_tokens_as_token_ids": true`` its tokens read ``"token_id:123"``, and with
``"return_token_ids": true`` each choice carries ``token_ids``: the exact ids, never
re-tokenised. Weights change at runtime through vLLM's ``POST /v1/load_lora_adapter``
(``{"lora_name", "lora_path"}``: the adapter is merged into a copy of the base weights and
served under its own model id) and ``POST /v1/unload_lora_adapter``, and SGLang's ``POST
/update_weights_from_disk`` (``{"model_path"}``: a folder written by ``save_pretrained``
replaces the base weights); both wait for the generation in progress to end.

Concurrency: uvicorn's event loop accepts connections and answers ``/health`` and
``/v1/models`` at once; each chat completion runs its model call in a worker thread
(Starlette's threadpool, 40 threads), so a slow generation never blocks accepting
other requests. :class:`TransformersBackend` runs one ``generate`` at a time and
batches the requests queued meanwhile; :class:`CallableBackend` calls its function
concurrently from the worker threads.
"""

# No `from __future__ import annotations` here: FastAPI reads the route annotations
# (Request) at runtime, and they are imported inside create_app.
import asyncio
import contextlib
import itertools
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
    #: the exact generated ids, their log-probs, the top log-probs asked for, and vLLM's stop_reason
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    stop_reason: str | int | None = None


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
    """One request waiting in :class:`TransformersBackend`'s queue: its rows, for one served model."""

    requests: list[Any]  # TokenRequest
    model: str  # "" = the base model, else a LoRA adapter's name
    queued_at: float
    result: list[Any] | None = None  # TokenCompletion
    error: BaseException | None = None
    started_at: float = 0.0
    batch: int = 1


class TransformersBackend:
    """Serves a :class:`~stepgym.agents.TransformersAgent` (a local model or checkpoint).

    Requests arrive on many threads (the server runs each one in a worker thread), but
    only one generation runs at a time: it uses the CPU/GPU fully. Requests that wait
    meanwhile are batched: the next generation takes every queued request for the same
    model (the base model or one LoRA adapter), up to ``max_batch`` requests, oldest first;
    each keeps its own settings (:func:`~stepgym.token_generation.generate_tokens`). Eight
    eval episodes in parallel thus cost about one batched generation per step instead of
    eight in a row.

    The agent's ``stop`` strings (a policy folder's trained ones) end every chat completion
    and stay in its text, so a policy stops where it learned to; a request's ``stop``
    strings are added to them and, as in the OpenAI API, cut from the text. ``/v1/completions``
    uses the request's ``stop`` strings only, as vLLM does.

    Args:
        agent: the model agent whose ``render``, model and tokenizer answer requests.
        max_batch: requests per generation at most (default: the agent's ``batch_size``).
        gather_s: how long an idle model waits for more requests before it starts a batch
            (requests sent at once arrive milliseconds apart; default 0.02).
    """

    #: content is streamed token by token (see :func:`create_app`)
    streams_tokens = True

    def __init__(self, agent: Any, max_batch: int | None = None, gather_s: float = 0.02) -> None:
        self.agent = agent
        self.max_batch = max(1, int(max_batch or getattr(agent, "batch_size", 8) or 8))
        self.gather_s = max(0.0, float(gather_s)) if self.max_batch > 1 else 0.0
        self._cond = threading.Condition()
        self._queue: list[_Job] = []
        self._busy = False
        #: LoRA adapters loaded at runtime: name -> a copy of the base model with the adapter merged in
        self.adapters: dict[str, Any] = {}
        cfg = getattr(agent.model, "config", None)
        self.context = int(getattr(cfg, "max_position_embeddings", 0) or 0) or None
        from stepgym.policy_folder import end_of_turn_ids

        self.eos_ids = end_of_turn_ids(agent.tokenizer, agent.model)

    @property
    def vocab_size(self) -> int:
        """Token ids a prompt may hold: ``0 .. vocab_size - 1``."""
        emb = self.agent.model.get_input_embeddings()
        return int(emb.weight.shape[0]) if emb is not None else len(self.agent.tokenizer)

    # -- chat ---------------------------------------------------------------------------------
    def complete(self, messages, *, tools, max_tokens, temperature, top_p, stop, n, seed=None,
                 on_token=None) -> list[Completion]:
        """``n`` chat completions of ``messages``; ``on_token(id, logprob)`` sees each token as it comes (n=1)."""
        from stepgym.policy_folder import decode_response
        from stepgym.token_generation import TokenRequest

        agent, tok = self.agent, self.agent.tokenizer
        prompt = agent.render(messages, tools=tools)
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        max_new = max_tokens or agent.max_new_tokens
        self._check_context(len(ids), max_new, "messages")
        ids = ids[-agent.max_prompt_tokens:]  # the agent keeps the latest turns of a long chat
        # The agent's own stop strings (a policy folder's trained ones, e.g. "</tool_call>",
        # kept in the text) apply with the request's (cut from the text, as OpenAI does).
        own = tuple(getattr(agent, "stop", ()) or ())
        stops = own + tuple(s for s in stop or () if s and s not in own)
        temp = agent.temperature if temperature is None else float(temperature)
        gen = self._generator(seed)
        reqs = [TokenRequest(list(ids), max_new, temp, agent.top_p if top_p is None else float(top_p), stops,
                             generator=gen, on_token=on_token if n == 1 else None) for _ in range(n)]
        job = self._submit(reqs, "")
        out = []
        for r in job.result or []:
            d = decode_response(tok, r.token_ids, stop_strings=stops, eos_ids=self.eos_ids)
            text = d.text
            for s in stop or ():
                if s and text.endswith(s):
                    text = text[: -len(s)]  # OpenAI semantics: the stop sequence is not returned
                    break
            finish = "length" if d.stop_reason == "length" else "stop"
            out.append(Completion(text, len(ids), d.tokens, finish, wait_s=job.started_at - job.queued_at,
                                  batch=job.batch, token_ids=r.token_ids, logprobs=r.logprobs))
        return out

    # -- token in, token out ----------------------------------------------------------------------
    def complete_tokens(self, prompts: list[list[int]], *, model: str = "", max_tokens: int = 16,
                        temperature: float = 1.0, top_p: float = 1.0, stop: list[str] | None = None,
                        stop_token_ids: list[int] | None = None, n: int = 1, seed: int | None = None,
                        top_logprobs: int = 0, skip_special_tokens: bool = True,
                        include_stop_str_in_output: bool = False) -> list[Completion]:
        """``n`` completions of each token-id prompt (prompt-major), as ``/v1/completions`` answers."""
        from stepgym.token_generation import TokenRequest

        tok = self.agent.tokenizer
        for p in prompts:
            self._check_context(len(p), max_tokens, "prompt")
        gen = self._generator(seed)
        stops = tuple(s for s in stop or () if s)
        reqs = [TokenRequest(list(p), max_tokens, temperature, top_p, stops, tuple(stop_token_ids or ()),
                             generator=gen, top_logprobs=top_logprobs, skip_special_tokens=skip_special_tokens)
                for p in prompts for _ in range(n)]
        job = self._submit(reqs, model)
        out = []
        for req, r in zip(reqs, job.result or []):
            text = tok.decode(r.token_ids, skip_special_tokens=skip_special_tokens)
            if isinstance(r.stop_reason, str) and r.stop_reason in text:  # vLLM: the text ends before it
                cut = text.index(r.stop_reason)
                text = text[: cut + (len(r.stop_reason) if include_stop_str_in_output else 0)]
            out.append(Completion(text, len(req.prompt_ids), len(r.token_ids), r.finish_reason,
                                  wait_s=job.started_at - job.queued_at, batch=job.batch, token_ids=r.token_ids,
                                  logprobs=r.logprobs, top_logprobs=r.top_logprobs, stop_reason=r.stop_reason))
        return out

    def _check_context(self, n_prompt: int, max_new: int, param: str) -> None:
        if self.context is not None and n_prompt + max_new > self.context:
            where = "in the messages" if param == "messages" else "in the prompt"
            raise RequestError(
                400,
                f"This model's maximum context length is {self.context} tokens. However, you requested "
                f"{n_prompt + max_new} tokens ({n_prompt} {where}, {max_new} in the completion). "
                f"Please reduce the length of the {param} or completion.",
                param=param,
                code="context_length_exceeded",
            )

    @staticmethod
    def _generator(seed: int | None) -> Any:
        if seed is None:
            return None
        import torch

        return torch.Generator(device="cpu").manual_seed(int(seed))

    # -- the queue ----------------------------------------------------------------------------------
    def _submit(self, requests: list[Any], model: str) -> _Job:
        """Queue one request's rows; returns its job once a generation has answered it."""
        job = _Job(requests, model, time.perf_counter())
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
                head = self._queue[0].model
                batch = [j for j in self._queue if j.model == head][: self.max_batch]
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
        return job

    def _run(self, batch: list[_Job]) -> None:
        """Generate every row of ``batch`` (one served model) in one call; runs with the model to itself."""
        from stepgym.token_generation import generate_tokens

        started = time.perf_counter()
        name = batch[0].model
        if name and name not in self.adapters:  # unloaded while the requests waited
            raise RequestError(404, f"The lora adapter '{name}' was unloaded.", param="model", code="model_not_found")
        model = self.adapters[name] if name else self.agent.model
        rows = [r for j in batch for r in j.requests]
        outs = generate_tokens(model, self.agent.tokenizer, rows, eos_ids=self.eos_ids)
        k = 0
        for j in batch:
            j.started_at, j.batch = started, len(batch)
            j.result = outs[k:k + len(j.requests)]
            k += len(j.requests)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """The model to itself: waits for the generation in progress, holds new ones back meanwhile."""
        with self._cond:
            while self._busy:
                self._cond.wait()
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    # -- weight updates ---------------------------------------------------------------------------
    def load_weights(self, path: str) -> None:
        """Replace the base model's weights by those of the model folder ``path`` (same architecture)."""
        import torch

        from stepgym.models import load_model

        folder = _existing_dir(path, "model_path")
        model = self.agent.model
        try:
            new, _ = load_model(folder, dtype=next(model.parameters()).dtype)
        except Exception as exc:  # noqa: BLE001 - any loading failure is the request's problem
            raise RequestError(400, f"Failed to load the weights in {folder!r}: {exc}", param="model_path") from exc
        state = new.state_dict()
        mine = model.state_dict()
        wrong = [k for k, v in state.items() if k in mine and tuple(v.shape) != tuple(mine[k].shape)]
        missing = sorted(set(mine) - set(state))
        if wrong or missing:
            raise RequestError(
                400,
                f"The weights in {folder!r} do not fit the served model (different shapes for {wrong[:3]}, "
                f"missing {missing[:3]}); serve that model instead, or write weights of the same architecture.",
                param="model_path",
            )
        with self._exclusive(), torch.no_grad():
            model.load_state_dict(state, strict=False)

    def load_adapter(self, name: str, path: str, replace: bool = False) -> None:
        """Serve the base model with the peft LoRA adapter in ``path`` merged in, under the model id ``name``."""
        import copy
        import os

        folder = _existing_dir(path, "lora_path")
        if not os.path.exists(os.path.join(folder, "adapter_config.json")):
            raise RequestError(400, f"No adapter_config.json in {folder!r}: write the adapter with peft's "
                                    "save_pretrained.", param="lora_path")
        if name in self.adapters and not replace:
            raise RequestError(400, f"The lora adapter '{name}' has already been loaded. Unload it first, or pass "
                                    '"load_inplace": true.', param="lora_name")
        try:
            from peft import PeftModel
        except ImportError as exc:
            raise RequestError(400, 'LoRA adapters need peft on the server: pip install "stepgym[lora]"',
                               param="lora_path") from exc
        try:
            merged = PeftModel.from_pretrained(copy.deepcopy(self.agent.model), folder).merge_and_unload()
        except Exception as exc:  # noqa: BLE001 - a bad adapter is the request's problem
            raise RequestError(400, f"Failed to load the LoRA adapter in {folder!r}: {exc}", param="lora_path") from exc
        merged.eval()
        with self._exclusive():
            self.adapters[name] = merged

    def unload_adapter(self, name: str) -> None:
        """Stop serving the adapter ``name``."""
        if name not in self.adapters:
            raise RequestError(404, f"The lora adapter '{name}' cannot be found.", param="lora_name",
                               code="not_found")
        with self._exclusive():
            del self.adapters[name]


def _existing_dir(path: Any, param: str) -> str:
    import os

    if not isinstance(path, str) or not path:
        raise RequestError(400, f"Missing required parameter: '{param}' (a folder on the server's disk).",
                           param=param, code="missing_required_parameter")
    if not os.path.isdir(path):
        raise RequestError(400, f"Invalid '{param}': {path!r} is not a folder on the server's disk.", param=param)
    return os.path.abspath(path)


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


async def _json_body(request: Any) -> dict[str, Any]:
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
    return body


def _streamable(text: str, held: int, use_tools: bool) -> str:
    """The part of a partial completion's text that can be sent now.

    Held back: a last character still being decoded (``\ufffd``), the last ``held``
    characters (they may become a requested stop string, which is cut), and, with tools,
    everything from a ``<tool_call>`` on (or a tail that may start one) plus the whitespace
    before it (a tool call's content is stripped).

    Example:
        >>> _streamable("Hi <tool_c", 0, True), _streamable("Hello", 2, False)
        ('Hi', 'Hel')
    """
    text = text.rstrip("\ufffd")
    if use_tools:
        start = text.find("<tool_call>")
        if start >= 0:
            text = text[:start]
        else:
            for k in range(min(len(text), len("<tool_call>") - 1), 0, -1):
                if "<tool_call>".startswith(text[-k:]):
                    text = text[:-k]
                    break
        text = text.rstrip()
    return text[: len(text) - held] if held else text


def _completion_request(body: dict[str, Any], backend: Any) -> dict[str, Any]:
    """Validate a ``/v1/completions`` body into :meth:`TransformersBackend.complete_tokens` arguments."""
    raw = body.get("prompt")
    if raw is None:
        raise RequestError(400, "Missing required parameter: 'prompt'.", param="prompt",
                           code="missing_required_parameter")
    vocab = backend.vocab_size
    tok = backend.agent.tokenizer
    bad = RequestError(400, "Invalid 'prompt': expected a string, an array of token ids, or an array of strings or "
                            "of token-id arrays.", param="prompt", code="invalid_type")

    def is_ids(x: Any) -> bool:
        return isinstance(x, list) and bool(x) and all(isinstance(t, int) and not isinstance(t, bool) for t in x)

    if isinstance(raw, str) or is_ids(raw):
        items = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(x, str) or is_ids(x) for x in raw):
        items = raw
    else:
        raise bad
    prompts = []
    for k, item in enumerate(items):
        ids = tok(item)["input_ids"] if isinstance(item, str) else list(item)  # a string: as vLLM tokenises it
        if not ids:
            raise RequestError(400, f"Invalid 'prompt[{k}]': the prompt is empty.", param="prompt",
                               code="invalid_value")
        out = [t for t in ids if not 0 <= t < vocab]
        if out:
            raise RequestError(400, f"Invalid 'prompt[{k}]': token id {out[0]} is out of vocabulary "
                                    f"(0..{vocab - 1}).", param="prompt", code="invalid_value")
        prompts.append(ids)
    for name in ("echo", "stream"):
        if body.get(name) not in (None, False):
            why = "streaming is served on /v1/chat/completions" if name == "stream" else "it is not supported"
            raise RequestError(400, f"Invalid '{name}': this server takes only false ({why}).", param=name,
                               code="invalid_value")
    for name in ("suffix", "logit_bias"):
        if body.get(name):
            raise RequestError(400, f"Invalid '{name}': not supported by this server.", param=name,
                               code="invalid_value")
    for name in ("presence_penalty", "frequency_penalty"):
        if body.get(name) not in (None, 0, 0.0):
            raise RequestError(400, f"Invalid '{name}': this server supports only 0.", param=name,
                               code="invalid_value")
    n = _number(body, "n", 1, MAX_N, integer=True) or 1
    if body.get("best_of") not in (None, n):
        raise RequestError(400, "Invalid 'best_of': this server supports only best_of = n.", param="best_of",
                           code="invalid_value")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)):
        raise RequestError(400, "Invalid 'stop': expected a string or an array of strings.", param="stop",
                           code="invalid_value")
    stop_ids = body.get("stop_token_ids")
    if stop_ids is not None and not (isinstance(stop_ids, list) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in stop_ids)):
        raise RequestError(400, "Invalid 'stop_token_ids': expected an array of token ids.", param="stop_token_ids",
                           code="invalid_type")
    logprobs = _number(body, "logprobs", 0, 20, integer=True)
    flags = {}
    for name, default in (("return_tokens_as_token_ids", False), ("return_token_ids", False),
                          ("skip_special_tokens", True), ("include_stop_str_in_output", False)):
        v = body.get(name, default)
        if not isinstance(v, bool):
            raise RequestError(400, f"Invalid type for '{name}': expected a boolean, but got {type(v).__name__} "
                                    "instead.", param=name, code="invalid_type")
        flags[name] = v
    temperature = _number(body, "temperature", 0, 2)
    top_p = _number(body, "top_p", 0, 1)
    if top_p == 0:
        raise RequestError(400, "Invalid 'top_p': expected a value in (0, 1], got 0.", param="top_p",
                           code="invalid_value")
    return {
        "prompts": prompts,
        "max_tokens": _number(body, "max_tokens", 1, 1 << 20, integer=True) or 16,  # vLLM's and OpenAI's default
        "temperature": 1.0 if temperature is None else float(temperature),
        "top_p": 1.0 if top_p is None else float(top_p),
        "stop": stop,
        "stop_token_ids": stop_ids,
        "n": n,
        "seed": _number(body, "seed", -(1 << 63), (1 << 64) - 1, integer=True),
        "top_logprobs": logprobs or 0,
        "skip_special_tokens": flags["skip_special_tokens"],
        "include_stop_str_in_output": flags["include_stop_str_in_output"],
    }


def _completion_logprobs(tok: Any, c: Completion, as_ids: bool) -> dict[str, Any]:
    """A choice's ``logprobs`` as vLLM writes them: tokens, their log-probs, offsets, top log-probs."""

    def name(t: int) -> str:
        return f"token_id:{t}" if as_ids else tok.decode([t])

    tokens = [name(t) for t in c.token_ids]
    offsets, pos = [], 0
    for t in c.token_ids:
        offsets.append(pos)
        pos += len(tok.decode([t]))
    tops = []
    for j, (t, lp) in enumerate(zip(c.token_ids, c.logprobs)):
        top = {name(i): v for i, v in (c.top_logprobs[j] if j < len(c.top_logprobs) else [])}
        top.setdefault(name(t), lp)  # the sampled token is always listed
        tops.append(top)
    return {"text_offset": offsets, "token_logprobs": list(c.logprobs), "tokens": tokens, "top_logprobs": tops}


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
        from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
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

    def model_card(name: str = model_name) -> dict[str, Any]:
        card = {"id": name, "object": "model", "created": created, "owned_by": "stepgym"}
        if context:
            card["max_model_len"] = context  # vLLM's name: clients fit their prompts before the first 400
        if name != model_name:
            card["root"] = card["parent"] = model_name  # a LoRA adapter, listed as vLLM lists them
        return card

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_auth(request)
        return {"object": "list", "data": [model_card(), *(model_card(a) for a in getattr(backend, "adapters", {}))]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str, request: Request) -> dict[str, Any]:
        check_auth(request)
        if model_id != model_name and model_id not in getattr(backend, "adapters", {}):
            raise RequestError(404, f"The model '{model_id}' does not exist", param="model", code="model_not_found")
        return model_card(model_id)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        check_auth(request)
        body = await _json_body(request)
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

        seed = _number(body, "seed", -(1 << 63), (1 << 64) - 1, integer=True)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        cid = "chatcmpl-" + secrets.token_hex(12)
        call = dict(
            tools=tools if use_tools else None,  # {"type": "function", "function": {...}}, as chat templates expect
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            stop=stop,
            n=n,
        )
        if seed is not None and getattr(backend, "streams_tokens", False):
            call["seed"] = seed
        if stream and n == 1 and getattr(backend, "streams_tokens", False):
            return await _live_stream(request, cid, messages, call, use_tools, include_usage)

        comps = await run_in_threadpool(backend.complete, messages, **call)
        choices, usage = _chat_choices(request, comps, use_tools, n, stream)
        now = int(time.time())
        if not stream:
            return {
                "id": cid,
                "object": "chat.completion",
                "created": now,
                "model": model_name,
                "choices": choices,
                "usage": usage,
            }
        chunks = stream_chunks(cid, now, model_name, choices, usage if include_usage else None)
        events = ("data: " + json.dumps(c, ensure_ascii=False) + "\n\n" for c in chunks)
        return StreamingResponse(
            itertools.chain(events, ["data: [DONE]\n\n"]),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    def _chat_choices(request: Request, comps: list[Completion], use_tools: bool, n: int,
                      stream: bool) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """The choices and usage of finished chat completions (and the access-log line)."""
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
        return choices, usage

    async def _live_stream(request: Request, cid: str, messages: list[dict[str, str]], call: dict[str, Any],
                           use_tools: bool, include_usage: bool) -> Any:
        """Stream one chat completion's content as its tokens are produced (see the module docstring)."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def on_token(token_id: int, logprob: float) -> None:  # runs in the generating thread
            loop.call_soon_threadsafe(events.put_nowait, ("token", token_id))

        async def work() -> None:
            try:
                comps = await run_in_threadpool(backend.complete, messages, on_token=on_token, **call)
                events.put_nowait(("done", comps))
            except BaseException as exc:  # noqa: BLE001 - handed to the response below
                events.put_nowait(("error", exc))

        task = asyncio.create_task(work())
        first = await events.get()
        if first[0] == "error":  # before anything was sent: an ordinary error answer
            await task
            raise first[1]
        now = int(time.time())
        base: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": now, "model": model_name}
        if include_usage:
            base["usage"] = None
        tok = backend.agent.tokenizer
        stops = tuple(getattr(backend.agent, "stop", ()) or ()) + tuple(call.get("stop") or ())
        held = max([len(s) for s in call.get("stop") or ()] + [0])

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            c = base | {"choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            return "data: " + json.dumps(c, ensure_ascii=False) + "\n\n"

        async def body() -> Any:
            from stepgym.policy_folder import decode_response

            ids: list[int] = []
            sent = ""
            event = first
            yield chunk({"role": "assistant", "content": ""})
            while event[0] == "token":
                ids.append(event[1])
                text = decode_response(tok, ids, stop_strings=stops, eos_ids=backend.eos_ids).text
                safe = _streamable(text, held, use_tools)
                if len(safe) > len(sent) and safe.startswith(sent):
                    yield chunk({"content": safe[len(sent):]})
                    sent = safe
                event = await events.get()
            await task
            if event[0] == "error":  # mid-stream: the stream ends with an error event, as OpenAI's does
                err = event[1]
                body_ = err.body() if isinstance(err, RequestError) else {
                    "error": {"message": f"{type(err).__name__}: {err}", "type": "server_error"}}
                yield "data: " + json.dumps(body_) + "\n\n"
                yield "data: [DONE]\n\n"
                return
            choices, usage = _chat_choices(request, event[1], use_tools, 1, True)
            ch = choices[0]
            msg = ch["message"]
            content = msg.get("content") or ""
            if content.startswith(sent) and len(content) > len(sent):
                yield chunk({"content": content[len(sent):]})
            for k, tc in enumerate(msg.get("tool_calls") or []):
                fn = tc["function"]
                yield chunk({"tool_calls": [{"index": k, "id": tc["id"], "type": "function",
                                             "function": {"name": fn["name"], "arguments": ""}}]})
                if fn.get("arguments"):
                    yield chunk({"tool_calls": [{"index": k, "function": {"arguments": fn["arguments"]}}]})
            yield chunk({}, ch["finish_reason"])
            if include_usage:
                yield "data: " + json.dumps(base | {"choices": [], "usage": usage}) + "\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    # -- token in, token out ------------------------------------------------------------------------
    def served_model(body: dict[str, Any]) -> str:
        """``""`` for the base model, an adapter's name, or a 404 naming what is served."""
        name = body.get("model")
        if name is None:
            raise RequestError(
                400, "you must provide a model parameter", param="model", code="missing_required_parameter"
            )
        if name == model_name:
            return ""
        if name in getattr(backend, "adapters", {}):
            return name
        served = ", ".join(f"`{m}`" for m in [model_name, *getattr(backend, "adapters", {})])
        raise RequestError(
            404,
            f"The model `{name}` does not exist or you do not have access to it. This server serves {served}.",
            param="model",
            code="model_not_found",
        )

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        check_auth(request)
        body = await _json_body(request)
        if not hasattr(backend, "complete_tokens"):
            raise RequestError(400, "This server's backend serves chat only: use /v1/chat/completions.")
        model = served_model(body)
        req = _completion_request(body, backend)
        comps = await run_in_threadpool(backend.complete_tokens, req.pop("prompts"), model=model, **req)
        tok = backend.agent.tokenizer
        as_ids = body.get("return_tokens_as_token_ids") is True
        want_lp = req["top_logprobs"] is not None and body.get("logprobs") is not None
        choices = []
        for i, c in enumerate(comps):
            choice: dict[str, Any] = {"index": i, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason,
                                      "stop_reason": c.stop_reason}
            if want_lp:
                choice["logprobs"] = _completion_logprobs(tok, c, as_ids)
            if body.get("return_token_ids") is True:
                choice["token_ids"] = c.token_ids
            choices.append(choice)
        n = req["n"]
        prompt_tokens = sum(c.prompt_tokens for c in comps[::n])
        completion_tokens = sum(c.completion_tokens for c in comps)
        request.state.stepgym_log = (
            f"tokens {prompt_tokens}+{completion_tokens}  finish {','.join(c.finish_reason for c in comps)}"
            + (f"  waited {comps[0].wait_s:.2f}s  batch {comps[0].batch}" if comps else "")
        )
        return {
            "id": "cmpl-" + secrets.token_hex(12),
            "object": "text_completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    # -- weight updates ------------------------------------------------------------------------------
    def weights_backend() -> Any:
        if not hasattr(backend, "load_weights"):
            raise RequestError(400, "This server's backend has no weights to update.")
        return backend

    @app.post("/v1/load_lora_adapter")
    async def load_lora_adapter(request: Request) -> Any:
        check_auth(request)
        body = await _json_body(request)
        name = body.get("lora_name")
        if not isinstance(name, str) or not name.strip():
            raise RequestError(400, "Missing required parameter: 'lora_name' (the model id the adapter is served as).",
                               param="lora_name", code="missing_required_parameter")
        if name == model_name:
            raise RequestError(400, f"Invalid 'lora_name': `{name}` is the base model's id; pick another name.",
                               param="lora_name")
        replace = body.get("load_inplace") is True
        await run_in_threadpool(weights_backend().load_adapter, name, body.get("lora_path"), replace)
        request.state.stepgym_log = f"adapter {name} <- {body.get('lora_path')}"
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    @app.post("/v1/unload_lora_adapter")
    async def unload_lora_adapter(request: Request) -> Any:
        check_auth(request)
        body = await _json_body(request)
        name = body.get("lora_name")
        if not isinstance(name, str):
            raise RequestError(400, "Missing required parameter: 'lora_name'.", param="lora_name",
                               code="missing_required_parameter")
        await run_in_threadpool(weights_backend().unload_adapter, name)
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

    @app.post("/update_weights_from_disk")
    async def update_weights_from_disk(request: Request) -> Any:
        check_auth(request)
        body = await _json_body(request)
        try:
            await run_in_threadpool(weights_backend().load_weights, body.get("model_path"))
        except RequestError as exc:  # SGLang's answer shape
            request.state.stepgym_log = exc.message[:160]
            return JSONResponse({"success": False, "message": exc.message}, status_code=exc.status)
        request.state.stepgym_log = f"weights <- {body.get('model_path')}"
        return {"success": True, "message": "Succeeded to update model weights.", "num_paused_requests": 0}

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
