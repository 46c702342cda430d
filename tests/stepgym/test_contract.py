"""The public contract, checked on EVERY registered env (new envs are covered automatically)."""

from __future__ import annotations

import math

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env

import stepgym
from stepgym.checker import run_checks
from tests.conftest import builtin_env_ids

ENV_IDS = builtin_env_ids()


def test_there_are_envs():
    assert "stepgym/ToolUse-v0" in ENV_IDS


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_stepgym_checker_passes(env_id):
    failures = [f"{r.name}: {r.message}" for r in run_checks(env_id, episodes=2) if not r.passed]
    assert failures == []


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_check_env(env_id):
    env = gym.make(env_id)
    gym_check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_types_and_info_keys(env_id):
    env = gym.make(env_id)
    obs, info = env.reset(seed=3)
    assert isinstance(obs, str) and env.observation_space.contains(obs)
    assert info["action_valid"] is True and "error" in info
    assert isinstance(env.observation_space, stepgym.UnicodeText)
    assert env.action_space.contains("") and env.action_space.contains("ünï 😀 \ud800")
    obs, reward, terminated, truncated, info = env.step("this is not a valid action ¯\\_(ツ)_/¯")
    assert type(reward) is float and math.isfinite(reward)
    assert type(terminated) is bool and type(truncated) is bool
    assert info["action_valid"] is False
    assert isinstance(info["error"], str) and info["error"]
    assert isinstance(obs, str) and obs


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_expert_is_deterministic_and_succeeds(env_id):
    def episode(seed):
        env = gym.make(env_id)
        obs, info = env.reset(seed=seed)
        out = [obs]
        done = False
        while not done:
            a = env.unwrapped.expert_action()
            assert isinstance(a, str)
            obs, r, te, tr, info = env.step(a)
            out.append((a, obs, r, te, tr))
            done = te or tr
        return out, info

    for seed in (0, 1):
        a, info = episode(seed)
        b, _ = episode(seed)
        assert a == b
        assert info["success"] is True, f"expert failed on seed {seed}"


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_step_after_end_and_before_reset_raise(env_id):
    env = gym.make(env_id).unwrapped
    with pytest.raises(stepgym.ResetNeeded):
        env.step("x")
    env.reset(seed=0)
    done = False
    while not done:
        *_, te, tr, _ = env.step(env.expert_action())
        done = te or tr
    with pytest.raises(stepgym.ResetNeeded):
        env.step("x")
