"""OpenAIAgent against the real OpenAI-compatible server (stepgym.serving) on 127.0.0.1."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

import stepgym
from stepgym.actions import parse_tool_call
from stepgym.agents import APIError, OpenAIAgent, TransformersAgent, make_agent, tool_calls_to_action
from stepgym.serving import CallableBackend, RequestError, TransformersBackend, create_app, serve_in_thread

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def tiny_server(tiny):
    model, tok = tiny
    backend = TransformersBackend(TransformersAgent(model, tok, max_new_tokens=8, temperature=0.0, stop=()))
    with serve_in_thread(create_app(backend, "tiny")) as server:
        yield server


def _post(url: str, body, headers=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_agent_plays_tooluse_through_the_server(tiny_server):
    agent = make_agent(f"openai:tiny@{tiny_server.base_url}", temperature=0.0, max_tokens=8)
    env = stepgym.make("stepgym/ToolUse-v0", max_steps=2)
    obs, info = env.reset(seed=0)
    agent.reset()
    done = False
    while not done:
        action = agent.act(obs, info)
        assert isinstance(action, str)
        assert agent.last_token_counts is not None and 1 <= agent.last_token_counts[0] <= 8
        obs, reward, terminated, truncated, info = env.step(action)
        done = terminated or truncated
    # the chat went to the server turn by turn: user, assistant, user, assistant
    assert [m["role"] for m in agent.memory[0]] == ["user", "assistant", "user", "assistant"]
    assert agent.list_models() == ["tiny"]


def test_greedy_server_output_matches_the_local_model(tiny_server, tiny):
    model, tok = tiny
    local = TransformersAgent(model, tok, max_new_tokens=8, temperature=0.0, stop=(), history=False)
    remote = OpenAIAgent("tiny", tiny_server.base_url, temperature=0.0, max_tokens=8, history=False, tools="none")
    assert remote.act("What is 2 + 3?", {}) == local.act("What is 2 + 3?", {})


def test_batch_requests_run_concurrently_and_keep_order(tiny_server):
    agent = OpenAIAgent("tiny", tiny_server.base_url, temperature=0.0, max_tokens=4, history=False, concurrency=4)
    prompts = [f"prompt number {i}" for i in range(4)]
    batched = agent.act_batch(prompts, [{}] * 4)
    single = [agent.act(p, {}) for p in prompts]
    assert batched == single


@pytest.mark.parametrize(
    "body, status, param, code",
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, 400, "model", "missing_required_parameter"),
        ({"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}, 404, "model", "model_not_found"),
        ({"model": "tiny"}, 400, "messages", "missing_required_parameter"),
        ({"model": "tiny", "messages": []}, 400, "messages", "empty_array"),
        ({"model": "tiny", "messages": "hi"}, 400, "messages", "invalid_type"),
        ({"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role", "invalid_value"),
        ({"model": "tiny", "messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content", "invalid_type"),
        (
            {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": 2.5},
            400,
            "temperature",
            "decimal_above_max_value",
        ),
        (
            {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            400,
            "max_tokens",
            "integer_below_min_value",
        ),
        (
            {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "n": 99},
            400,
            "n",
            "integer_above_max_value",
        ),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stop": 3}, 400, "stop", "invalid_value"),
        (
            {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "tools": [{"x": 1}]},
            400,
            "tools",
            "invalid_value",
        ),
        (
            {"model": "tiny", "messages": [{"role": "user", "content": "x " * 3000}], "max_tokens": 4000},
            400,
            "messages",
            "context_length_exceeded",
        ),
    ],
)
def test_bad_requests_get_openai_status_codes_and_error_bodies(tiny_server, body, status, param, code):
    got, payload = _post(tiny_server.base_url + "/chat/completions", body)
    assert got == status
    err = payload["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert (err["param"], err["code"], err["type"]) == (param, code, "invalid_request_error")
    assert err["message"]


def test_unparseable_json_unknown_routes_and_wrong_methods(tiny_server):
    status, payload = _post(tiny_server.base_url + "/chat/completions", b"{not json")
    assert status == 400 and "parse the JSON body" in payload["error"]["message"]
    status, payload = _post(tiny_server.base_url + "/completions/nope", {})
    assert status == 404 and payload["error"]["type"] == "invalid_request_error"
    try:
        urllib.request.urlopen(tiny_server.base_url + "/chat/completions", timeout=10)
        raise AssertionError("GET must fail")
    except urllib.error.HTTPError as e:
        assert e.code == 405 and "error" in json.loads(e.read())


def test_successful_response_shape_n_and_stream(tiny_server):
    status, out = _post(
        tiny_server.base_url + "/chat/completions",
        {
            "model": "tiny",
            "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
            "max_tokens": 3,
            "n": 2,
            "temperature": 1.0,
        },
    )
    assert status == 200 and out["object"] == "chat.completion" and out["id"].startswith("chatcmpl-")
    assert [c["index"] for c in out["choices"]] == [0, 1]
    assert out["usage"]["completion_tokens"] <= 6
    assert out["usage"]["total_tokens"] == out["usage"]["prompt_tokens"] + out["usage"]["completion_tokens"]
    req = urllib.request.Request(
        tiny_server.base_url + "/chat/completions",
        data=json.dumps(
            {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True}
        ).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in r.read().decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


# -- tool calls, retries and timeouts, served by a rule-based backend (the same real server) -----------


def test_tool_calls_round_trip_to_the_envs_action_format():
    env = stepgym.make("stepgym/ToolUse-v0")
    obs, info = env.reset(seed=1)
    expert = env.unwrapped.expert_action()
    seen: list[list[dict]] = []

    def policy(messages):
        seen.append(messages)
        return "Let me look. " + expert

    with serve_in_thread(create_app(CallableBackend(policy), "rules")) as server:
        status, out = _post(
            server.base_url + "/chat/completions",
            {
                "model": "rules",
                "messages": [{"role": "user", "content": obs}],
                "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}],
            },
        )
        msg = out["choices"][0]["message"]
        assert out["choices"][0]["finish_reason"] == "tool_calls"
        assert msg["content"] == "Let me look." and msg["tool_calls"][0]["type"] == "function"
        assert isinstance(msg["tool_calls"][0]["function"]["arguments"], str)  # JSON-encoded, as OpenAI sends it

        agent = OpenAIAgent("rules", server.base_url)
        action = agent.act(obs, info)
        call, want = parse_tool_call(action), parse_tool_call(expert)
        assert (call.name, call.arguments) == (want.name, want.arguments)
        _, _, _, _, step_info = env.step(action)
        assert step_info["action_valid"] is True
        # the earlier assistant tool call goes back to the server as Hermes text
        agent.act("next observation", {})
        assert "<tool_call>" in seen[-1][1]["content"]


def test_tool_calls_to_action_keeps_malformed_arguments_visible():
    action = tool_calls_to_action({"content": None, "tool_calls": [{"function": {"name": "f", "arguments": "{bad"}}]})
    assert action.startswith("<tool_call>") and "{bad" in action


def test_transient_errors_are_retried_with_backoff():
    calls = {"n": 0}

    def flaky(messages):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise RequestError(503, "overloaded", type="server_error")
        return "ok"

    with serve_in_thread(create_app(CallableBackend(flaky), "flaky")) as server:
        agent = OpenAIAgent("flaky", server.base_url, backoff_s=0.01, max_retries=3)
        assert agent.act("hi", {}) == "ok"
        assert agent.attempts == 3
        calls["n"] = 0  # fails twice again; one retry is not enough
        agent = OpenAIAgent("flaky", server.base_url, backoff_s=0.01, max_retries=1)
        with pytest.raises(APIError, match="after 2 attempt"):
            agent.act("hi", {})


def test_client_errors_are_not_retried_and_carry_the_server_message():
    with serve_in_thread(create_app(CallableBackend(lambda m: "x"), "m"), port=0) as server:
        agent = OpenAIAgent("other", server.base_url, backoff_s=0.01)
        with pytest.raises(APIError, match="does not exist") as exc:
            agent.act("hi", {})
        assert exc.value.status == 404 and agent.attempts == 1


def test_api_key_is_sent_and_checked():
    with serve_in_thread(create_app(CallableBackend(lambda m: "secret ok"), "m", api_key="s3cret")) as server:
        assert OpenAIAgent("m", server.base_url, api_key="s3cret").act("hi", {}) == "secret ok"
        with pytest.raises(APIError) as exc:
            OpenAIAgent("m", server.base_url, api_key="wrong").act("hi", {})
        assert exc.value.status == 401 and exc.value.body["error"]["code"] == "invalid_api_key"


def test_timeouts_and_refused_connections_raise_after_retries():
    def slow(messages):
        time.sleep(1.0)
        return "late"

    with serve_in_thread(create_app(CallableBackend(slow), "slow")) as server:
        agent = OpenAIAgent("slow", server.base_url, timeout_s=0.2, max_retries=0)
        with pytest.raises(APIError, match="timed out|TimeoutError|timeout"):
            agent.act("hi", {})
        url = server.base_url
    time.sleep(0.1)
    agent = OpenAIAgent("slow", url, max_retries=1, backoff_s=0.01, timeout_s=2)
    with pytest.raises(APIError, match="failed after 2 attempt"):
        agent.act("hi", {})


def test_request_tools_reach_the_chat_template(tiny):
    import copy

    model, tok = tiny
    tok = copy.deepcopy(tok)
    # A template that lists the tools' names, as tool-aware templates (Qwen, Llama 3.1) do.
    tok.chat_template = (
        "{% if tools %}TOOLS:{% for t in tools %} {{ t.function.name }}{% endfor %}\n{% endif %}" + tok.chat_template
    )
    agent = TransformersAgent(model, tok, max_new_tokens=2, temperature=0.0, stop=())
    messages = [{"role": "user", "content": "hi"}]
    tools = [{"type": "function", "function": {"name": "lookup_population", "parameters": {"type": "object"}}}]
    assert "TOOLS: lookup_population" in agent.render(messages, tools=tools)
    with serve_in_thread(create_app(TransformersBackend(agent), "t")) as server:
        _, plain = _post(server.base_url + "/chat/completions", {"model": "t", "messages": messages})
        _, with_tools = _post(
            server.base_url + "/chat/completions", {"model": "t", "messages": messages, "tools": tools}
        )
        _, tools_off = _post(
            server.base_url + "/chat/completions",
            {"model": "t", "messages": messages, "tools": tools, "tool_choice": "none"},
        )
    assert with_tools["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"]
    assert tools_off["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"]
