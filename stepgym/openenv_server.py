"""Any registered env as an OpenEnv server (``stepgym serve-env``).

The server speaks the protocol of ``openenv-core`` (0.3): its ``EnvClient`` /
``GenericEnvClient`` connect to ``/ws`` and exchange JSON messages, one env per
connection::

    -> {"type": "reset", "data": {"seed": 0, "difficulty": "easy"}}
    <- {"type": "observation", "data": {"observation": {"text": "...", "metadata": {...}},
                                         "reward": null, "done": false}}
    -> {"type": "step", "data": {"text": "<tool_call>...</tool_call>"}}
    <- {"type": "observation", "data": {...}}
    -> {"type": "state"}
    <- {"type": "state", "data": {"episode_id": "...", "step_count": 1, ...}}
    -> {"type": "close"}
    <- {"type": "error", "data": {"message": "...", "code": "VALIDATION_ERROR"}}   (on bad input)

The env's ``info`` (``action_valid``, ``error``, ``success``, reward components, plus
``terminated``/``truncated``) rides in the observation's ``metadata``. HTTP ``POST /reset``
(returns a ``session_id``), ``POST /step`` and ``GET /state?session_id=`` do the same for
clients without WebSockets; ``GET /health``, ``/metadata`` and ``/schema`` describe the server.

Security (see docs/security.md): reset may only set the env kwargs the operator allows;
kwargs that turn on code execution or touch a sandbox are never remote-settable; request
size, sessions, idle time and steps per second per session are bounded; an API key is
checked on every request (``Authorization: Bearer KEY``, or the key as the password of the
URL, ``http://user:KEY@host:port``, which is how openenv-core's client sends it).

openenv-core's own ``HTTPEnvServer`` is not used: its serializer drops ``metadata`` (where
``info`` belongs), its HTTP ``/step`` builds a fresh env per request (a stateful text env
answers 500 there), and it has no hook for authentication, kwarg allow-lists or rate limits.

Example:
    >>> app = create_env_app(EnvServerConfig("stepgym/ToolUse-v0", allow_kwargs=("difficulty",)))
    >>> sorted(r.path for r in app.routes if r.path in ("/ws", "/reset", "/step", "/state"))
    ['/reset', '/state', '/step', '/ws']
"""

import asyncio
import json
import logging
import math
import secrets
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from stepgym.errors import DependencyNotInstalled, InvalidArgument, ResetNeeded, StepgymError

__all__ = ["EnvServerConfig", "create_env_app", "NEVER_REMOTE_KWARGS", "jsonable"]

_PIP = 'pip install "stepgym[serve]"'
log = logging.getLogger("stepgym.serve_env")

#: Env kwargs a client can never set, whatever ``--allow-kwarg`` says: they run code or
#: loosen the code sandbox. The operator can still fix them with ``-k``.
NEVER_REMOTE_KWARGS: frozenset[str] = frozenset({
    "isolation", "sandbox", "timeout_s", "cpu_s", "memory_mb", "processes", "max_code_chars",
    "prestart", "python", "python_tool", "allow_python", "allow_code", "code_execution", "entry_point",
})
#: Values that switch code execution on (``tools=[..., "python"]`` in ToolUse-v0).
_CODE_VALUES = frozenset({"python", "python_tool", "code", "shell", "bash", "exec"})

_SEED_MAX = 2**63 - 1


