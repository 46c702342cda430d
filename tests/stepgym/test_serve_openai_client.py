"""`stepgym serve` as a real process on 127.0.0.1, queried with the official `openai` client.

Two servers: ``--model tiny`` (random weights: text only, never stops before
``max_tokens``) and a tiny policy behaviour-cloned for a few seconds on four ToolUse
episodes (greedy, it writes ``<tool_call>{"name": "lookup", ...}</tool_call>``), so that
tool calls come back parsed, plain and streamed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import stepgym
from tests.stepgym.serve_helpers import Server

openai = pytest.importorskip("openai")
pytest.importorskip("torch")
pytest.importorskip("uvicorn")

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "an attribute of an entity",
            "parameters": {
                "type": "object",
                "properties": {"entity": {"type": "string"}, "attribute": {"type": "string"}},
                "required": ["entity", "attribute"],
            },
        },
    }
]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """(tiny, tool policy): both servers load while the policy trains, then serve."""
    tiny = Server("--model", "tiny", "--name", "tiny-policy", "--max-new-tokens", "8", "--temperature", "0")
    policy_dir = Path(tmp_path_factory.mktemp("policy"))
    sft = subprocess.run(
        [
            sys.executable,
            "-m",
            "stepgym.cli",
            "sft",
            "--model",
            "tiny",
            "--env",
            "stepgym/ToolUse-v0",
            "--env-kwargs",
            '{"tools": ["lookup"], "compact": true}',
            "--episodes",
            "4",
            "--epochs",
            "60",
            "--lr",
            "3e-3",
            "--threads",
            "1",
            "--no-progress",
            "--out",
            str(policy_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sft.returncode == 0, sft.stdout + sft.stderr
    tool = Server("--model", f"checkpoint:{policy_dir}", "--name", "policy", "--max-new-tokens", "48")
    try:
        yield tiny.wait(), tool.wait()
    finally:
        tiny.stop()
        tool.stop()


@pytest.fixture(scope="module")
def tiny(servers):
    return servers[0]


@pytest.fixture(scope="module")
def tool(servers):
    return servers[1]


def _task() -> list[dict[str, str]]:
    env = stepgym.make("stepgym/ToolUse-v0", tools=["lookup"], compact=True)
    obs, _ = env.reset(seed=0)
    return [{"role": "user", "content": obs}]


# -- models, errors ------------------------------------------------------------------------------


def test_models_list_the_name_and_the_startup_line_prints_it(tiny, tool):
    assert [m.id for m in tiny.client().models.list()] == ["tiny-policy"]
    assert tiny.client().models.retrieve("tiny-policy").id == "tiny-policy"
    assert [m.id for m in tool.client().models.list()] == ["policy"]
    assert (tiny.name, tool.name) == ("tiny-policy", "policy")
    assert any(f"--agent 'openai:policy@{tool.url}'" in ln for ln in tool.lines)
    # a policy folder keeps its trained stop string (--max-new-tokens 48 overrides its 64); a base model has none
    assert any("default max_tokens 48; stop strings: '</tool_call>'" in ln for ln in tool.lines), tool.lines
    assert any("default max_tokens 8; stop strings: none" in ln for ln in tiny.lines), tiny.lines


def test_an_unknown_model_is_an_openai_not_found_error(tiny):
    client = tiny.client()
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="policy", messages=[{"role": "user", "content": "hi"}])
    err = exc.value
    assert err.status_code == 404 and err.code == "model_not_found" and err.param == "model"
    assert "`policy` does not exist" in err.message and "`tiny-policy`" in err.message
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("policy")
    with pytest.raises(openai.NotFoundError):  # also when streaming
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}], stream=True)
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="tiny-policy", messages=[{"role": "user", "content": "hi"}], top_p=5)
    assert bad.value.param == "top_p"
    time.sleep(0.2)
    not_found = [ln for ln in tiny.lines if " POST /v1/chat/completions 404 " in ln]
    assert any("model_not_found: The model `policy`" in ln for ln in not_found), tiny.lines


# -- plain and streamed text ---------------------------------------------------------------------


def test_plain_chat_and_stream_without_tools_agree(tiny):
    client = tiny.client()
    msgs = [{"role": "user", "content": "What is 2 + 3?"}]
    r = client.chat.completions.create(model="tiny-policy", messages=msgs, temperature=0, max_tokens=6)
    (choice,) = r.choices
    assert r.object == "chat.completion" and r.model == "tiny-policy"
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "length" and r.usage.completion_tokens == 6  # random weights never stop early
    assert r.usage.total_tokens == r.usage.prompt_tokens + 6

    chunks = list(
        client.chat.completions.create(
            model="tiny-policy",
            messages=msgs,
            temperature=0,
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    body, usage = chunks[:-1], chunks[-1]
    assert body[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in body) == choice.message.content
    assert [c.choices[0].finish_reason for c in body] == [None] * (len(body) - 1) + ["length"]
    assert all(c.usage is None for c in body)
    assert usage.choices == [] and usage.usage.completion_tokens == 6
    assert usage.usage.prompt_tokens == r.usage.prompt_tokens

    # the helper that accumulates a stream, without usage
    # (get_final_completion() raises LengthFinishReasonError on "length" by design; the snapshot does not)
    with client.chat.completions.stream(model="tiny-policy", messages=msgs, temperature=0, max_tokens=6) as s:
        events = list(s)
        final = s.current_completion_snapshot
    done = next(e for e in events if e.type == "content.done")
    assert done.content == choice.message.content == final.choices[0].message.content
    assert final.choices[0].finish_reason == "length"


def test_the_raw_event_stream_ends_with_done(tiny):
    req = urllib.request.Request(
        tiny.url + "/chat/completions",
        data=json.dumps(
            {"model": "tiny-policy", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "stream": True}
        ).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [ln for ln in r.read().decode().split("\n\n") if ln]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert all("usage" not in c for c in chunks)  # only with stream_options.include_usage
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}


# -- tool calls ----------------------------------------------------------------------------------


def test_chat_with_tools_returns_parsed_tool_calls(tool):
    client = tool.client()
    r = client.chat.completions.create(model="policy", messages=_task(), tools=TOOLS, temperature=0)
    (choice,) = r.choices
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "lookup"
    assert set(json.loads(call.function.arguments)) == {"entity", "attribute"}
    assert not choice.message.content

    # without tools (or tool_choice="none") the same text comes back as content
    for kw in ({}, {"tools": TOOLS, "tool_choice": "none"}):
        plain = client.chat.completions.create(model="policy", messages=_task(), temperature=0, **kw)
        assert plain.choices[0].finish_reason == "stop" and plain.choices[0].message.tool_calls is None
        assert plain.choices[0].message.content.startswith('<tool_call>{"name": "lookup"')


def test_streamed_tool_calls_through_the_stream_helper(tool):
    client = tool.client()
    expected = client.chat.completions.create(model="policy", messages=_task(), tools=TOOLS, temperature=0)
    want = expected.choices[0].message.tool_calls[0].function
    with client.chat.completions.stream(
        model="policy", messages=_task(), tools=TOOLS, temperature=0, stream_options={"include_usage": True}
    ) as s:
        events = list(s)
        final = s.get_final_completion()
    kinds = [e.type for e in events]
    assert "tool_calls.function.arguments.delta" in kinds and "tool_calls.function.arguments.done" in kinds
    done = next(e for e in events if e.type == "tool_calls.function.arguments.done")
    assert (done.index, done.name, done.arguments) == (0, "lookup", want.arguments)
    (choice,) = final.choices
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert (call.function.name, call.function.arguments) == (want.name, want.arguments)
    assert final.usage.completion_tokens == expected.usage.completion_tokens


def test_streamed_tool_calls_reassemble_by_index(tool):
    client = tool.client()
    stream = client.chat.completions.create(
        model="policy", messages=_task(), tools=TOOLS, temperature=0, stream=True
    )
    calls: dict[int, dict] = {}
    finish = []
    for chunk in stream:
        for ch in chunk.choices:
            finish.append(ch.finish_reason)
            for d in ch.delta.tool_calls or []:
                assert isinstance(d.index, int)
                slot = calls.setdefault(d.index, {"id": None, "type": None, "name": "", "arguments": ""})
                if d.id:
                    assert slot["id"] is None  # id, type and name come once, in the call's first delta
                    slot.update(id=d.id, type=d.type, name=d.function.name)
                else:
                    assert slot["id"] is not None and d.function.name is None
                slot["arguments"] += d.function.arguments or ""
    assert finish[-1] == "tool_calls" and set(finish[:-1]) == {None}
    assert list(calls) == [0]
    call = calls[0]
    assert call["id"].startswith("call_") and call["type"] == "function" and call["name"] == "lookup"
    assert json.loads(call["arguments"])["attribute"]


# -- concurrency and logging ---------------------------------------------------------------------


def test_requests_are_accepted_and_batched_while_a_generation_runs(tiny):
    client = tiny.client()
    msgs = [{"role": "user", "content": "hi"}]
    before = len(tiny.request_lines())
    results: dict[str, object] = {}

    def ask(key: str, max_tokens: int) -> None:
        r = client.chat.completions.create(model="tiny-policy", messages=msgs, temperature=0, max_tokens=max_tokens)
        results[key] = r.usage.completion_tokens
        finished[key] = time.monotonic()

    finished: dict[str, float] = {}
    slow = threading.Thread(target=ask, args=("slow", 2048))  # about 1-2 s on one CPU thread
    slow.start()
    time.sleep(0.3)  # the slow generation is running
    t0 = time.monotonic()
    assert [m.id for m in client.models.list()] == ["tiny-policy"]
    listed_at = time.monotonic()
    quick = [threading.Thread(target=ask, args=(f"q{i}", 3)) for i in range(3)]
    quick_sent = time.monotonic()
    for t in quick:
        t.start()
    for t in [slow, *quick]:
        t.join(60)
    assert results == {"slow": 2048, "q0": 3, "q1": 3, "q2": 3}
    assert listed_at - t0 < 2.0
    # one line per request: the models list, then the four chat completions
    deadline = time.monotonic() + 5
    while len(tiny.request_lines()) < before + 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    new = tiny.request_lines()[before:]
    assert len(new) == 5, new
    assert sum(" GET /v1/models 200 " in ln for ln in new) == 1
    chats = [ln for ln in new if " POST /v1/chat/completions 200 " in ln]
    assert len(chats) == 4 and all(re.search(r"tokens \d+\+\d+  finish length  waited", ln) for ln in chats)
    if finished["slow"] - quick_sent > 0.5:  # (a fast machine may finish the slow one first)
        assert listed_at < finished["slow"]  # /v1/models answered while the model was busy
        # the three quick requests queued behind the slow one and shared one generate call
        assert sum("batch 3" in ln for ln in chats) == 3, chats
