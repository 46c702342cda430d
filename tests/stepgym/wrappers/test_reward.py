"""Reward shaping: components always sum to the reward; potential shaping telescopes."""

from __future__ import annotations

import math

import gymnasium as gym
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepgym.errors import InvalidArgument
from stepgym.wrappers import (
    DiscountedTerminalReward,
    FormatReward,
    InvalidActionPenalty,
    PotentialShaping,
    StepPenalty,
    SuccessBonus,
)
from tests.stepgym.wrappers.conftest import CountEnv

ADD = '<tool_call>{"name": "add", "arguments": {"n": 1}}</tool_call>'


def expert_episode(env, seed=0, junk_every=0):
    env.reset(seed=seed)
    out = []
    t = 0
    while True:
        t += 1
        a = "junk" if junk_every and t % junk_every == 0 else env.unwrapped.expert_action()
        step = env.step(a)
        out.append(step)
        if step[2] or step[3]:
            return out


def test_full_stack_components_sum_to_the_reward():
    env = CountEnv(max_steps=12)
    env = DiscountedTerminalReward(
        SuccessBonus(FormatReward(InvalidActionPenalty(StepPenalty(env, 0.01), 0.2), 0.05), 0.5), 0.9
    )
    steps = expert_episode(env, junk_every=2)
    for _, r, _, _, info in steps:
        comps = info["reward_components"]
        assert sum(comps.values()) == r
        assert set(comps) <= {"env", "step_penalty", "invalid_action", "format", "success_bonus", "terminal_discount"}
    invalid = [s for s in steps if s[4]["action_valid"] is False]
    assert invalid and all(s[4]["reward_components"]["invalid_action"] == -0.2 for s in invalid)
    assert all(s[4]["reward_components"]["format"] == (0.0 if s[4]["action_valid"] is False else 0.05) for s in steps)
    last = steps[-1][4]["reward_components"]
    assert last["env"] == 1.0 and last["success_bonus"] == 0.5
    n = len(steps)
    pre = 1.0 - 0.01 + 0.05 + 0.5
    assert math.isclose(steps[-1][1], 0.9 ** (n - 1) * pre)


def test_same_wrapper_twice_accumulates():
    env = StepPenalty(StepPenalty(CountEnv(), 0.1), 0.2)
    env.reset(seed=0)
    _, r, _, _, info = env.step(ADD)
    assert info["reward_components"] == {"env": 0.0, "step_penalty": pytest.approx(-0.3)}
    assert sum(info["reward_components"].values()) == r


def test_unexplained_inner_reward_change_goes_to_other():
    class Double(gym.RewardWrapper):
        def reward(self, r):
            return 2 * r + 1

    env = StepPenalty(Double(StepPenalty(CountEnv(), 0.5)), 0.1)
    env.reset(seed=0)
    _, r, _, _, info = env.step(ADD)
    assert sum(info["reward_components"].values()) == r
    assert "other" in info["reward_components"]


def test_success_bonus_only_on_success():
    env = SuccessBonus(CountEnv(), 1.0)
    env.reset(seed=0)
    _, r, term, _, info = env.step('<tool_call>{"name": "answer", "arguments": {"text": "999"}}</tool_call>')
    assert term and r == 0.0 and info["reward_components"]["success_bonus"] == 0.0


def test_format_reward_custom_check_and_penalty():
    env = FormatReward(CountEnv(), bonus=0.3, penalty=0.1, check=lambda a: a.startswith("<think>"))
    env.reset(seed=0)
    assert env.step("<think>hm</think>" + ADD)[1] == pytest.approx(0.3)
    assert env.step(ADD)[1] == pytest.approx(-0.1)


@settings(max_examples=40, deadline=None)
@given(
    weights=st.lists(st.floats(-5, 5, allow_nan=False), min_size=8, max_size=8),
    gamma=st.floats(0.5, 1.0),
    seed=st.integers(0, 50),
    junk=st.integers(0, 3),
)
def test_potential_shaping_telescopes(weights, gamma, seed, junk):
    """Sum_t gamma^t F_t = gamma^T phi(s_T) - phi(s_0), with phi(terminal) = 0 (Ng et al. 1999)."""

    def phi(obs, info):
        return weights[len(obs) % 8] + weights[hash(obs[:5]) % 8] * 0.1

    env = PotentialShaping(CountEnv(max_steps=6), phi, gamma=gamma)
    obs0, info0 = env.reset(seed=seed)
    phi0 = phi(obs0, info0)
    total, t = 0.0, 0
    while True:
        a = "junk" if junk and (t + 1) % (junk + 1) == 0 else env.unwrapped.expert_action()
        obs, r, term, trunc, info = env.step(a)
        total += gamma**t * info["reward_components"]["potential"]
        t += 1
        if term or trunc:
            break
    end = 0.0 if term else gamma**t * phi(obs, info)
    assert math.isclose(total, end - phi0, rel_tol=1e-9, abs_tol=1e-9)


def test_potential_shaping_resets_its_state():
    env = PotentialShaping(CountEnv(), lambda o, i: float(len(o)), gamma=1.0)
    env.reset(seed=0)
    env.step("x" * 3)
    obs, _ = env.reset(seed=0)
    fresh = PotentialShaping(CountEnv(), lambda o, i: float(len(o)), gamma=1.0)
    fresh.reset(seed=0)
    assert env.step(ADD)[1] == fresh.step(ADD)[1]


@pytest.mark.parametrize(
    "make",
    [
        lambda e: StepPenalty(e, -1),
        lambda e: PotentialShaping(e, "not callable"),
        lambda e: PotentialShaping(e, lambda o, i: 0.0, gamma=0),
        lambda e: DiscountedTerminalReward(e, gamma=1.5),
        lambda e: FormatReward(e, formats=("xml",)),
        lambda e: InvalidActionPenalty(e, float("nan")),
    ],
)
def test_bad_arguments_raise_clear_errors(make):
    with pytest.raises(InvalidArgument):
        make(CountEnv())
