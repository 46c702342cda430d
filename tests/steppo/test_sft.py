"""Behaviour cloning data: the expert's steps, and the epsilon-noisy demonstrator (`--demo-noise`)."""

from __future__ import annotations

import pytest

from stepgym.actions import parse_tool_call
from stepgym.errors import InvalidArgument, InvalidConfig
from steppo.config import SFTConfig
from stepgym.models import load_model
from steppo.rollout import ChatPromptBuilder, make_env_fn
from steppo.sft import collect_expert_steps

ENV = "stepgym/ToolUse-v0"
KW = {"difficulty": "easy", "tools": ["lookup"], "compact": True}


@pytest.fixture(scope="module")
def builder():
    _, tok = load_model("tiny")
    return ChatPromptBuilder(tok, 2)


def _texts(builder, data):
    return [builder.tokenizer.decode(t) for _, t in data]


def _expert_targets(episodes: int, seed: int = 0) -> set[str]:
    """Every action the expert takes on the same seeds when nothing interferes."""
    from steppo.sft import SFT_SEED_BASE

    env = make_env_fn(ENV, KW)()
    out = set()
    for e in range(episodes):
        env.reset(seed=SFT_SEED_BASE + seed * 10_007 + e)
        done = False
        while not done:
            a = env.unwrapped.expert_action()
            out.add(a)
            _, _, term, trunc, _ = env.step(a)
            done = term or trunc
    return out


def test_without_noise_every_target_is_the_experts_action(builder):
    data = collect_expert_steps(make_env_fn(ENV, KW), builder, 12, seed=0)
    texts = _texts(builder, data)
    assert len(texts) == 24  # lookup, then answer
    assert set(texts) <= _expert_targets(12)


def test_noise_records_random_actions_and_the_expert_recovers(builder):
    expert = _expert_targets(40)
    data = collect_expert_steps(make_env_fn(ENV, KW), builder, 40, seed=0, noise=0.3)
    texts = _texts(builder, data)
    foreign = [t for t in texts if t not in expert]
    # about 30% of the steps are the random agent's; they are still calls in the env's format
    assert 0.1 < len(foreign) / len(texts) < 0.5
    assert sum(t.startswith("<tool_call>") for t in foreign) >= 0.8 * len(foreign)
    assert any(not hasattr(parse_tool_call(t), "name") or parse_tool_call(t).name == "answer" for t in foreign)
    # a random lookup wastes a step and the expert goes on: some episodes are longer than 2 steps
    assert len(texts) > 80 - sum(1 for t in foreign if '"answer"' in t)
    # the same seed gives the same demonstrations; another seed gives other ones
    assert _texts(builder, collect_expert_steps(make_env_fn(ENV, KW), builder, 40, seed=0, noise=0.3)) == texts
    assert _texts(builder, collect_expert_steps(make_env_fn(ENV, KW), builder, 40, seed=1, noise=0.3)) != texts


def test_full_noise_leaves_no_expert_lookup(builder):
    data = collect_expert_steps(make_env_fn(ENV, KW), builder, 10, seed=0, noise=1.0)
    expert = _expert_targets(10)
    assert not any(t in expert for t in _texts(builder, data) if '"lookup"' in t)


def test_bad_noise_is_refused_with_the_bound(builder):
    with pytest.raises(InvalidArgument, match=r"\[0, 1\]"):
        collect_expert_steps(make_env_fn(ENV, KW), builder, 1, noise=1.5)
    with pytest.raises(InvalidConfig, match="demo_noise"):
        SFTConfig(demo_noise=-0.1)
