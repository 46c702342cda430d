"""Countdown-v0: generated instances are solvable; the expression checker is safe and exact."""

from __future__ import annotations

from fractions import Fraction

import gymnasium as gym
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stepgym  # noqa: F401
from stepgym.envs.countdown import CountdownEnv, ExpressionError, evaluate_expression, solve_countdown


@pytest.mark.parametrize("kwargs", [{}, {"num_numbers": 6, "use_all": True}, {"num_numbers": 3, "max_number": 10}])
def test_generated_instances_are_solvable_and_the_expert_solves_them(kwargs):
    env = gym.make("stepgym/Countdown-v0", **kwargs)
    for seed in range(100):
        _, info = env.reset(seed=seed)
        assert 1 <= info["target"] <= env.unwrapped.max_target
        expr = env.unwrapped.expert_action()
        value, used = evaluate_expression(expr)
        assert value == info["target"]
        pool = list(info["numbers"])
        for v in used:
            pool.remove(v)  # raises if a number is used more often than given
        if kwargs.get("use_all"):
            assert pool == []
        _, reward, term, _, step_info = env.step(f"<answer>{expr}</answer>")
        assert term and reward == 1.0 and step_info["success"]


def test_solver_on_given_instances():
    expr = solve_countdown([3, 7, 25, 50], 182)
    assert evaluate_expression(expr)[0] == 182
    assert solve_countdown([2, 3], 7) is None
    env = CountdownEnv()
    env.reset(options={"numbers": [4, 6, 10], "target": 34})
    _, reward, term, _, info = env.step(env.expert_action())
    assert reward == 1.0 and info["success"]


def test_evaluate_is_exact():
    assert evaluate_expression("1 / 3 + 1 / 3 + 1 / 3") == (1, [1, 3, 1, 3, 1, 3])
    assert evaluate_expression("(7 - 2) × 4 ÷ 8") == (Fraction(5, 2), [7, 2, 4, 8])
    assert evaluate_expression("2 + 3 * 4 - 10 / 5") == (12, [2, 3, 4, 10, 5])


@pytest.mark.parametrize(
    "text",
    ["__import__('os').system('x')", "2**10", "-5 + 3", "1e3", "(1 + 2", "1 + 2)", "3 4", "5 / 0", "", "abs(3)",
     "(" * 5000 + "1" + ")" * 5000, "9" * 5000, "1 +" * 1000 + " 1"],
)
def test_hostile_expressions_are_rejected(text):
    with pytest.raises(ExpressionError):
        evaluate_expression(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789+-*/() x×÷=ab", max_size=40))
def test_evaluate_only_raises_expression_errors(text):
    try:
        value, used = evaluate_expression(text)
    except ExpressionError:
        return
    assert isinstance(value, (int, Fraction)) and all(isinstance(u, int) for u in used)


def test_number_rules_and_feedback():
    env = CountdownEnv(max_steps=10)
    env.reset(options={"numbers": [25, 50, 3, 3], "target": 81})
    obs, _, term, _, info = env.step("25 + 50 + 3 + 3 + 3")
    assert info["action_valid"] is False and "3 is not available" in obs and not term
    obs, _, term, _, info = env.step("25 + 50")
    assert info["action_valid"] and info["value"] == "75" and "not 81" in obs and not term
    obs, reward, term, _, info = env.step("25 + 50 + 3 + 3 = 81")
    assert term and reward == 1.0
    strict = CountdownEnv(use_all=True)
    strict.reset(options={"numbers": [25, 50, 3, 3], "target": 75})
    _, _, _, _, info = strict.step("25 + 50")
    assert info["action_valid"] is False and "missing 3, 3" in info["error"]
