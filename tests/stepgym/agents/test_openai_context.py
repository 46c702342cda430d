"""The OpenAI agent and `stepgym eval` when the server says no: prompts longer than its context,
tools it does not support, one episode's requests failing. Real HTTP servers on 127.0.0.1:
stepgym's own app (stepgym.serving) over rule-based backends, and a few lines of stdlib HTTP
server where a response has to look like vLLM's or llama.cpp's."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import stepgym
from stepgym.agents import APIError, ExpertAgent, OpenAIAgent
from stepgym.agents.evaluate import evaluate
from stepgym.agents.openai import _tools_rejected, context_overflow
from stepgym.cli import main
from stepgym.serving import Completion, RequestError, create_app, serve_in_thread

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

ANSWER = '<tool_call>{"name": "answer", "arguments": {"text": "42"}}</tool_call>'


@pytest.mark.parametrize(
    "body, context, prompt",
    [
        # OpenAI, older vLLM, stepgym serve
        ({"error": {"message": "This model's maximum context length is 4096 tokens. However, you requested "
                               "4723 tokens (4211 in the messages, 512 in the completion). Please reduce the "
                               "length of the messages or completion.", "code": "context_length_exceeded"}},
         4096, 4211),
        # vLLM
        ({"error": {"message": "This model's maximum context length is 2048 tokens. However, your request has "
                               "2100 input tokens. Please reduce the length of the input messages.",
                    "type": "BadRequestError", "code": 400}}, 2048, 2100),
        ({"error": {"message": "'max_tokens' or 'max_completion_tokens' is too large: 512. This model's maximum "
                               "context length is 2048 tokens and your request has 1600 input tokens "
                               "(512 > 2048 - 1600).", "type": "BadRequestError", "code": 400}}, 2048, 1600),
        # OpenAI
        ({"error": {"message": "This model's maximum context length is 8192 tokens. However, your messages "
                               "resulted in 8500 tokens. Please reduce the length of the messages."}}, 8192, 8500),
        # llama.cpp's server, older and newer messages
        ({"error": {"code": 400, "message": "the request exceeds the available context size, try increasing it",
                    "type": "exceed_context_size_error", "n_prompt_tokens": 2100, "n_ctx": 2048}}, 2048, 2100),
        ({"error": {"code": 400, "message": "request (4476 tokens) exceeds the available context size "
                                            "(4096 tokens)", "type": "exceed_context_size_error"}}, 4096, 4476),
        # SGLang
        ({"error": {"message": "The input (5000 tokens) is longer than the model's context length (4096 tokens)."}},
         4096, 5000),
        # a server that says only that it is too long
        ({"error": {"message": "prompt is too long"}}, None, None),
    ],
)
def test_context_errors_of_known_servers_are_read(body, context, prompt):
    found = context_overflow(400, body)
    assert found is not None and (found.context, found.prompt_tokens) == (context, prompt)
    assert not _tools_rejected(400, body)


@pytest.mark.parametrize(
    "body, tools",
    [
        ({"error": {"message": '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser '
                               "to be set", "type": "BadRequestError", "code": 400}}, True),
        ({"error": {"message": "Invalid 'tools': expected an array", "param": "tools"}}, True),
        ({"error": {"message": "tools param requires --jinja flag", "type": "invalid_request_error"}}, True),
        ({"error": {"message": "Invalid 'temperature': decimal above maximum value.", "param": "temperature"}}, False),
        ({"error": {"message": "This model's maximum context length is 4096 tokens (tools included)."}}, False),
    ],
)
def test_tools_are_blamed_only_when_the_error_names_them(body, tools):
    assert _tools_rejected(400, body) is tools


class _Backend:
    """A stepgym.serving backend from a function ``(messages, tools) -> text`` (it may raise RequestError)."""

    def __init__(self, fn):
        self.fn = fn
        self.requests = []

    def complete(self, messages, *, tools, max_tokens, temperature, top_p, stop, n):
        self.requests.append({"messages": messages, "tools": tools, "max_tokens": max_tokens})
        text = self.fn(messages, tools)
        return [Completion(text, 10, 3, "stop")]


def _tooluse_obs(seed: int = 0) -> str:
    env = stepgym.make("stepgym/ToolUse-v0")
    return env.reset(seed=seed)[0]


def test_a_server_without_tool_support_turns_tools_off_and_other_400s_do_not():
    def no_tools(messages, tools):
        if tools:
            raise RequestError(400, '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser')
        return "ok"

    backend = _Backend(no_tools)
    with serve_in_thread(create_app(backend, "m")) as server:
        agent = OpenAIAgent("m", server.base_url, backoff_s=0.01)
        assert agent.act(_tooluse_obs(), {}) == "ok"
        assert agent.tools_mode == "none" and [bool(r["tools"]) for r in backend.requests] == [True, False]
        agent.act("next", {})
        assert backend.requests[-1]["tools"] is None

    def strict(messages, tools):
        raise RequestError(400, "Invalid 'temperature': decimal above maximum value.", param="temperature")

    with serve_in_thread(create_app(_Backend(strict), "m")) as server:
        agent = OpenAIAgent("m", server.base_url, backoff_s=0.01)
        with pytest.raises(APIError, match="temperature"):
            agent.act(_tooluse_obs(), {})
        assert agent.tools_mode == "auto"


def test_a_context_400_keeps_tools_and_the_retry_fits():
    # stepgym serve's own context error, for a server of 900 tokens that counts characters/4
    def small(messages, tools):
        prompt = (sum(len(m["content"]) for m in messages) + len(json.dumps(tools))) // 4
        if prompt + 8 > 900:
            raise RequestError(
                400,
                f"This model's maximum context length is 900 tokens. However, you requested {prompt + 8} tokens "
                f"({prompt} in the messages, 8 in the completion). Please reduce the length of the messages or "
                "completion.",
                param="messages",
                code="context_length_exceeded",
            )
        return "thinking"

    backend = _Backend(small)
    with serve_in_thread(create_app(backend, "m")) as server:
        agent = OpenAIAgent("m", server.base_url, max_tokens=8, backoff_s=0.01)
        obs = _tooluse_obs()
        for i in range(16):  # the chat passes 900 tokens at step 12
            if i:
                obs = f"Invalid action {i}: no tool call found. Write one tool call per step as <tool_call>...</tool_call>."
            assert agent.act(obs, {}) == "thinking"
        assert agent.context == 900 and agent.context_retries == 1 and agent.tools_mode == "auto"
        assert all(r["tools"] for r in backend.requests)
        last = backend.requests[-1]["messages"]
        assert last[0]["content"].startswith("Task:") and "earlier step(s) omitted" in last[0]["content"]
        assert last[-1]["content"] == obs and last[-2]["role"] == "assistant" and 4 < len(last) < 31


class _FakeServer:
    """/v1/models and /v1/chat/completions answered by ``models()`` and ``chat(body) -> (status, payload)``."""

    def __init__(self, models, chat):
        outer = self
        self.bodies = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, models) if self.path == "/v1/models" else self._send(404, {"error": "no"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.bodies.append(body)
                self._send(*chat(body))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _reply(text="ok", prompt_tokens=None):
    out = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
    if prompt_tokens is not None:
        out["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": 2, "total_tokens": prompt_tokens + 2}
    return out


def _chars(body):
    return sum(len(m["content"]) for m in body["messages"]) + len(json.dumps(body.get("tools") or ""))


def test_context_from_vllm_models_metadata_fits_before_any_error():
    models = {"object": "list", "data": [{"id": "m", "object": "model", "max_model_len": 700}]}
    with _FakeServer(models, lambda body: (200, _reply("a", _chars(body) // 4))) as server:
        agent = OpenAIAgent("m", server.base_url, max_tokens=100, tools="none")
        obs = _tooluse_obs()
        for _ in range(12):
            agent.act(obs, {})
            obs = "Invalid action: no tool call found. Write one tool call per step as <tool_call>...</tool_call>."
        assert agent.context == 700 and agent.context_retries == 0 and agent.turns_dropped > 0
        last = server.bodies[-1]
        assert last["max_tokens"] == 100 and _chars(last) // 4 + 100 <= 700
        assert len(last["messages"]) < 2 * 12 and last["messages"][0]["content"].startswith("Task:")


def test_llamacpp_context_error_body_is_learned_even_when_models_metadata_says_more():
    # llama.cpp lists the training context (n_ctx_train) but was started with -c 1400
    models = {"object": "list", "data": [{"id": "m.gguf", "meta": {"n_ctx_train": 32768}}]}

    def chat(body):
        prompt = _chars(body) // 3
        if prompt + body.get("max_tokens", 0) > 1400:
            return 400, {"error": {"code": 400, "message": "the request exceeds the available context size, "
                                   "try increasing it", "type": "exceed_context_size_error",
                                   "n_prompt_tokens": prompt, "n_ctx": 1400}}
        return 200, _reply("b", prompt)

    with _FakeServer(models, chat) as server:
        agent = OpenAIAgent("m", server.base_url, max_tokens=64, tools="auto")
        obs = _tooluse_obs()
        for _ in range(20):  # the chat passes 1400 tokens at step 16
            assert agent.act(obs, {}) == "b"
            obs = "Invalid action: no tool call found. Write one tool call per step as <tool_call>...</tool_call>."
        assert agent.context == 1400 and agent.context_retries == 1 and agent.tools_mode == "auto"
        last = server.bodies[-1]
        assert last["tools"] and _chars(last) // 3 + last["max_tokens"] <= 1400


def test_max_context_argument_needs_no_probe_and_no_error():
    with _FakeServer({"data": []}, lambda body: (200, _reply())) as server:
        agent = OpenAIAgent("m", server.base_url, max_context=400, max_tokens=32, tools="none")
        agent.memory[0] = [{"role": "user", "content": "Task: " + "x" * 800}]
        for i in range(10):
            agent.memory[0] += [{"role": "assistant", "content": f"a{i}"}, {"role": "user", "content": "y" * 200}]
        agent.act("latest", {})
        sent = server.bodies[-1]["messages"]
        assert sent[-1]["content"] == "latest" and len(sent) < 10
        assert agent.context == 400


# -- one episode's error ends that episode only -------------------------------------------------------


class _FlakyExpert(ExpertAgent):
    """The expert, except that the first episode played in ``bad_slot`` raises from its second step on."""

    def __init__(self, bad_slot):
        super().__init__()
        self.bad_slot, self.resets, self.steps = bad_slot, 0, 0

    def reset(self, slot=None):
        super().reset(slot)
        if slot == self.bad_slot:
            self.resets += 1

    def _act_one(self, observation, info, slot):
        if slot == self.bad_slot and self.resets == 0:
            self.steps += 1
            if self.steps >= 2:
                raise RuntimeError("boom")
        return super()._act_one(observation, info, slot)


@pytest.mark.parametrize("num_envs, failing", [(1, 0), (2, 1)])
def test_an_agent_exception_is_recorded_and_the_other_episodes_complete(num_envs, failing, tmp_path):
    agent = _FlakyExpert(bad_slot=failing)
    res = evaluate("stepgym/ToolUse-v0", agent, episodes=4, num_envs=num_envs, record_dir=tmp_path)
    assert [e.episode for e in res.episodes] == [0, 1, 2, 3]
    failed = [e for e in res.episodes if e.error is not None]
    assert [(e.episode, e.error, e.success, e.steps) for e in failed] == [(failing, "RuntimeError: boom", False, 1)]
    assert all(e.success for e in res.episodes if e.error is None)
    assert res.errors == 1 and res.success_rate == 0.75
    summary = res.to_dict()
    assert summary["errors"] == 1 and [e["error"] for e in summary["per_episode"]].count("RuntimeError: boom") == 1
    # the recording holds the steps that were played, the failed episode's first step included
    from stepgym.wrappers.recording import read_trajectories

    (path,) = tmp_path.iterdir()
    assert sorted(len(ep["steps"]) for ep in read_trajectories(path)) == [1, 2, 2, 2]
    with pytest.raises(RuntimeError, match="boom"):
        evaluate("stepgym/ToolUse-v0", _FlakyExpert(1), episodes=4, num_envs=2, on_error="raise")


def test_eval_cli_goes_on_when_one_episodes_requests_fail(tmp_path, capsys):
    poisoned = _tooluse_obs(seed=1).splitlines()[0]

    def policy(messages, tools):
        if poisoned in messages[0]["content"]:
            raise RequestError(400, "This prompt was flagged by the content filter.", code="content_filter")
        return ANSWER

    out = tmp_path / "e.json"
    with serve_in_thread(create_app(_Backend(policy), "m")) as server:
        rc = main(["eval", "--env", "stepgym/ToolUse-v0", "--agent", f"openai:m@{server.base_url}",
                   "--episodes", "3", "--num-envs", "3", "--json", str(out), "--no-progress"])
        assert rc == 0
        text = capsys.readouterr().out
        assert "episode 1 (seed 1) failed" in text and "content filter" in text
        assert "1 episode(s) ended on an agent error" in text and "errors" in text
        (res,) = json.loads(out.read_text())["results"]
        assert res["errors"] == 1 and res["episodes"] == 3
        assert [e["error"] is not None for e in res["per_episode"]] == [False, True, False]
        assert "HTTP 400" in res["per_episode"][1]["error"]
        assert [e["steps"] for e in res["per_episode"]] == [1, 0, 1]

    def down(messages, tools):
        raise RequestError(401, "Incorrect API key provided.", code="invalid_api_key")

    with serve_in_thread(create_app(_Backend(down), "m")) as server:
        rc = main(["eval", "--env", "stepgym/ToolUse-v0", "--agent", f"openai:m@{server.base_url}",
                   "--episodes", "2", "--num-envs", "2"])
    assert rc == 1 and "nothing was evaluated" in capsys.readouterr().out
