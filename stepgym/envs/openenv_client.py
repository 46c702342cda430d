"""Any OpenEnv endpoint as a Gymnasium text env, and a pool of them.

``stepgym/OpenEnv-v0`` connects to one server (``base_url``), ``stepgym/OpenEnvPool-v0`` to
several (``urls``); both speak OpenEnv's WebSocket protocol (``/ws``, the messages of
openenv-core's ``EnvClient``), so the server can be ``stepgym serve-env`` or any other OpenEnv
env. Observation and action are text, like every stepgym env, so wrappers, agents,
``stepgym check`` and ``stepgym train`` work unchanged::

    stepgym serve-env stepgym/ToolUse-v0 --port 8001 &
    stepgym check stepgym/OpenEnv-v0 -k base_url=http://127.0.0.1:8001

A server that dies or stops answering never crashes the run: the episode ends with
``truncated=True`` and ``info["error"]`` / ``info["server_error"]`` saying what happened; the
next ``reset`` moves to another server of the pool (a dead server is retried after
``retry_dead_after_s``). ``reset`` raises only when no server answers within
``reset_timeout_s``.

For non-stepgym OpenEnv envs the action goes out as ``{action_field: text}`` and the
observation text is ``observation[observation_field]`` when that is a string, else the
observation as JSON.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Any, SupportsFloat

import gymnasium as gym

from stepgym.errors import DependencyNotInstalled, InvalidArgument, ResetNeeded, StepgymError
from stepgym.spaces import DEFAULT_ACTION_CHARS, DEFAULT_OBS_CHARS, UnicodeText

__all__ = ["OpenEnvEnv", "EnvServerError", "EnvServerUnavailable"]

# Shared by every env of this process: pool members start on different servers and all of
# them skip a server another member found dead.
_next_server = itertools.count()
_dead_until: dict[str, float] = {}
_dead_lock = threading.Lock()


class EnvServerError(StepgymError, RuntimeError):
    """The env server refused a request (bad kwargs, capacity, authentication)."""


class EnvServerUnavailable(StepgymError, ConnectionError):
    """No env server of the list answered."""


def _ws_url(url: str) -> str:
    url = url.strip().rstrip("/")
    for http, ws in (("http://", "ws://"), ("https://", "wss://")):
        if url.startswith(http):
            url = ws + url[len(http):]
    if not url.startswith(("ws://", "wss://")):
        url = "ws://" + url
    return url if url.endswith("/ws") else url + "/ws"


def _error_code(reply: dict[str, Any]) -> str | None:
    if reply.get("type") != "error":
        return None
    data = reply.get("data")
    return str(data.get("code")) if isinstance(data, dict) else "ERROR"


class _Conn:
    """One WebSocket session (websockets' sync client): send a message, wait for the answer."""

    def __init__(self, url: str, api_key: str | None, connect_timeout_s: float, max_bytes: int) -> None:
        try:
            from websockets.sync.client import connect
        except ImportError as exc:  # pragma: no cover - websockets comes with the serve/openenv extras
            raise DependencyNotInstalled("stepgym/OpenEnv-v0", 'pip install "stepgym[openenv]"') from exc
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self.ws = connect(_ws_url(url), additional_headers=headers, open_timeout=connect_timeout_s,
                          close_timeout=1.0, max_size=max_bytes, compression=None, proxy=None)

    def call(self, message: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        self.ws.send(json.dumps(message))
        reply = json.loads(self.ws.recv(timeout=timeout_s))
        if not isinstance(reply, dict):
            raise ValueError(f"the server answered {type(reply).__name__}, not a JSON object")
        return reply

    def close(self) -> None:
        try:
            self.ws.send('{"type": "close"}')
        except Exception:  # closing is best effort
            pass
        try:
            self.ws.close()
        except Exception:
            pass


class OpenEnvEnv(gym.Env[str, str]):
    """A Gymnasium text env whose episodes run on OpenEnv servers.

    Args:
        base_url: one server, e.g. ``http://127.0.0.1:8001`` (``ws://`` works too).
        urls: several servers (the pool); each env instance starts on a different one and
            stays there while it answers.
        api_key: sent as ``Authorization: Bearer KEY``.
        env_kwargs: sent with every reset (the server accepts only those it allows).
        action_field: the action key; ``"text"`` for stepgym servers.
        observation_field: the observation key holding the text.
        connect_timeout_s: to open a connection.
        step_timeout_s: to wait for one answer; longer is a dead server.
        reset_timeout_s: how long reset keeps trying the servers before it raises.
        retry_dead_after_s: a server that failed is skipped this long.
        max_obs_chars, max_action_chars: bounds of the text spaces.

    Example:
        >>> env = OpenEnvEnv(base_url="http://127.0.0.1:8001")  # connects on reset
        >>> env.observation_space.contains("any text")
        True
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        base_url: str | None = None,
        *,
        urls: list[str] | tuple[str, ...] | str | None = None,
        api_key: str | None = None,
        env_kwargs: dict[str, Any] | None = None,
        action_field: str = "text",
        observation_field: str = "text",
        connect_timeout_s: float = 5.0,
        step_timeout_s: float = 60.0,
        reset_timeout_s: float = 30.0,
        retry_dead_after_s: float = 5.0,
        max_obs_chars: int = DEFAULT_OBS_CHARS,
        max_action_chars: int = DEFAULT_ACTION_CHARS,
    ) -> None:
        if isinstance(urls, str):
            urls = [u for u in urls.replace(",", " ").split() if u]
        servers = list(urls or []) + ([base_url] if base_url else [])
        if not servers or not all(isinstance(u, str) and u.strip() for u in servers):
            raise InvalidArgument(
                "OpenEnv-v0 needs the server address: -k base_url=http://HOST:PORT (or urls=[...] for a pool), "
                f"got base_url={base_url!r}, urls={urls!r}; start one with `stepgym serve-env ENV_ID`"
            )
        if env_kwargs is not None and not isinstance(env_kwargs, dict):
            raise InvalidArgument(f"env_kwargs must be a dict, got {type(env_kwargs).__name__}")
        for name, value in (("connect_timeout_s", connect_timeout_s), ("step_timeout_s", step_timeout_s),
                            ("reset_timeout_s", reset_timeout_s)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise InvalidArgument(f"{name} must be positive seconds, got {value!r}")
        self.urls = [u.strip() for u in servers]
        self.api_key = api_key
        self.env_kwargs = dict(env_kwargs or {})
        self.action_field = action_field
        self.observation_field = observation_field
        self.connect_timeout_s = float(connect_timeout_s)
        self.step_timeout_s = float(step_timeout_s)
        self.reset_timeout_s = float(reset_timeout_s)
        self.retry_dead_after_s = float(retry_dead_after_s)
        self.observation_space = UnicodeText(max_obs_chars, min_length=0)
        self.action_space = UnicodeText(max_action_chars, min_length=0)
        self._max_obs = max_obs_chars
        self._start = next(_next_server) % len(self.urls)
        self._conn: _Conn | None = None
        self._url: str | None = None
        self._needs_reset = True
        self.server_url: str | None = None  # where the current episode runs

    # -- connection handling ------------------------------------------------------
    def _drop(self, dead: bool) -> None:
        if self._conn is not None:
            self._conn.close()
        if dead and self._url is not None:
            with _dead_lock:
                _dead_until[self._url] = time.monotonic() + self.retry_dead_after_s
        self._conn = None
        self._url = None

    def _order(self) -> list[str]:
        n = len(self.urls)
        order = [self.urls[(self._start + i) % n] for i in range(n)]
        if self._url in order:  # stay where we are while it answers
            order.remove(self._url)
            order.insert(0, self._url)
        now = time.monotonic()
        with _dead_lock:
            alive = [u for u in order if _dead_until.get(u, 0.0) <= now]
        return alive + [u for u in order if u not in alive]

    def _call(self, message: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        if self._conn is None:
            raise ConnectionError("not connected")
        return self._conn.call(message, timeout_s)

    # -- gymnasium API ------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        data = dict(self.env_kwargs)
        if options and isinstance(options.get("env_kwargs"), dict):
            data.update(options["env_kwargs"])
        if seed is not None:
            data["seed"] = int(seed)
        deadline = time.monotonic() + self.reset_timeout_s
        failures: dict[str, str] = {}
        while True:
            for url in self._order():
                try:
                    if self._url != url or self._conn is None:
                        self._drop(dead=False)
                        self._conn = _Conn(url, self.api_key, self.connect_timeout_s, 16 * self._max_obs + (1 << 20))
                        self._url = url
                    reply = self._call({"type": "reset", "data": data}, self.step_timeout_s)
                except Exception as exc:  # connection refused, reset, timed out, garbage: try the next server
                    failures[url] = f"{type(exc).__name__}: {exc}"[:200]
                    self._drop(dead=True)
                    continue
                if reply.get("type") == "error":
                    err = reply.get("data") or {}
                    code, msg = err.get("code", "ERROR"), err.get("message", "unknown error")
                    if code in ("CAPACITY_REACHED", "SESSION_ERROR"):  # full or reaped: another server may take it
                        failures[url] = f"{code}: {msg}"
                        self._drop(dead=False)
                        continue
                    self._drop(dead=False)
                    raise EnvServerError(f"{url} refused reset ({code}): {msg}")
                self._needs_reset = False
                self.server_url = url
                obs, _, _, _, info = self._parse(reply)
                return obs, info
            if time.monotonic() >= deadline:
                detail = "; ".join(f"{u}: {e}" for u, e in failures.items())
                raise EnvServerUnavailable(
                    f"no env server answered within {self.reset_timeout_s:g}s ({detail}); start one with "
                    "`stepgym serve-env ENV_ID --port N` or fix base_url/urls"
                )
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def step(self, action: str) -> tuple[str, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._needs_reset:
            raise ResetNeeded("step() called before reset() or after the episode ended; call env.reset() first")
        if not isinstance(action, str):
            raise InvalidArgument(
                f"actions are text: expected str, got {type(action).__name__}. Decode model output to a string "
                "before calling step()."
            )
        url = self._url
        message = {"type": "step", "data": {self.action_field: action}}
        deadline = time.monotonic() + self.step_timeout_s
        try:
            reply = self._call(message, self.step_timeout_s)
            # Over the server's steps-per-second budget: pace ourselves and send the step again.
            while _error_code(reply) == "RATE_LIMITED" and time.monotonic() < deadline:
                time.sleep(0.02)
                reply = self._call(message, self.step_timeout_s)
        except Exception as exc:  # the server died or hung: end this episode, keep the run going
            self._drop(dead=True)
            self._needs_reset = True
            why = f"{type(exc).__name__}: {exc}"[:300]
            error = f"env server {url} failed mid-episode ({why}); the episode was cut short"
            info = {"action_valid": False, "error": error, "server_error": True, "server": url, "success": False}
            return f"[{error}]", 0.0, False, True, info
        if reply.get("type") == "error":
            err = reply.get("data") or {}
            code, msg = err.get("code", "ERROR"), err.get("message", "unknown error")
            if code == "RESET_NEEDED":
                self._needs_reset = True
                raise ResetNeeded(f"the server says: {msg}")
            if code in ("SESSION_ERROR", "UNAUTHORIZED"):
                self._drop(dead=False)
                self._needs_reset = True
                error = f"env server {url} ended the session ({code}: {msg})"
                info = {"action_valid": False, "error": error, "server_error": True, "server": url, "success": False}
                return f"[{error}]", 0.0, False, True, info
            # A refused action (too large, rate limited, malformed): the model reads why and tries again.
            return (f"Error: the env server refused this action ({code}): {msg}", 0.0, False, False,
                    {"action_valid": False, "error": msg, "server": url})
        obs, reward, terminated, truncated, info = self._parse(reply)
        if terminated or truncated:
            self._needs_reset = True
        return obs, reward, terminated, truncated, info

    def _parse(self, reply: dict[str, Any]) -> tuple[str, float, bool, bool, dict[str, Any]]:
        data = reply.get("data") if isinstance(reply.get("data"), dict) else {}
        observation = data.get("observation")
        if not isinstance(observation, dict):
            observation = {"value": observation}
        meta = observation.get("metadata")
        info: dict[str, Any] = dict(meta) if isinstance(meta, dict) else {}
        text = observation.get(self.observation_field)
        if not isinstance(text, str):
            text = json.dumps({k: v for k, v in observation.items() if k != "metadata"}, default=str)
        done = bool(data.get("done", False))
        terminated = bool(info.pop("terminated", done))
        truncated = bool(info.pop("truncated", False)) and not terminated
        if done and not (terminated or truncated):
            terminated = True
        reward = data.get("reward")
        reward = float(reward) if isinstance(reward, (int, float)) and not isinstance(reward, bool) else 0.0
        info.pop("session_id", None)
        info.setdefault("action_valid", True)
        info.setdefault("error", None)
        if terminated or truncated:
            info.setdefault("success", reward > 0)
        info["server"] = self._url
        return text[: self._max_obs], reward, terminated, truncated, info

    def state(self) -> dict[str, Any]:
        """The server's ``state`` of the current session (episode id, step count, ...)."""
        reply = self._call({"type": "state"}, self.step_timeout_s)
        if reply.get("type") != "state" or not isinstance(reply.get("data"), dict):
            raise EnvServerError(f"{self._url} answered state with {str(reply)[:200]}")
        return reply["data"]

    def expert_action(self) -> str:
        """The server env's expert step (``stepgym serve-env --expose-expert`` only)."""
        if self._conn is None or self._needs_reset:
            raise ResetNeeded("expert_action() needs a running episode; call env.reset() first")
        state = self.state()
        if "expert_action" not in state:
            raise NotImplementedError(
                f"{self._url} does not expose the expert; start it with `stepgym serve-env ... --expose-expert`"
                + (f" ({state['expert_error']})" if "expert_error" in state else "")
            )
        return str(state["expert_action"])

    def close(self) -> None:
        self._drop(dead=False)
        self._needs_reset = True
        super().close()
