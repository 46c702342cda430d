"""Errands-v0: the fair expert, episode lengths, dense progress rewards, hostile actions, seeds."""

from __future__ import annotations

import gymnasium as gym
import pytest

import stepgym  # noqa: F401  (registers the env)
from stepgym.agents import make_agent
from stepgym.envs.errands import DIFFICULTIES, ErrandsEnv
from stepgym.errors import InvalidConfig

ID = "stepgym/Errands-v0"


def _play(env: gym.Env, seed: int, policy) -> list[tuple[str, float, dict]]:
    env.reset(seed=seed)
    out = []
    while True:
        action = policy(env)
        _, reward, terminated, truncated, info = env.step(action)
        out.append((action, reward, info))
        if terminated or truncated:
            return out


def _expert(env: gym.Env) -> str:
    return env.unwrapped.expert_action()


@pytest.mark.parametrize("difficulty", sorted(DIFFICULTIES))
def test_expert_solves_every_seed_in_10_to_30_steps(difficulty):
    env = gym.make(ID, difficulty=difficulty)
    for seed in range(40):
        steps = _play(env, seed, _expert)
        info = steps[-1][2]
        assert info["success"], (difficulty, seed)
        assert 10 <= len(steps) <= 30, (difficulty, seed, len(steps))
        assert info["extra_steps"] == 0


@pytest.mark.parametrize("kwargs", [{"note": False}, {"locked": False, "num_items": 3},
                                    {"num_rooms": 8, "containers_per_room": 3, "num_distractors": 10},
                                    {"num_rooms": 3, "containers_per_room": 2, "num_items": 3}])
def test_expert_solves_the_knob_variants(kwargs):
    env = gym.make(ID, max_steps=60, **kwargs)
    for seed in range(15):
        steps = _play(env, seed, _expert)
        assert steps[-1][2]["success"], (kwargs, seed)


def test_rewards_are_dense_and_their_components_add_up():
    env = gym.make(ID, difficulty="medium")
    for seed in range(10):
        steps = _play(env, seed, _expert)
        total_progress = 0.0
        for action, reward, info in steps:
            comps = info["reward_components"]
            assert set(comps) == {"progress", "invalid", "success"}
            assert reward == pytest.approx(sum(comps.values()))
            assert comps["progress"] >= 0.0 and comps["invalid"] == 0.0  # the expert never loses progress
            verb = action.split()[0]
            # progress steps: taking a goal item, unlocking the target, putting an item in it
            if verb in ("unlock", "put") or (verb == "take" and action != "take key"):
                assert comps["progress"] == pytest.approx(0.1), action
            else:  # enabling steps (read, go, open, take key) pay off only later
                assert comps["progress"] == 0.0, action
            total_progress += comps["progress"]
        last = steps[-1][2]
        assert last["progress"] == last["progress_total"]
        assert total_progress == pytest.approx(0.1 * last["progress_total"])
        assert steps[-1][1] == pytest.approx(1.1)


def test_losing_progress_is_paid_back_and_invalid_steps_cost():
    env = ErrandsEnv("easy", locked=False, num_items=1)
    env.reset(seed=1)
    rewards: list[float] = []
    action = ""
    while not action.startswith("take"):
        action = env.expert_action()
        _, r, *_ = env.step(action)
        rewards.append(r)
    assert rewards[-1] == pytest.approx(0.1)
    item = action.split()[1]
    box = next(b.name for b in env.world.here() if b.is_open)
    _, r, _, _, info = env.step(f"put {item} in {box}")  # back where it was: progress lost
    assert info["action_valid"] and r == pytest.approx(-0.1)
    _, r, _, _, info = env.step("fly to the moon")
    assert not info["action_valid"] and r == pytest.approx(-0.05)
    assert "Commands:" in info["error"]


def test_sparse_and_penalty_knobs():
    env = gym.make(ID, progress_reward=0.0, invalid_penalty=0.0)
    steps = _play(env, 0, _expert)
    assert [r for _, r, _ in steps] == [0.0] * (len(steps) - 1) + [1.0]


def test_random_and_garbage_actions_fail_and_never_raise():
    env = gym.make(ID)
    junk = ["", "   ", "<answer></answer>", "go", "go nowhere", "open", "open note", "take note", "take",
            "put", "put key in", "unlock", "unlock chest with spoon", "read book", "x" * 5000, "\x00\ud800",
            '{"name": "go"}', "take coin from", "go hall\ngo hall", "a " * 150]
    env.reset(seed=0)
    for a in junk:
        obs, reward, terminated, truncated, info = env.step(a)
        assert isinstance(obs, str) and obs
        assert info["action_valid"] is False, a
        assert isinstance(info["error"], str) and info["error"]
        if terminated or truncated:
            env.reset(seed=1)
    agent = make_agent("random", env=env, seed=0)
    wins = 0
    for seed in range(30):
        obs, info = env.reset(seed=seed)
        agent.reset()
        while True:
            obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
            if terminated or truncated:
                break
        wins += info["success"]
    assert wins <= 3  # random admissible commands almost never finish a 14-step errand in 24 steps


def test_answer_tags_prefixes_and_the_last_line_are_accepted():
    env = ErrandsEnv("easy")
    env.reset(seed=2)
    _, _, _, _, info = env.step("I should read first.\n<answer>Read the note.</answer>")
    assert info["action_valid"]
    _, _, _, _, info = env.step("Thought: look inside.\nAction: " + env.expert_action())
    assert info["action_valid"]


def test_seeds_reproduce_and_differ():
    def trace(seed):
        env = gym.make(ID, difficulty="hard")
        obs, _ = env.reset(seed=seed)
        out = [obs]
        for t in range(25):
            a = env.unwrapped.expert_action() if t % 4 else "open drawer"
            o, r, te, tr, _ = env.step(a)
            out.append((o, r))
            if te or tr:
                break
        return out

    assert trace(5) == trace(5)
    assert trace(5)[0] != trace(6)[0]


def test_observations_stay_short():
    env = ErrandsEnv("hard")
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        assert len(obs) < 600
        while True:
            obs, _, te, tr, _ = env.step(env.expert_action())
            assert len(obs) < 320
            if te or tr:
                break


def test_bad_config_is_a_clear_error():
    with pytest.raises(InvalidConfig, match="difficulty"):
        ErrandsEnv("impossible")
    with pytest.raises(InvalidConfig, match="num_rooms"):
        ErrandsEnv(num_rooms=1)
    with pytest.raises(InvalidConfig, match="add rooms or containers"):
        ErrandsEnv(num_rooms=3, containers_per_room=1, num_items=3)
    with pytest.raises(InvalidConfig, match="progress_reward"):
        ErrandsEnv(progress_reward=-1)