@dataclass
class EnvServerConfig:
    """What ``stepgym serve-env`` serves and how it limits clients.

    Args:
        env_id: a registered id (``module:ns/Name-v0`` imports ``module`` first).
        env_kwargs: the operator's fixed constructor kwargs (``-k KEY=VALUE``).
        allow_kwargs: kwargs a client may set with reset (``--allow-kwarg``); others are refused.
        api_key: when set, every request must carry it.
        max_sessions: concurrent sessions (one env each); more get ``CAPACITY_REACHED`` / HTTP 503.
        idle_timeout_s: a session without a message for this long is closed.
        max_request_bytes: the largest request body / WebSocket message accepted.
        max_steps_per_s: steps per second per session (burst of the same size); 0 = unlimited.
        expose_expert: put ``expert_action`` into ``state`` (for checks and demos; it gives
            away the answer, so keep it off for evaluation servers).

    Example:
        >>> EnvServerConfig("stepgym/ToolUse-v0", allow_kwargs=("tools",)).allow_kwargs
        ('tools',)
        >>> EnvServerConfig("stepgym/ToolUse-v0", allow_kwargs=("isolation",))
        Traceback (most recent call last):
        ...
        stepgym.errors.InvalidArgument: --allow-kwarg isolation: ...
    """

    env_id: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    allow_kwargs: tuple[str, ...] = ()
    api_key: str | None = None
    max_sessions: int = 64
    idle_timeout_s: float = 300.0
    max_request_bytes: int = 256 * 1024
    max_steps_per_s: float = 100.0
    expose_expert: bool = False

    def __post_init__(self) -> None:
        self.allow_kwargs = tuple(self.allow_kwargs)
        for name in self.allow_kwargs:
            if name in NEVER_REMOTE_KWARGS:
                raise InvalidArgument(
                    f"--allow-kwarg {name}: this kwarg runs code or loosens the sandbox, so clients may never set "
                    f"it; fix it for every session with -k {name}=VALUE instead"
                )
            if name in ("seed", "episode_id"):
                raise InvalidArgument(f"--allow-kwarg {name}: reset always accepts {name}; allow env kwargs only")
        if not isinstance(self.max_sessions, int) or self.max_sessions < 1:
            raise InvalidArgument(f"--max-sessions must be a positive int, got {self.max_sessions!r}")
        if not self.idle_timeout_s > 0:
            raise InvalidArgument(f"--idle-timeout must be positive seconds, got {self.idle_timeout_s!r}")
        if not isinstance(self.max_request_bytes, int) or self.max_request_bytes < 1024:
            raise InvalidArgument(f"--max-request-bytes must be an int >= 1024, got {self.max_request_bytes!r}")
        if not self.max_steps_per_s >= 0:
            raise InvalidArgument(f"--max-steps-per-s must be >= 0 (0 = unlimited), got {self.max_steps_per_s!r}")
        if self.api_key is not None and not self.api_key.strip():
            raise InvalidArgument("--api-key must not be empty")


