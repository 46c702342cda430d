"""`stepgym serve-env` driven by openenv-core's own client, and OpenEnv servers as stepgym envs.

Every server is a real `stepgym serve-env` subprocess on a free port of 127.0.0.1 (one openenv-core
server runs in a thread). Hostile requests get a clear error message or 4xx, never a 500; a server
killed with SIGKILL mid-episode truncates the episode and the pool goes on with the other server.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

pytest.importorskip("openenv.core")
pytest.importorskip("uvicorn")
websockets_sync = pytest.importorskip("websockets.sync.client")

import stepgym  # noqa: E402
from stepgym.checker import run_checks  # noqa: E402
from tests.stepgym.integrations.envserver_helpers import EnvServer  # noqa: E402

KEY = "sekrit-key"


@pytest.fixture(scope="module")
def servers():
    open_ = EnvServer("stepgym/ToolUse-v0", "--allow-kwarg", "difficulty", "--expose-expert",
                      "--max-steps-per-s", "0", "--quiet")
    strict = EnvServer("stepgym/ToolUse-v0", "--allow-kwarg", "difficulty", "--allow-kwarg", "tools",
                       "--api-key", KEY, "--max-sessions", "3", "--idle-timeout", "1.0",
                       "--max-request-bytes", "4096", "--max-steps-per-s", "10", "--quiet")
    doomed = EnvServer("stepgym/ToolUse-v0", "--expose-expert", "--max-steps-per-s", "0", "--quiet")
    all_ = {"open": open_, "strict": strict, "doomed": doomed}
    try:
        for s in all_.values():
            s.wait()
        yield all_
    finally:
        for s in all_.values():
            s.stop()


def _generic(url: str, **kw: Any):
    from openenv.core import GenericEnvClient

    return GenericEnvClient(base_url=url, message_timeout_s=30, **kw).sync()


def _raw(url: str, key: str | None = KEY):
    headers = {"Authorization": f"Bearer {key}"} if key else None
    return websockets_sync.connect(url, additional_headers=headers, max_size=None, proxy=None)


def _ask(ws, message: Any) -> dict:
    ws.send(message if isinstance(message, str) else json.dumps(message))
    return json.loads(ws.recv(timeout=10))


def _http(method: str, url: str, body: Any = None, key: str | None = KEY, raw: bytes | None = None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# -- openenv-core's client against stepgym serve-env -------------------------------------------

def test_openenv_client_plays_an_episode_with_info_in_metadata(servers):
    local = stepgym.make("stepgym/ToolUse-v0", difficulty="medium")
    local_obs, _ = local.reset(seed=3)
    with _generic(servers["open"].url) as env:
        result = env.reset(seed=3, difficulty="medium")
        assert result.observation["text"] == local_obs  # same seed, same kwargs: same task as in-process
        assert result.done is False and result.reward is None
        meta = result.observation["metadata"]
        assert meta["action_valid"] is True and meta["error"] is None and meta["difficulty"] == "medium"
        state = env.state()
        assert state["step_count"] == 0 and state["env_kwargs"] == {"difficulty": "medium"}
        bad = env.step({"text": "no tool call here"})
        assert bad.observation["metadata"]["action_valid"] is False and bad.observation["metadata"]["error"]
        for _ in range(10):
            result = env.step({"text": env.state()["expert_action"]})
            if result.done:
                break
        assert result.done and result.reward == 1.0
        assert result.observation["metadata"]["success"] is True
        assert result.observation["metadata"]["terminated"] is True
        assert env.state()["step_count"] >= 2


def test_concurrent_sessions_each_have_their_own_env(servers):
    def episode(seed: int) -> tuple[float, str]:
        with _generic(servers["open"].url) as env:
            first = env.reset(seed=seed).observation["text"]
            result = None
            for _ in range(10):
                result = env.step({"text": env.state()["expert_action"]})
                if result.done:
                    break
            return result.reward, first

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(episode, [10, 11, 12, 13]))
    assert [r for r, _ in results] == [1.0] * 4
    assert len({first for _, first in results}) == 4


def test_api_key_is_required_and_the_url_password_works(servers):
    strict = servers["strict"]
    with _generic(strict.url) as env, pytest.raises(RuntimeError, match="API key"):
        env.reset(seed=0)
    keyed = strict.url.replace("http://", f"http://user:{KEY}@")  # openenv-core sends it as Basic auth
    with _generic(keyed) as env:
        assert "Task:" in env.reset(seed=0).observation["text"]
    status, body = _http("POST", strict.url + "/reset", {"seed": 0}, key="wrong")
    assert status == 401 and "API key" in body["error"]["message"]


def test_hostile_websocket_messages_get_clear_errors_and_the_session_survives(servers):
    with _raw(servers["strict"].ws) as ws:
        cases = [
            ("{not json", "INVALID_JSON"),
            ("[1, 2]", "VALIDATION_ERROR"),
            ({"type": "dance"}, "UNKNOWN_TYPE"),
            ({"type": "step", "data": {"text": "x"}}, "RESET_NEEDED"),  # step before reset
            ({"type": "reset", "data": {"seed": "zero"}}, "VALIDATION_ERROR"),
            ({"type": "reset", "data": {"seed": -1}}, "VALIDATION_ERROR"),
            ({"type": "reset", "data": {"max_steps": 1000}}, "KWARG_NOT_ALLOWED"),  # not on the allow-list
            ({"type": "reset", "data": {"tools": ["lookup", "python"]}}, "KWARG_NOT_ALLOWED"),  # allowed kwarg, code value
            ({"type": "reset", "data": {"difficulty": "nightmare"}}, "FACTORY_ERROR"),
            ({"type": "reset", "data": {"seed": 0, "pad": "x" * 5000}}, "TOO_LARGE"),
        ]
        for message, code in cases:
            reply = _ask(ws, message)
            assert reply["type"] == "error" and reply["data"]["code"] == code, (message, reply)
            assert len(reply["data"]["message"]) > 10
        assert "nightmare" in _ask(ws, {"type": "reset", "data": {"difficulty": "nightmare"}})["data"]["message"]
        assert _ask(ws, {"type": "reset", "data": {"seed": 1, "tools": ["lookup", "search"]}})["type"] == "observation"
        for action in (5, None, ["a"], {"t": 1}):
            reply = _ask(ws, {"type": "step", "data": {"text": action}})
            assert reply["data"]["code"] == "VALIDATION_ERROR" and "string" in reply["data"]["message"]
        assert _ask(ws, {"type": "step", "data": {"text": "x", "cmd": "rm"}})["data"]["code"] == "VALIDATION_ERROR"
        ok = _ask(ws, {"type": "step", "data": {"text": "\x00 garbage ☃"}})
        assert ok["type"] == "observation" and ok["data"]["observation"]["metadata"]["action_valid"] is False
        # steps per second per session are bounded (10/s, burst 10)
        codes = [_ask(ws, {"type": "step", "data": {"text": "x"}}).get("data", {}).get("code") for _ in range(14)]
        assert "RATE_LIMITED" in codes
        limited = _ask(ws, {"type": "step", "data": {"text": "x"}})
        assert limited["data"]["code"] == "RATE_LIMITED" and "per second" in limited["data"]["message"]


def test_hostile_http_requests_are_4xx_never_500(servers):
    url = servers["strict"].url
    checks = [
        (_http("POST", url + "/reset", raw=b"{garbage"), 400, "JSON"),
        (_http("POST", url + "/reset", raw=b'"a string"'), 400, "object"),
        (_http("POST", url + "/reset", raw=b"x" * 10_000), 413, "limit"),
        (_http("POST", url + "/step", {"action": {"text": "x"}}), 400, "session_id"),
        (_http("POST", url + "/step", {"action": {"text": "x"}, "session_id": "nope"}), 404, "unknown session"),
        (_http("GET", url + "/state?session_id=nope"), 404, "unknown session"),
        (_http("GET", url + "/nowhere"), 404, "no such endpoint"),
        (_http("POST", url + "/reset", {"isolation": "none"}), 403, "not allowed"),
    ]
    for (status, body), want_status, needle in checks:
        assert status == want_status and needle in body["error"]["message"], (status, body)
    status, body = _http("POST", url + "/reset", {"seed": 4})
    assert status == 200
    sid = body["observation"]["metadata"]["session_id"]
    status, body = _http("POST", url + "/step", {"action": {"text": 7}, "session_id": sid})
    assert status == 400 and "string" in body["error"]["message"]
    status, body = _http("POST", url + "/step", {"action": {"text": "Action: lookup[X, y]"}, "session_id": sid})
    assert status == 200 and body["observation"]["metadata"]["action_valid"] in (True, False)
    assert _http("POST", url + "/close", {"session_id": sid})[0] == 200
    assert _http("GET", url + f"/state?session_id={sid}")[0] == 404


def test_sessions_are_bounded_and_idle_ones_are_closed(servers):
    strict = servers["strict"]
    held = [_raw(strict.ws) for _ in range(3)]
    try:
        for ws in held:
            assert _ask(ws, {"type": "reset", "data": {"seed": 0}})["type"] == "observation"
        with _raw(strict.ws) as extra:
            reply = _ask(extra, {"type": "reset", "data": {"seed": 0}})
            assert reply["data"]["code"] == "CAPACITY_REACHED" and "--max-sessions" in reply["data"]["message"]
        status, body = _http("POST", strict.url + "/reset", {"seed": 0})
        assert status == 503
        reply = json.loads(held[0].recv(timeout=5))  # idle beyond --idle-timeout: closed, and the server says why
        assert reply["data"]["code"] == "SESSION_ERROR" and "without a message" in reply["data"]["message"]
        with _raw(strict.ws) as fresh:  # capacity is free again
            assert _ask(fresh, {"type": "reset", "data": {"seed": 0}})["type"] == "observation"
    finally:
        for ws in held:
            ws.close()


def test_a_third_party_module_id_is_served():
    from stepgym.openenv_server import EnvServerConfig, create_env_app
    from stepgym.serving import serve_in_thread

    app = create_env_app(EnvServerConfig("tests.steppo.toy:steppotest/Boxes-v0", expose_expert=True))
    with serve_in_thread(app) as server, _generic(f"http://127.0.0.1:{server.port}") as env:
        result = env.reset(seed=2)
        while not result.done:
            result = env.step({"text": env.state()["expert_action"]})
        assert result.reward == 1.0 and result.observation["metadata"]["success"] is True
        assert env.state()["env_id"] == "steppotest/Boxes-v0"


def test_unsafe_allow_kwarg_is_refused_at_startup():
    from stepgym.cli import main

    assert main(["serve-env", "stepgym/ToolUse-v0", "--allow-kwarg", "isolation"]) == 2


# -- OpenEnv servers as stepgym envs -------------------------------------------------------------

def test_checker_passes_on_a_remote_tooluse(servers):
    results = run_checks("stepgym/OpenEnv-v0", env_kwargs={"base_url": servers["open"].url,
                                                            "env_kwargs": {"difficulty": "medium"}})
    assert all(r.passed for r in results), [r for r in results if not r.passed]
    assert "expert succeeds" in [r.name for r in results]


def test_remote_env_reports_refusals_clearly(servers):
    env = stepgym.make("stepgym/OpenEnv-v0", base_url=servers["strict"].url, api_key=KEY,
                       env_kwargs={"max_steps": 3})
    with pytest.raises(stepgym.StepgymError, match="not allowed"):
        env.reset(seed=0)
    env.close()
    with pytest.raises(stepgym.StepgymError, match="base_url"):
        stepgym.make("stepgym/OpenEnv-v0")
    nobody = stepgym.make("stepgym/OpenEnv-v0", base_url="http://127.0.0.1:9", reset_timeout_s=0.5,
                          connect_timeout_s=0.5)
    with pytest.raises(stepgym.StepgymError, match="no env server answered"):
        nobody.reset(seed=0)


def test_pool_survives_a_killed_server(servers):
    urls = [servers["doomed"].url, servers["open"].url]
    envs = [stepgym.make("stepgym/OpenEnvPool-v0", urls=urls, step_timeout_s=5, retry_dead_after_s=60)
            for _ in range(2)]
    for i, env in enumerate(envs):
        env.reset(seed=i)
    assert {env.unwrapped.server_url for env in envs} == set(urls)  # episodes are spread
    victim = next(env for env in envs if env.unwrapped.server_url == servers["doomed"].url)
    survivor = next(env for env in envs if env is not victim)
    victim.step(victim.unwrapped.expert_action())
    os.kill(servers["doomed"].proc.pid, signal.SIGKILL)
    servers["doomed"].proc.wait(timeout=10)
    obs, reward, terminated, truncated, info = victim.step("Action: lookup[X, population]")
    assert truncated is True and terminated is False and reward == 0.0
    assert info["server_error"] is True and servers["doomed"].url in info["error"] and "cut short" in obs
    # the next episode runs on the remaining server, to success
    victim.reset(seed=5)
    assert victim.unwrapped.server_url == servers["open"].url
    for env in (victim, survivor):
        for _ in range(10):
            obs, reward, terminated, truncated, info = env.step(env.unwrapped.expert_action())
            if terminated or truncated:
                break
        assert terminated and info["success"] is True
        env.close()


def test_a_hung_server_times_out_into_a_truncated_episode(servers):
    env = stepgym.make("stepgym/OpenEnv-v0", base_url=servers["open"].url, step_timeout_s=0.5)
    env.reset(seed=0)
    os.kill(servers["open"].proc.pid, signal.SIGSTOP)
    try:
        obs, reward, terminated, truncated, info = env.step("Action: lookup[X, population]")
    finally:
        os.kill(servers["open"].proc.pid, signal.SIGCONT)
    assert truncated is True and info["server_error"] is True and "Timeout" in info["error"]
    env.close()


def test_any_openenv_server_with_its_own_action_fields():
    """An echo env written against openenv-core's server API, served by openenv-core itself."""
    from openenv.core.env_server.http_server import create_fastapi_app
    from openenv.core.env_server.interfaces import Environment
    from openenv.core.env_server.types import Action, Observation, State
    from pydantic import Field

    from stepgym.serving import serve_in_thread

    class EchoAction(Action):
        message: str = Field(...)

    class EchoObservation(Observation):
        echoed: str = ""

    class EchoEnv(Environment):
        SUPPORTS_CONCURRENT_SESSIONS = True

        def __init__(self) -> None:
            super().__init__()
            self._state = State()

        def reset(self, seed=None, episode_id=None, **kw):
            self._state = State(episode_id=episode_id, step_count=0)
            return EchoObservation(echoed=f"ready (seed {seed})")

        def step(self, action, timeout_s=None, **kw):
            self._state.step_count += 1
            return EchoObservation(echoed=action.message.upper(), reward=float(len(action.message)),
                                   done=self._state.step_count >= 2)

        @property
        def state(self):
            return self._state

    app = create_fastapi_app(EchoEnv, EchoAction, EchoObservation, max_concurrent_envs=2)
    with serve_in_thread(app) as server:
        env = stepgym.make("stepgym/OpenEnv-v0", base_url=f"http://127.0.0.1:{server.port}",
                           action_field="message", observation_field="echoed")
        obs, info = env.reset(seed=7)
        assert obs == "ready (seed 7)" and info["action_valid"] is True
        obs, reward, terminated, truncated, info = env.step("hi")
        assert (obs, reward, terminated) == ("HI", 2.0, False)
        obs, reward, terminated, truncated, info = env.step("abc")
        assert (obs, reward, terminated, truncated, info["success"]) == ("ABC", 3.0, True, False, True)
        env.close()
