"""The Agent protocol, callables as agents, specs, and reading tools from observations."""

from __future__ import annotations

import pytest

import stepgym
import stepgym.agents as agents_pkg
from stepgym.agents import (
    Agent,
    BaseAgent,
    CallableAgent,
    as_agent,
    chat_messages,
    make_agent,
    parse_tools,
)
from stepgym.errors import InvalidArgument


def test_every_public_name_imports():
    for name in agents_pkg.__all__:
        assert getattr(agents_pkg, name) is not None, name
    assert stepgym.agents is agents_pkg


def test_callable_agent_with_one_or_two_arguments():
    one = CallableAgent(lambda obs: obs.upper())
    two = CallableAgent(lambda obs, info: f"{obs}|{info['k']}")
    assert one.act("abc", {}) == "ABC"
    assert two.act("abc", {"k": 7}) == "abc|7"
    assert one.act_batch(["a", "b"], [{}, {}]) == ["A", "B"]
    assert isinstance(one, Agent)


def test_callable_agent_rejects_non_string_results():
    with pytest.raises(stepgym.StepgymError, match="must return a str"):
        CallableAgent(lambda obs: 42).act("x", {})


def test_as_agent_adapts_protocol_objects_without_slots():
    class Mine:
        name = "mine"

        def __init__(self):
            self.resets = 0

        def act(self, observation, info):
            return observation[::-1]

        def reset(self):
            self.resets += 1

    inner = Mine()
    agent = as_agent(inner)
    assert isinstance(agent, BaseAgent)
    assert agent.act_batch(["ab", "cd"], [{}, {}], slots=[3, 5]) == ["ba", "dc"]
    agent.reset()
    agent.reset(3)  # a per-slot reset does not reach a protocol agent without slots
    assert inner.resets == 1
    with pytest.raises(InvalidArgument, match="callable"):
        as_agent(42)


def test_act_batch_checks_lengths():
    agent = CallableAgent(lambda o: o)
    with pytest.raises(InvalidArgument, match="one info per observation"):
        agent.act_batch(["a", "b"], [{}])
    with pytest.raises(InvalidArgument, match="slots"):
        agent.act_batch(["a"], [{}], slots=[0, 1])


def test_parse_tools_reads_the_tooluse_tool_list():
    env = stepgym.make("stepgym/ToolUse-v0")
    obs, _ = env.reset(seed=0)
    tools = {t.name: t for t in parse_tools(obs)}
    assert {"search", "lookup", "calculator", "answer"} <= set(tools)
    assert set(tools["lookup"].parameters["properties"]) == {"entity", "attribute"}
    schema = tools["search"].openai_schema()
    assert schema["function"]["name"] == "search" and schema["type"] == "function"
    assert parse_tools("no tools here") == []


def test_chat_messages_prefers_rendered_messages():
    memory: list[dict] = []
    msgs = chat_messages(memory, "obs", {}, system_prompt="be brief")
    assert [m["role"] for m in msgs] == ["system", "user"] and memory == msgs
    rendered = [{"role": "user", "content": "from the wrapper"}]
    msgs = chat_messages([], "obs", {"messages": rendered})
    assert msgs == rendered


@pytest.mark.parametrize(
    "spec, match",
    [
        ("randm", "Did you mean 'random'"),
        ("hf", "needs a target"),
        ("checkpoint:", "missing the part after"),
        ("gpt:4", "unknown agent spec"),
    ],
)
def test_make_agent_bad_specs_say_how_to_fix(spec, match):
    with pytest.raises(InvalidArgument, match=match):
        make_agent(spec)


def test_make_agent_builds_each_plain_kind_and_passes_objects_through():
    env = stepgym.make("stepgym/ToolUse-v0")
    assert make_agent("random").name == "random"
    assert make_agent("expert", env=env).name == "expert"
    assert make_agent("human").name == "human"
    mine = CallableAgent(lambda o: o)
    assert make_agent(mine) is mine
    assert make_agent(lambda o: "x").act("y", {}) == "x"


def test_make_agent_openai_spec_splits_model_and_url(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    a = make_agent("openai:org/model-1@http://127.0.0.1:9/v1")
    assert (a.model, a.base_url) == ("org/model-1", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:1234/v1/")
    monkeypatch.setenv("OPENAI_API_KEY", "k-123")
    b = make_agent("openai:m")
    assert (b.base_url, b.api_key) == ("http://localhost:1234/v1", "k-123")


def test_importing_agents_and_their_commands_stays_light():
    import subprocess
    import sys

    code = (
        "import sys, stepgym.agents, stepgym.agents.evaluate, stepgym.commands.eval, stepgym.commands.serve, "
        "stepgym.serving; print(sorted(m for m in ('torch', 'transformers', 'fastapi', 'uvicorn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