class ClientError(Exception):
    """A request the server refuses: HTTP ``status`` and an OpenEnv error ``code``."""

    def __init__(self, message: str, code: str = "VALIDATION_ERROR", status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


def jsonable(obj: Any, depth: int = 0) -> Any:
    """``obj`` as plain JSON values (numpy scalars become numbers, unknown objects their ``str``).

    Example:
        >>> import numpy as np
        >>> jsonable({"r": np.float32(0.5), "ok": np.bool_(True), "t": (1, 2)})
        {'r': 0.5, 'ok': True, 't': [1, 2]}
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if depth > 8:
        return str(obj)[:1000]
    if isinstance(obj, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v, depth + 1) for v in obj]
    item = getattr(obj, "item", None)  # numpy scalars
    if callable(item) and getattr(obj, "shape", None) == ():
        return jsonable(item(), depth + 1)
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return jsonable(tolist(), depth + 1)
    return str(obj)[:1000]


def _mentions_code(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in _CODE_VALUES
    if depth > 4:
        return False
    if isinstance(value, dict):
        return any(_mentions_code(k, depth + 1) or _mentions_code(v, depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_mentions_code(v, depth + 1) for v in value)
    return False


class _Session:
    """One client's env, its kwargs, its step budget and its last activity."""

    def __init__(self, sid: str, rate: float) -> None:
        self.id = sid
        self.env: Any = None
        self.kwargs: dict[str, Any] | None = None
        self.episode_id: str | None = None
        self.steps = 0
        self.done = True
        self.started = False
        self.last_active = time.monotonic()
        self.lock = asyncio.Lock()
        self.rate = rate
        self.tokens = max(1.0, rate)
        self.refilled = time.monotonic()
        self.closed = False
        self.websocket: Any = None

    def take_step_token(self) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        self.tokens = min(max(1.0, self.rate), self.tokens + (now - self.refilled) * self.rate)
        self.refilled = now
        if self.tokens < 1.0:
            raise ClientError(
                f"rate limit: at most {self.rate:g} steps per second per session; wait and send the step again",
                code="RATE_LIMITED", status=429,
            )
        self.tokens -= 1.0


class EnvSessions:
    """The envs of all sessions: creation within ``max_sessions``, reset/step/state, idle reaping."""

    def __init__(self, cfg: EnvServerConfig) -> None:
        from stepgym.registration import resolve_env_id

        self.cfg = cfg
        self.env_id = resolve_env_id(cfg.env_id)
        self.sessions: dict[str, _Session] = {}
        self.pool = ThreadPoolExecutor(max_workers=max(2, min(32, cfg.max_sessions)), thread_name_prefix="serve-env")
        self._reaper: asyncio.Task | None = None
        self.fixed_code = _mentions_code(cfg.env_kwargs)

    # -- sessions -----------------------------------------------------------------
    def open(self) -> _Session:
        if len(self.sessions) >= self.cfg.max_sessions:
            raise ClientError(
                f"server at capacity: {len(self.sessions)} of {self.cfg.max_sessions} sessions in use; close a "
                "session or retry later (the operator sets --max-sessions)", code="CAPACITY_REACHED", status=503,
            )
        session = _Session(uuid.uuid4().hex, self.cfg.max_steps_per_s)
        self.sessions[session.id] = session
        self._ensure_reaper()
        return session

    def get(self, sid: Any) -> _Session:
        if sid is None or sid == "":
            raise ClientError(
                "missing session_id: POST /reset first and pass the session_id it returned", code="SESSION_ERROR")
        if not isinstance(sid, str):
            raise ClientError(f"session_id must be the string POST /reset returned, got {type(sid).__name__}",
                              code="SESSION_ERROR")
        session = self.sessions.get(sid[:100])
        if session is None:
            raise ClientError(
                f"unknown session_id {sid[:40]!r}: it never existed, was closed, or idled out after "
                f"{self.cfg.idle_timeout_s:g}s; POST /reset to start a new one", code="SESSION_ERROR", status=404,
            )
        return session

    async def close(self, session: _Session) -> None:
        if session.closed:
            return
        session.closed = True
        self.sessions.pop(session.id, None)
        env, session.env = session.env, None
        if env is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(self.pool, env.close)
            except Exception:  # closing is best effort; the session is gone either way
                log.exception("closing an env failed")

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        timeout = self.cfg.idle_timeout_s
        interval = min(1.0, max(0.05, timeout / 4))
        while self.sessions:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if now - session.last_active > timeout and not session.lock.locked():
                    ws = session.websocket
                    await self.close(session)
                    if ws is not None:
                        try:
                            await ws.send_text(_error_json(
                                f"session closed after {timeout:g}s without a message; reconnect and reset",
                                "SESSION_ERROR"))
                            await ws.close(code=1001, reason="idle timeout")
                        except Exception:  # the client may be gone already
                            pass

    # -- env operations -----------------------------------------------------------
    def _kwargs_for(self, data: dict[str, Any]) -> tuple[dict[str, Any], int | None, str | None]:
        seed = data.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _SEED_MAX):
            raise ClientError(f"seed must be an int in [0, 2**63) or null, got {json.dumps(seed)[:60]}")
        episode_id = data.get("episode_id")
        if episode_id is not None and (not isinstance(episode_id, str) or len(episode_id) > 255):
            raise ClientError("episode_id must be a string of at most 255 characters or null")
        client = {k: v for k, v in data.items() if k not in ("seed", "episode_id")}
        refused = sorted(k for k in client if k not in self.cfg.allow_kwargs)
        if refused:
            allowed = ", ".join(self.cfg.allow_kwargs) or "none"
            raise ClientError(
                f"env kwargs {refused} are not allowed by this server (allowed: {allowed}); the operator allows "
                "more with --allow-kwarg NAME", code="KWARG_NOT_ALLOWED", status=403,
            )
        if not self.fixed_code and any(_mentions_code(v) for v in client.values()):
            raise ClientError(
                "env kwargs that turn on code execution (e.g. the python tool) cannot be set by clients; the operator "
                "can enable it for every session with -k", code="KWARG_NOT_ALLOWED", status=403,
            )
        return {**self.cfg.env_kwargs, **client}, seed, episode_id

    async def reset(self, session: _Session, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise ClientError(f"reset data must be a JSON object such as {{\"seed\": 0}}, got {type(data).__name__}")
        kwargs, seed, episode_id = self._kwargs_for(data)
        loop = asyncio.get_running_loop()
        if session.env is None or kwargs != session.kwargs:
            old, session.env = session.env, None
            if old is not None:
                await loop.run_in_executor(self.pool, old.close)
            try:
                session.env = await loop.run_in_executor(self.pool, self._make, kwargs)
            except StepgymError as exc:
                raise ClientError(f"cannot build {self.env_id} with these kwargs: {exc}", code="FACTORY_ERROR") from exc
            session.kwargs = kwargs
        try:
            obs, info = await loop.run_in_executor(self.pool, lambda: session.env.reset(seed=seed))
        except StepgymError as exc:
            raise ClientError(f"reset failed: {exc}", code="EXECUTION_ERROR") from exc
        session.episode_id = episode_id or uuid.uuid4().hex
        session.steps = 0
        session.done = False
        session.started = True
        meta = jsonable(info)
        meta.update(terminated=False, truncated=False)
        return {"observation": {"text": str(obs), "metadata": meta}, "reward": None, "done": False}

    def _make(self, kwargs: dict[str, Any]) -> Any:
        from stepgym.registration import make

        try:
            return make(self.env_id, **kwargs)
        except TypeError as exc:
            raise InvalidArgument(str(exc)) from exc
        except (ValueError, KeyError) as exc:
            raise InvalidArgument(f"{type(exc).__name__}: {exc}") from exc

    async def step(self, session: _Session, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise ClientError(f'step data must be a JSON object {{"text": "..."}}, got {type(data).__name__}')
        extra = sorted(k for k in data if k not in ("text", "metadata"))
        if extra:
            raise ClientError(f'unknown action fields {extra[:5]}: an action is {{"text": "...", "metadata": {{}}}}')
        text = data.get("text")
        if not isinstance(text, str):
            raise ClientError(f'action "text" must be a string (the whole LLM step), got {type(text).__name__}')
        session.take_step_token()
        if not session.started:
            raise ClientError("step before reset: send a reset message first", code="RESET_NEEDED", status=409)
        if session.done:
            raise ClientError("the episode is over: send reset to start a new one", code="RESET_NEEDED", status=409)
        try:
            obs, reward, terminated, truncated, info = await asyncio.get_running_loop().run_in_executor(
                self.pool, session.env.step, text)
        except ResetNeeded as exc:
            raise ClientError(str(exc), code="RESET_NEEDED", status=409) from exc
        session.steps += 1
        done = bool(terminated) or bool(truncated)
        session.done = done
        meta = jsonable(info)
        meta.update(terminated=bool(terminated), truncated=bool(truncated))
        return {"observation": {"text": str(obs), "metadata": meta}, "reward": float(reward), "done": done}

    def state(self, session: _Session) -> dict[str, Any]:
        client_kwargs = {k: v for k, v in (session.kwargs or {}).items() if k in self.cfg.allow_kwargs}
        out: dict[str, Any] = {
            "episode_id": session.episode_id, "step_count": session.steps, "env_id": self.env_id,
            "env_kwargs": jsonable(client_kwargs), "done": session.done, "session_id": session.id,
        }
        if self.cfg.expose_expert and session.env is not None and session.started and not session.done:
            try:
                out["expert_action"] = session.env.unwrapped.expert_action()
            except Exception as exc:  # an env without an expert: say so instead of failing the state call
                out["expert_error"] = f"{type(exc).__name__}: {exc}"[:300]
        return out


def _error_json(message: str, code: str) -> str:
    return json.dumps({"type": "error", "data": {"message": message, "code": code}})


def _schemas(env_id: str) -> dict[str, Any]:
    meta = {"type": "object", "additionalProperties": True, "default": {}}
    return {
        "action": {"title": "StepgymAction", "type": "object", "additionalProperties": False, "required": ["text"],
                   "properties": {"text": {"type": "string", "description": f"one whole LLM step for {env_id}"},
                                  "metadata": meta}},
        "observation": {"title": "StepgymObservation", "type": "object", "properties": {
            "text": {"type": "string"}, "done": {"type": "boolean"}, "reward": {"type": ["number", "null"]},
            "metadata": {**meta, "description": "the env's info: action_valid, error, success, terminated, truncated, ..."}}},
        "state": {"title": "StepgymState", "type": "object", "additionalProperties": True, "properties": {
            "episode_id": {"type": ["string", "null"]}, "step_count": {"type": "integer", "minimum": 0}}},
    }


def create_env_app(cfg: EnvServerConfig, log_line: Any = None) -> Any:
    """The FastAPI app serving ``cfg.env_id`` over the OpenEnv protocol.

    Args:
        cfg: the env and the limits.
        log_line: called with one line per session event, or ``None``.
    """
    try:
        from fastapi import FastAPI, Request, WebSocket
        from fastapi.responses import JSONResponse
        from starlette.exceptions import HTTPException as StarletteHTTPException
        from starlette.websockets import WebSocketDisconnect
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise DependencyNotInstalled("stepgym serve-env", _PIP) from exc

    sessions = EnvSessions(cfg)
    app = FastAPI(title=f"stepgym OpenEnv server: {sessions.env_id}", docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.sessions = sessions
    say = log_line or (lambda line: None)

    def authorized(headers: Any) -> bool:
        if cfg.api_key is None:
            return True
        got = headers.get("authorization", "")
        if got.startswith("Bearer "):
            return secrets.compare_digest(got[7:].strip().encode(), cfg.api_key.encode())
        if got.startswith("Basic "):
            import base64
            import binascii

            try:
                _, _, password = base64.b64decode(got[6:].strip()).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return secrets.compare_digest(password.encode(), cfg.api_key.encode())
        return False

    _AUTH_MSG = ("incorrect or missing API key: send 'Authorization: Bearer KEY', or put the key in the URL as "
                 "http://user:KEY@host:port (openenv-core's client sends that as Basic auth)")

    def error(exc: ClientError) -> JSONResponse:
        return JSONResponse({"error": {"message": exc.message, "code": exc.code}}, status_code=exc.status)

    @app.exception_handler(ClientError)
    async def _on_client_error(request: Request, exc: ClientError) -> JSONResponse:
        return error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            msg = (f"no such endpoint {request.method} {request.url.path}; this server has GET /health /metadata "
                   "/schema /state, POST /reset /step, and WebSocket /ws")
        elif exc.status_code == 405:
            msg = f"method {request.method} is not allowed for {request.url.path}"
        else:
            msg = str(exc.detail)
        return error(ClientError(msg, code="HTTP_ERROR", status=exc.status_code))

    @app.exception_handler(Exception)
    async def _on_crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("env server error")
        return error(ClientError(f"the env raised {type(exc).__name__}: {exc}"[:500], code="EXECUTION_ERROR",
                                 status=500))

    async def body_of(request: Request) -> dict[str, Any]:
        if not authorized(request.headers):
            raise ClientError(_AUTH_MSG, code="UNAUTHORIZED", status=401)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cfg.max_request_bytes:
            raise ClientError(f"request body of {length} bytes exceeds the limit of {cfg.max_request_bytes} bytes "
                              "(--max-request-bytes); send a shorter action", code="TOO_LARGE", status=413)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > cfg.max_request_bytes:
                raise ClientError(f"request body exceeds the limit of {cfg.max_request_bytes} bytes "
                                  "(--max-request-bytes); send a shorter action", code="TOO_LARGE", status=413)
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ClientError("the body is not valid JSON; send a JSON object such as {\"seed\": 0}",
                              code="INVALID_JSON") from None
        if not isinstance(body, dict):
            raise ClientError(f"the body must be a JSON object, got {type(body).__name__}")
        return body

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "healthy"}

    @app.get("/metadata")
    async def metadata(request: Request) -> dict[str, Any]:
        if not authorized(request.headers):
            raise ClientError(_AUTH_MSG, code="UNAUTHORIZED", status=401)
        from stepgym import __version__
        from stepgym.registration import list_envs

        desc = next((e.description for e in list_envs() if e.id == sessions.env_id), "")
        return {"name": sessions.env_id, "description": desc or f"stepgym env {sessions.env_id}",
                "version": __version__, "author": "stepgym", "readme_content": None,
                "documentation_url": "https://github.com/stepgym/stepgym/tree/main/docs",
                "allowed_kwargs": list(cfg.allow_kwargs), "max_sessions": cfg.max_sessions,
                "active_sessions": len(sessions.sessions)}

    @app.get("/schema")
    async def schema() -> dict[str, Any]:
        return _schemas(sessions.env_id)

    @app.post("/reset")
    async def http_reset(request: Request) -> dict[str, Any]:
        body = await body_of(request)
        sid = body.pop("session_id", None)
        session = sessions.get(sid) if sid is not None else sessions.open()
        session.last_active = time.monotonic()
        try:
            async with session.lock:
                out = await sessions.reset(session, body)
        except ClientError:
            if sid is None:
                await sessions.close(session)
            raise
        out["observation"]["metadata"]["session_id"] = session.id
        return out

    @app.post("/step")
    async def http_step(request: Request) -> dict[str, Any]:
        body = await body_of(request)
        session = sessions.get(body.get("session_id"))
        session.last_active = time.monotonic()
        if "action" not in body:
            raise ClientError('the body needs "action": {"text": "..."} and "session_id"')
        async with session.lock:
            return await sessions.step(session, body["action"])

    @app.get("/state")
    async def http_state(request: Request, session_id: str | None = None) -> dict[str, Any]:
        if not authorized(request.headers):
            raise ClientError(_AUTH_MSG, code="UNAUTHORIZED", status=401)
        session = sessions.get(session_id)
        session.last_active = time.monotonic()
        return sessions.state(session)

    @app.post("/close")
    async def http_close(request: Request) -> dict[str, Any]:
        body = await body_of(request)
        session = sessions.get(body.get("session_id"))
        await sessions.close(session)
        return {"session_id": session.id, "closed": True}

    @app.websocket("/ws")
    async def ws_endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        refusal: tuple[str, str, int] | None = None
        if not authorized(websocket.headers):
            refusal = (_AUTH_MSG, "UNAUTHORIZED", 1008)
        else:
            try:
                session = sessions.open()
            except ClientError as exc:
                refusal = (exc.message, exc.code, 1013)
        if refusal is not None:
            # The reason answers the first message (openenv-core's client raises it from that call);
            # then the connection closes.
            try:
                await asyncio.wait_for(websocket.receive(), timeout=10.0)
                await websocket.send_text(_error_json(refusal[0], refusal[1]))
                await websocket.close(code=refusal[2], reason=refusal[1].lower())
            except (RuntimeError, WebSocketDisconnect, asyncio.TimeoutError):
                pass
            return
        session.websocket = websocket
        say(f"session {session.id[:8]} opened ({len(sessions.sessions)}/{cfg.max_sessions})")
        try:
            while not session.closed:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                raw = message.get("text")
                if raw is None:
                    raw_bytes = message.get("bytes") or b""
                    try:
                        raw = raw_bytes.decode("utf-8")
                    except UnicodeDecodeError:
                        await websocket.send_text(_error_json("messages must be UTF-8 JSON text", "INVALID_JSON"))
                        continue
                if session.closed:
                    break
                session.last_active = time.monotonic()
                if len(raw) > cfg.max_request_bytes:
                    await websocket.send_text(_error_json(
                        f"message of {len(raw)} bytes exceeds the limit of {cfg.max_request_bytes} bytes "
                        "(--max-request-bytes); send a shorter action", "TOO_LARGE"))
                    continue
                try:
                    msg = json.loads(raw)
                except ValueError as exc:
                    await websocket.send_text(_error_json(f"Invalid JSON: {exc}", "INVALID_JSON"))
                    continue
                if not isinstance(msg, dict):
                    await websocket.send_text(_error_json(
                        'a message is a JSON object {"type": "reset"|"step"|"state"|"close", "data": {...}}',
                        "VALIDATION_ERROR"))
                    continue
                kind = msg.get("type")
                if kind == "close":
                    break
                try:
                    async with session.lock:
                        if kind == "reset":
                            reply = {"type": "observation", "data": await sessions.reset(session, msg.get("data", {}))}
                        elif kind == "step":
                            reply = {"type": "observation", "data": await sessions.step(session, msg.get("data"))}
                        elif kind == "state":
                            reply = {"type": "state", "data": sessions.state(session)}
                        else:
                            raise ClientError(f"unknown message type {str(kind)[:40]!r}: expected reset, step, state "
                                              "or close", code="UNKNOWN_TYPE")
                    text = json.dumps(reply)
                except ClientError as exc:
                    text = _error_json(exc.message, exc.code)
                except Exception as exc:  # an env bug: report it, keep the server and the session alive
                    log.exception("env error in session %s", session.id)
                    text = _error_json(f"the env raised {type(exc).__name__}: {exc}"[:500], "EXECUTION_ERROR")
                await websocket.send_text(text)
        except WebSocketDisconnect:
            pass
        except RuntimeError:  # the reaper closed the socket under us
            pass
        finally:
            await sessions.close(session)
            say(f"session {session.id[:8]} closed after {session.steps} steps")
            try:
                await websocket.close()
            except (RuntimeError, WebSocketDisconnect):  # already closed by the client or the reaper
                pass

    return app
