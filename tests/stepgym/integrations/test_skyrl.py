"""stepgym envs as SkyRL-gym text envs, driven through SkyRL-gym's own registry and env API.

Envs are built the way SkyRL's generator builds them (``skyrl_gym.make(env_class,
env_config=DictConfig, extras=row)``, then ``init(prompt)`` and ``step(text)`` until ``done``),
played to success by stepgym's expert agent, and fed garbage to get an observation that
explains what was wrong.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

skyrl_gym = pytest.importorskip("skyrl_gym")
OmegaConf = pytest.importorskip("omegaconf").OmegaConf

import stepgym  # noqa: E402
from stepgym.agents.simple import ExpertAgent  # noqa: E402
from stepgym.errors import InvalidArgument, UnknownEnvError  # noqa: E402
from stepgym.integrations.skyrl import StepgymTextEnv, register_skyrl_envs, skyrl_dataset  # noqa: E402

CASES = [
    ("stepgym/ToolUse-v0", {"difficulty": "easy"}),
    ("stepgym/Countdown-v0", {}),
    ("stepgym/Sokoban-v0", {}),
    ("stepgym/Wordle-v0", {}),
    ("stepgym/Household-v0", {}),
]


def make_like_skyrl(row: dict[str, Any], max_turns: int = 30, env_config: Any = None) -> StepgymTextEnv:
    """What SkyRL's generator does with a dataset row: every column but prompt/env_class is an extra."""
    extras = {k: v for k, v in copy.deepcopy(row).items() if k not in ("prompt", "env_class")}
    extras["max_turns"] = max_turns
    return skyrl_gym.make(row["env_class"], env_config=env_config or OmegaConf.create({}), extras=extras)


@pytest.mark.parametrize(("env_id", "kwargs"), CASES, ids=[c[0] for c in CASES])
def test_the_expert_agent_solves_the_env_through_skyrl_api(env_id, kwargs):
    assert register_skyrl_envs([env_id]) == [env_id]
    assert register_skyrl_envs([env_id]) == [env_id]  # a second call leaves the registration as it is
    rows = skyrl_dataset(env_id, num_examples=2, seed=11, **kwargs)
    metrics = []
    for row in rows:
        env = make_like_skyrl(row)
        assert isinstance(env, skyrl_gym.Env) and env.spec.id == env_id
        chat, _ = env.init(copy.deepcopy(row["prompt"]))
        assert chat == row["prompt"]  # init replays the row's episode: same reset observation
        agent = ExpertAgent(env.env)
        obs, info, rewards, done = chat[-1]["content"], {}, [], False
        while not done:
            out = env.step(agent.act(obs, info))
            assert set(out) >= {"observations", "reward", "done", "metadata"}
            assert isinstance(out["reward"], float) and isinstance(out["done"], bool)
            assert out["metadata"]["action_valid"] is True and out["metadata"]["error"] is None
            rewards.append(out["reward"])
            done, info = out["done"], out["metadata"]
            if not done:
                [msg] = out["observations"]
                assert msg["role"] == "user"
                obs = msg["content"]
        assert out["observations"] == [] and out["metadata"]["success"] is True
        assert out["metadata"]["terminated"] is True
        m = env.get_metrics()
        assert m["success"] == 1.0 and m["return"] == pytest.approx(sum(rewards)) and m["steps"] == len(rewards)
        metrics.append(m)
        env.close()
    agg = StepgymTextEnv.aggregate_metrics(metrics)
    assert agg["success"] == 1.0


def test_garbage_gets_an_explanation_and_max_turns_ends_the_episode():
    register_skyrl_envs(["stepgym/ToolUse-v0"])
    [row] = skyrl_dataset("stepgym/ToolUse-v0", num_examples=1, seed=3, system_prompt="Use the tools.",
                          difficulty="easy")
    env = make_like_skyrl(row, max_turns=2)
    chat, _ = env.init(copy.deepcopy(row["prompt"]))
    assert chat[0] == {"role": "system", "content": "Use the tools."} and chat[1]["role"] == "user"
    out = env.step("%%% not a tool call {{{")
    assert out["done"] is False and out["metadata"]["action_valid"] is False
    assert "no tool call found" in out["observations"][0]["content"]
    assert out["metadata"]["error"]
    out = env.step("")
    assert out["done"] is True and out["metadata"]["truncated"] is True and out["metadata"]["success"] is False
    assert env.get_metrics()["invalid_actions"] == 2
    late = env.step("one more")  # past the end: an explanation, not an exception
    assert late["done"] is True and "episode is over" in late["metadata"]["error"]


def test_env_config_names_the_env_for_a_class_of_its_own():
    if "stepgym_any" not in skyrl_gym.registry:
        skyrl_gym.register(id="stepgym_any", entry_point="stepgym.integrations.skyrl:StepgymTextEnv")
    cfg = OmegaConf.create({"env_id": "stepgym/Countdown-v0", "env_kwargs": {}})
    env = skyrl_gym.make("stepgym_any", env_config=cfg, extras={"extra_info": {"seed": 4}})
    chat, _ = env.init([])
    expected, _ = stepgym.make("stepgym/Countdown-v0").reset(seed=4)
    assert chat == [{"role": "user", "content": expected}]
    out = env.step(env.expert_action())
    assert out["done"] and out["metadata"]["success"] and out["reward"] > 0


def test_bad_ids_and_kwargs_fail_in_one_line():
    with pytest.raises(UnknownEnvError, match="Did you mean 'stepgym/Sokoban-v0'"):
        register_skyrl_envs(["stepgym/Sokobn-v0"])
    with pytest.raises(InvalidArgument, match="does not accept the env kwarg 'size'"):
        skyrl_dataset("stepgym/Countdown-v0", num_examples=1, size=3)
    with pytest.raises(InvalidArgument, match="no stepgym env id"):
        StepgymTextEnv(env_config={}, extras={})
    with pytest.raises(InvalidArgument, match="extra_info.env_kwargs must be a JSON object"):
        StepgymTextEnv(env_config={}, extras={"extra_info": {"env_kwargs": "difficulty=easy"}}, env_id="stepgym/ToolUse-v0")


def test_registering_every_builtin():
    ids = register_skyrl_envs()
    assert {"stepgym/ToolUse-v0", "stepgym/Errands-v0", "stepgym/TicTacToe-v0"} <= set(ids)
    assert all(skyrl_gym.spec(i).entry_point == "stepgym.integrations.skyrl:StepgymTextEnv" for i in ids)
    assert register_skyrl_envs() == ids  # again: nothing new, no error
