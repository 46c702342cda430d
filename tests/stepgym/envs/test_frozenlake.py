"""FrozenLake-v0: maps have a path, the expert is optimal, slippery dynamics follow Gymnasium's."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import stepgym  # noqa: F401
from stepgym.envs.frozenlake import FrozenLakeEnv, generate_map, optimal_values


@pytest.mark.parametrize("size", [4, 8])
def test_expert_always_succeeds_when_not_slippery(size):
    env = gym.make("stepgym/FrozenLake-v0", size=size, hole_prob=0.3)
    for seed in range(40):
        env.reset(seed=seed)
        steps = 0
        while True:
            _, reward, term, trunc, info = env.step(env.unwrapped.expert_action())
            steps += 1
            if term or trunc:
                break
        assert info["success"] and reward == 1.0
        assert steps == _shortest(env.unwrapped._rows)


def _shortest(rows):
    from collections import deque

    n = len(rows)
    seen = {(0, 0): 0}
    q = deque([(0, 0)])
    while q:
        r, c = q.popleft()
        for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            y, x = r + dr, c + dc
            if 0 <= y < n and 0 <= x < n and rows[y][x] != "H" and (y, x) not in seen:
                seen[(y, x)] = seen[(r, c)] + 1
                q.append((y, x))
    return seen[(n - 1, n - 1)]


def test_slippery_expert_matches_the_value_iteration_prediction():
    env = FrozenLakeEnv(slippery=True)
    wins, predicted = 0, 0.0
    n = 150
    for seed in range(n):
        env.reset(seed=seed)
        env.expert_action()  # computes the finite-horizon values once per episode
        predicted += max(env._q[env.max_steps][0])
        while not env._needs_reset:
            _, _, _, _, info = env.step(env.expert_action())
        wins += info["success"]
    # binomial standard error at p~0.9, n=150 is ~0.025
    assert abs(wins / n - predicted / n) < 0.08
    assert predicted / n > 0.8


def test_slippery_moves_follow_gymnasium_probabilities():
    env = FrozenLakeEnv(slippery=True, max_steps=10_000)
    counts = {"left": 0, "down": 0, "right": 0, "up": 0}
    env.reset(seed=0, options={"map": ["SFF", "FFF", "FFG"]})
    for _ in range(600):
        env._pos = 4  # the centre: every move is possible
        _, _, _, _, info = env.step("down")
        counts[info["moved"]] += 1
    assert counts["up"] == 0
    for k in ("left", "down", "right"):
        assert 150 < counts[k] < 250


def test_optimal_values_on_a_tiny_map():
    q = optimal_values(["SF", "HG"], slippery=False, horizon=3)
    assert max(q[1][0]) < 0.5  # one step left: the goal is two moves away
    assert max(q[2][0]) == pytest.approx(1.0)
    assert q[2][0][1] == 0.0  # "down" from the start falls into the hole


def test_generated_maps_always_have_a_path():
    rng = np.random.default_rng(0)
    for _ in range(200):
        rows = generate_map(6, 0.5, rng)
        assert rows[0][0] == "S" and rows[-1][-1] == "G"
        _shortest(rows)  # raises KeyError without a path


def test_actions_holes_and_invalid_input():
    env = FrozenLakeEnv()
    env.reset(options={"map": ["SH", "FG"]})
    obs, reward, term, trunc, info = env.step("<answer>right</answer>")
    assert term and not info["success"] and reward == 0.0 and "hole" in obs
    env.reset(options={"map": ["SH", "FG"]})
    obs, _, term, _, info = env.step("fly")
    assert not term and info["action_valid"] is False and "left, down, right, up" in obs
    _, _, _, _, info = env.step("go south")
    assert info["action_valid"] and info["position"] == 2


def test_bad_knobs_raise():
    with pytest.raises(stepgym.InvalidConfig, match="size"):
        FrozenLakeEnv(size=2)
    with pytest.raises(stepgym.InvalidConfig, match="map"):
        FrozenLakeEnv().reset(options={"map": ["SX", "FG"]})
