"""Household-v0: command semantics, admissible commands, the planner's optimality."""

from __future__ import annotations

from collections import deque

import gymnasium as gym
import pytest

import stepgym  # noqa: F401  (registers the envs)
from stepgym.envs.household import TASK_TYPES, HouseholdEnv
from stepgym.errors import InvalidConfig


def _expert_episode(env, seed):
    _, info = env.reset(seed=seed)
    optimal, steps = info["optimal_steps"], 0
    while True:
        obs, reward, term, trunc, info = env.step(env.unwrapped.expert_action())
        steps += 1
        if term or trunc:
            return reward, info, steps, optimal


@pytest.mark.parametrize("difficulty", ["easy", "medium", "hard"])
def test_expert_solves_every_task_in_the_optimal_number_of_steps(difficulty):
    env = gym.make("stepgym/Household-v0", difficulty=difficulty)
    kinds = set()
    for seed in range(40):
        reward, info, steps, optimal = _expert_episode(env, seed)
        assert reward == 1.0 and info["success"] is True
        assert steps == optimal and info["extra_steps"] == 0
        kinds.add(env.unwrapped.task.kind)
    assert kinds == set(TASK_TYPES)


def _bfs_shortest(house, task, limit):
    """Breadth-first search over every admissible command (the ground truth for the planner)."""
    start = house.clone()
    seen, queue = {start.key()}, deque([(start, 0)])
    while queue:
        h, d = queue.popleft()
        if d >= limit:
            continue
        for c in h.admissible():
            if c.startswith(("examine", "look", "inventory")):
                continue  # these never change the state
            h2 = h.clone()
            ok, _ = h2.apply(c)
            assert ok, f"admissible command {c!r} failed"
            if h2.done(task):
                return d + 1
            if h2.key() not in seen:
                seen.add(h2.key())
                queue.append((h2, d + 1))
    return None


def test_no_shorter_solution_than_optimal_steps():
    env = HouseholdEnv("easy")
    checked = 0
    for seed in range(60):
        _, info = env.reset(seed=seed)
        if info["optimal_steps"] > 5:
            continue
        assert _bfs_shortest(env.house, env.task, info["optimal_steps"] - 1) is None
        checked += 1
        if checked == 6:
            break
    assert checked == 6


def test_admissible_commands_all_apply_and_invalid_ones_are_explained():
    env = HouseholdEnv("medium", show_admissible=True)
    obs, info = env.reset(seed=3)
    assert "Admissible commands:" in obs and info["admissible_commands"]
    for cmd in info["admissible_commands"]:
        h = env.house.clone()
        assert h.apply(cmd)[0], cmd
    obs, r, term, trunc, info = env.step("take apple 1 from fridge 1")
    assert not info["action_valid"] and "go to" in info["error"] and r == 0.0
    obs, r, term, trunc, info = env.step("dance wildly")
    assert not info["action_valid"] and "Commands:" in info["error"]


def test_closed_containers_hide_their_contents_and_one_object_in_hand():
    env = HouseholdEnv("hard", task_types=("cool",))
    env.reset(seed=0)
    h = env.house
    fridge = h.recs["fridge 1"]
    obs, *_ = env.step("go to fridge 1")
    assert "is closed" in obs
    obs, _, _, _, info = env.step("open fridge 1")
    assert info["action_valid"] and "In it, you see" in obs
    # Pick two things in a row: the second take must be refused.
    loose = [o for r in h.recs.values() if r.name != "fridge 1" and not r.openable for o in r.contents
             if h.objs[o].takeable]
    src = h.objs[loose[0]].loc
    env.step(f"go to {src}")
    _, _, _, _, info = env.step(f"take {loose[0]} from {src}")
    assert info["action_valid"] and h.held == loose[0]
    if len(h.recs[src].contents) > 0 and h.objs[h.recs[src].contents[0]].takeable:
        _, _, _, _, info = env.step(f"take {h.recs[src].contents[0]} from {src}")
        assert not info["action_valid"] and "hands are full" in info["error"]
    obs, *_ = env.step("inventory")
    assert loose[0] in obs
    assert fridge.is_open


def test_task_state_changes_and_lenient_names():
    env = HouseholdEnv("easy", task_types=("heat",))
    env.reset(seed=4)
    h = env.house
    target = next(o for o in h.objs.values() if o.otype == env.task.otype)
    src = target.loc
    env.step(f"go to {src}")
    if h.recs[src].openable:
        env.step(f"open {src}")
    _, _, _, _, info = env.step(f"take the {target.name} from {src}")
    assert info["action_valid"]
    env.step("go to microwave")  # the number may be left out when only one exists
    _, _, _, _, info = env.step(f"Thought: warm it up.\nheat {target.name} with microwave")
    assert info["action_valid"] and target.hot and not target.cold


def test_invalid_knobs():
    with pytest.raises(InvalidConfig, match="task_types"):
        HouseholdEnv(task_types=("juggle",))
    with pytest.raises(InvalidConfig, match="difficulty"):
        HouseholdEnv("impossible")


def test_expert_recovers_after_random_admissible_commands():
    import random

    r = random.Random(1)
    env = HouseholdEnv("medium")
    for seed in range(25):
        env.reset(seed=seed)
        done = False
        for _ in range(r.randint(1, 12)):  # wander, pick things up, open things
            *_, done, _, info = env.step(r.choice(env.house.admissible()))
            if done:
                break
        while not done:
            _, _, term, trunc, info = env.step(env.expert_action())
            done = term or trunc
        assert info["success"] is True
        # Every object is held or in exactly one receptacle.
        h = env.house
        assert sum(len(rec.contents) for rec in h.recs.values()) + bool(h.held) == len(h.objs)
