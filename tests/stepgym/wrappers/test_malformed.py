"""MalformedActionPolicy: each mode does what its docs say."""

from __future__ import annotations

import pytest

from stepgym.errors import InvalidArgument
from stepgym.wrappers import MalformedActionPolicy
from tests.stepgym.wrappers.conftest import CountEnv

ADD = '<tool_call>{"name": "add", "arguments": {"n": 1}}</tool_call>'


def test_feedback_explains_and_continues():
    env = MalformedActionPolicy(CountEnv(), "feedback")
    env.reset(seed=0)
    obs, r, term, trunc, info = env.step("???")
    assert (r, term, trunc) == (0.0, False, False)
    assert info["malformed"] is True and info["action_valid"] is False and "Invalid action" in obs
    assert env.unwrapped.elapsed_steps == 1
    _, _, _, _, info = env.step(ADD)
    assert info["malformed"] is False


def test_feedback_with_a_stricter_validator_prefixes_its_message():
    need_think = MalformedActionPolicy(CountEnv(), "feedback",
                                       validator=lambda a: None if "<think>" in a else "start with <think>...</think>.")
    need_think.reset(seed=0)
    obs, _, _, _, info = need_think.step(ADD)
    assert obs.startswith("Format error: start with <think>") and obs.endswith("total = 1")
    assert info["action_valid"] is False and info["malformed"] is True


def test_penalize_adds_a_component():
    env = MalformedActionPolicy(CountEnv(), "penalize", penalty=0.25)
    env.reset(seed=0)
    _, r, term, _, info = env.step("???")
    assert r == -0.25 and not term and info["reward_components"] == {"env": 0.0, "malformed": -0.25}
    _, r, _, _, info = env.step(ADD)
    assert r == 0.0 and "reward_components" not in info


def test_terminate_ends_the_episode():
    env = MalformedActionPolicy(CountEnv(), "terminate", penalty=1.0)
    env.reset(seed=0)
    _, r, term, trunc, info = env.step("???")
    assert term is True and trunc is False and r == -1.0 and info["success"] is False


def test_reprompt_does_not_advance_the_env_and_limits_retries():
    env = MalformedActionPolicy(CountEnv(), "reprompt", max_retries=2)
    task, _ = env.reset(seed=0)
    obs, r, term, trunc, info = env.step("???")
    assert env.unwrapped.elapsed_steps == 0 and (r, term, trunc) == (0.0, False, False)
    assert info["retries_left"] == 1 and obs.endswith(task) and "could not be used" in obs
    env.step("???")
    assert env.unwrapped.elapsed_steps == 0
    obs, _, _, _, info = env.step("???")  # third in a row: the env takes it
    assert env.unwrapped.elapsed_steps == 1 and info["malformed"] is True and obs.startswith("Invalid action")
    env.step("???")  # the count starts again after the env took a step
    assert env.unwrapped.elapsed_steps == 1
    env.step(ADD)
    assert env.unwrapped.elapsed_steps == 2


def test_reprompt_observations_fit_the_widened_space():
    env = MalformedActionPolicy(CountEnv(max_obs_chars=200), "reprompt")
    env.reset(seed=0)
    obs, *_ = env.step("x" * 5000)
    assert env.observation_space.contains(obs)


def test_default_action_replaces_the_step():
    env = MalformedActionPolicy(CountEnv(), "default_action", default_action=ADD)
    env.reset(seed=0)
    obs, _, _, _, info = env.step("???")
    assert obs == "total = 1" and info["action_replaced"] is True and info["original_action"] == "???"
    assert info["action_valid"] is False and info["malformed"] is True
    calls = []

    def pick(last_obs, last_info):
        calls.append(last_obs)
        return ADD

    env = MalformedActionPolicy(CountEnv(), "default_action", default_action=pick)
    first, _ = env.reset(seed=0)
    env.step("???")
    assert calls == [first]


def test_env_validate_action_is_the_default_validator():
    class Strict(CountEnv):
        def validate_action(self, action):
            return None if action == ADD else "only add(1) here"

    env = MalformedActionPolicy(Strict(), "reprompt")
    env.reset(seed=0)
    _, _, _, _, info = env.step('<tool_call>{"name": "add", "arguments": {"n": 2}}</tool_call>')
    assert info["error"] == "only add(1) here" and env.unwrapped.elapsed_steps == 0


@pytest.mark.parametrize("kwargs", [{"mode": "ignore"}, {"mode": "default_action"}, {"max_retries": -1},
                                    {"validator": "strict"}, {"penalty": -1}])
def test_bad_arguments(kwargs):
    with pytest.raises(InvalidArgument):
        MalformedActionPolicy(CountEnv(), **kwargs)
