"""Sokoban-v0: generated levels are solvable, the solver is optimal, actions parse, reset is fast."""

from __future__ import annotations

import statistics
import time

import gymnasium as gym
import pytest

import stepgym  # noqa: F401
from stepgym.envs.sokoban import DIRECTIONS, SokobanEnv, parse_level, solve_sokoban


def play_expert(env) -> tuple[bool, int]:
    steps = 0
    while True:
        _, _, term, trunc, info = env.step(env.unwrapped.expert_action())
        steps += 1
        if term or trunc:
            return info["success"], steps


@pytest.mark.parametrize(
    "kwargs", [{}, {"num_boxes": 1, "width": 6, "height": 6}, {"num_boxes": 3, "width": 9, "height": 9}]
)
def test_expert_solves_generated_levels(kwargs):
    env = gym.make("stepgym/Sokoban-v0", **kwargs)
    for seed in range(25):
        env.reset(seed=seed)
        success, steps = play_expert(env)
        assert success, f"seed {seed}"
        assert steps >= env.unwrapped.min_moves or kwargs


def test_levels_have_the_requested_difficulty_and_vary_with_seed():
    env = SokobanEnv(min_moves=8)
    boards = set()
    for seed in range(15):
        env.reset(seed=seed)
        moves = solve_sokoban(env._walls, env._w, env._targets, frozenset(env._boxes), env._player)
        assert moves is not None and len(moves) >= 8
        boards.add(env.board())
    assert len(boards) == 15


def test_same_seed_same_level():
    a, b = SokobanEnv(), SokobanEnv()
    assert a.reset(seed=7)[0] == b.reset(seed=7)[0]
    assert a.reset(seed=8)[0] != b.reset(seed=7)[0]


def test_reset_is_under_a_millisecond_class():
    env = SokobanEnv()  # 7x7, 2 boxes
    env.reset(seed=0)
    times = []
    for seed in range(60):
        t0 = time.perf_counter()
        env.reset(seed=seed)
        times.append(time.perf_counter() - t0)
    # bench/peers.py measures ~0.4 ms; the bound leaves room for a loaded CI machine.
    assert statistics.median(times) < 3e-3


def test_solver_is_move_optimal_on_a_known_level():
    level = "\n".join(["#######", "#     #", "# $ . #", "#  @  #", "#######"])
    walls, width, targets, boxes, player = parse_level(level)
    moves = solve_sokoban(walls, width, targets, boxes, player)
    # walk left, left, up (3 moves: to the left of the box), then push right twice
    assert [DIRECTIONS[m] for m in moves] == ["left", "left", "up", "right", "right"]


def test_unsolvable_level_returns_none():
    level = "\n".join(["#####", "#$  #", "#  .#", "# @ #", "#####"])  # box stuck in a corner
    assert solve_sokoban(*parse_level(level)) is None


def test_action_formats_and_invalid_actions():
    env = SokobanEnv(max_steps=50)
    level = "\n".join(["#######", "#     #", "# $ . #", "#  @  #", "#######"])
    env.reset(options={"level": level})
    for action in ("left", "<answer>Left</answer>", "move left"):
        env.reset(options={"level": level})
        _, _, _, _, info = env.step(action)
        assert info["action_valid"] is True
        assert env._player == 3 * 7 + 2
    env.reset(options={"level": level})
    obs, reward, term, trunc, info = env.step("jump")
    assert info["action_valid"] is False and "up, down, left, right" in obs and not term
    obs, _, _, _, info = env.step("down")  # a wall
    assert info["action_valid"] is False and "wall" in info["error"]
    assert env._player == 3 * 7 + 3


def test_push_solves_and_dense_reward():
    level = "\n".join(["#####", "#@$.#", "#####"])
    env = SokobanEnv(dense_reward=True)
    env.reset(options={"level": level})
    obs, reward, term, trunc, info = env.step("push right")
    assert term and info["success"] and reward == pytest.approx(1.1)
    assert "*" in obs


def test_expert_replans_after_the_agent_leaves_the_plan():
    env = SokobanEnv()
    solved = 0
    for seed in range(10):
        env.reset(seed=seed)
        for a in ("up", "left", "down", "right", "up"):
            env.step(a)
        if solve_sokoban(env._walls, env._w, env._targets, frozenset(env._boxes), env._player) is None:
            continue  # the random moves deadlocked the level
        while not env._needs_reset:
            _, _, term, trunc, info = env.step(env.expert_action())
        assert info["success"]
        solved += 1
    assert solved >= 5


def test_bad_knobs_and_levels_raise_clear_errors():
    with pytest.raises(stepgym.InvalidConfig, match="num_boxes"):
        SokobanEnv(num_boxes=9)
    with pytest.raises(stepgym.InvalidConfig, match="player"):
        SokobanEnv().reset(options={"level": "#####\n#$ .#\n#####"})


def test_push_search_fallback_finds_valid_plans(monkeypatch):
    import stepgym.envs.sokoban as sokoban

    monkeypatch.setattr(sokoban, "_MOVE_SEARCH_STATES", 1)  # force the fallback search
    env = SokobanEnv(width=9, height=9, num_boxes=3, max_steps=200)
    for seed in range(5):
        env.reset(seed=seed)
        optimal = len(sokoban._search(env._walls, env._w, env._targets, frozenset(env._boxes), env._player,
                                      10**6, pushes_only=False))
        moves = solve_sokoban(env._walls, env._w, env._targets, frozenset(env._boxes), env._player)
        assert moves is not None and len(moves) >= optimal
        for m in moves:
            _, _, term, _, info = env.step(DIRECTIONS[m])
        assert term and info["success"]
