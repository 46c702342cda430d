"""TransformersAgent and CheckpointAgent on the tiny real causal LM."""

from __future__ import annotations

import pytest

import stepgym
from stepgym.agents import CheckpointAgent, TransformersAgent, make_agent, resolve_checkpoint
from stepgym.agents.hf import _cut_at_stop
from stepgym.errors import InvalidArgument, InvalidConfig

pytest.importorskip("torch")


def test_batched_generation_counts_tokens_and_keeps_one_chat_per_slot(tiny):
    model, tok = tiny
    agent = TransformersAgent(model, tok, max_new_tokens=6, temperature=1.0, seed=0, batch_size=2)
    env = stepgym.make("stepgym/ToolUse-v0")
    obs = [env.reset(seed=s)[0] for s in range(3)]
    actions = agent.act_batch(obs, [{}, {}, {}], slots=[0, 4, 7])
    assert len(actions) == 3 and all(isinstance(a, str) for a in actions)
    assert agent.last_token_counts is not None and all(1 <= n <= 6 for n in agent.last_token_counts)
    assert sorted(agent.memory) == [0, 4, 7]
    assert [m["role"] for m in agent.memory[4]] == ["user", "assistant"]
    assert agent.memory[4][0]["content"] == obs[1] and agent.memory[4][1]["content"] == actions[1]
    agent.act_batch(["tool result"], [{}], slots=[4])
    assert [m["role"] for m in agent.memory[4]] == ["user", "assistant", "user", "assistant"]
    agent.reset(4)
    assert 4 not in agent.memory and 0 in agent.memory
    agent.reset()
    assert agent.memory == {}


def test_greedy_decoding_is_deterministic_and_batch_independent(tiny):
    model, tok = tiny
    agent = TransformersAgent(model, tok, max_new_tokens=8, temperature=0.0, history=False)
    alone = agent.act("What is the population of Velora?", {})
    batched = agent.act_batch(["a much longer prompt " * 5, "What is the population of Velora?"], [{}, {}])
    assert batched[1] == alone  # left padding must not change what the model writes


def test_long_prompts_keep_their_latest_tokens(tiny):
    model, tok = tiny
    agent = TransformersAgent(model, tok, max_new_tokens=2, temperature=0.0, max_prompt_tokens=32, history=False)
    gen = agent.generate([agent.render([{"role": "user", "content": "word " * 500}])])[0]
    assert gen.prompt_tokens == 32


def test_stop_strings_cut_the_action():
    assert (
        _cut_at_stop('x <tool_call>{"a": 1}</tool_call> trailing', ["</tool_call>"])
        == 'x <tool_call>{"a": 1}</tool_call>'
    )
    assert _cut_at_stop("no stop here", ["</tool_call>"]) is None
    assert _cut_at_stop("a STOP b END", ["END", "STOP"]) == "a STOP"


def test_bad_settings_are_rejected(tiny):
    model, tok = tiny
    with pytest.raises(InvalidConfig, match="temperature"):
        TransformersAgent(model, tok, temperature=-1)
    with pytest.raises(InvalidConfig, match="max_new_tokens"):
        TransformersAgent(model, tok, max_new_tokens=0)
    with pytest.raises(InvalidArgument, match="tokenizer"):
        TransformersAgent(model)


def test_checkpoint_agent_loads_a_run_dir_and_a_model_dir(run_dir, tiny):
    model, tok = tiny
    ref = TransformersAgent(model, tok, max_new_tokens=5, temperature=0.0, history=False).act("hello", {})
    for path in (run_dir, run_dir / "policy"):
        agent = make_agent(f"checkpoint:{path}", max_new_tokens=5, temperature=0.0, history=False)
        assert isinstance(agent, CheckpointAgent)
        assert agent.model_dir == str(run_dir / "policy")
        assert agent.act("hello", {}) == ref  # same weights, same greedy output
    hf = make_agent(f"hf:{run_dir / 'policy'}", max_new_tokens=5, temperature=0.0, history=False)
    assert hf.act("hello", {}) == ref


def test_checkpoint_errors_name_the_expected_layout(tmp_path):
    with pytest.raises(InvalidArgument, match="does not exist"):
        resolve_checkpoint(tmp_path / "missing")
    with pytest.raises(InvalidArgument, match="policy/config.json"):
        resolve_checkpoint(tmp_path)
