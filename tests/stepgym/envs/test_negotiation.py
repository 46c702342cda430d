"""Negotiation: deal rules, the parallel API (PettingZoo's own test), and the single-agent view."""

from __future__ import annotations

import gymnasium as gym
import pytest
from pettingzoo.test import parallel_api_test

import stepgym  # noqa: F401
from stepgym.envs.negotiation import (
    NegotiationGame,
    RuleBasedNegotiator,
    negotiation_parallel,
    parse_negotiation_action,
)

ITEMS = ("books", "hats", "balls")


def game(pool=(2, 1, 3), values=((1, 4, 1), (2, 0, 2)), rounds=4):
    return NegotiationGame(pool, values, rounds, ITEMS)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("propose 1 0 2", (1, 0, 2)),
        ("<answer>Propose books=2, balls=1</answer>", (2, 0, 1)),
        ("I take 1 hat and 3 balls", (0, 1, 3)),
        ("accept", "accept"),
        ("propose 3 0 0", None),  # more books than the pool has
        ("propose 1 2", None),
        ("let us be friends", None),
    ],
)
def test_parse(text, parsed):
    assert parse_negotiation_action(text, (2, 1, 3), ITEMS) == parsed


def test_accepting_a_standing_proposal_makes_the_deal():
    g = game()
    g.play_round(("propose 0 1 0", "propose 2 0 3"))  # complementary claims: (0,1,0)+(2,0,3) == pool
    assert g.done and g.deal == ((0, 1, 0), (2, 0, 3))
    g = game()
    g.play_round(("propose 1 1 1", "propose 2 0 2"))
    assert not g.done
    g.play_round(("propose 1 1 1", "accept"))
    assert g.done and g.deal == ((1, 1, 1), (1, 0, 2))
    assert g.reward(0) == pytest.approx((1 + 4 + 1) / (2 + 4 + 3))
    assert g.reward(1) == pytest.approx((2 + 4) / (4 + 6))


def test_no_deal_without_agreement_and_conflicting_accepts():
    g = game(rounds=3)
    g.play_round(("accept", "propose 2 1 3"))
    assert g.errors[0] and "no standing proposal" in g.errors[0]
    g.play_round(("propose 2 1 3", "propose 2 1 3"))
    g.play_round(("accept", "accept"))  # each accepts an offer that contradicts the other
    assert g.done and g.deal is None and g.reward(0) == g.reward(1) == 0.0


def test_parallel_api():
    parallel_api_test(negotiation_parallel(), num_cycles=100)
    parallel_api_test(negotiation_parallel(n_items=4, max_rounds=3), num_cycles=100)


def test_parallel_self_play_of_two_rule_based_negotiators():
    env = negotiation_parallel()
    deals = 0
    for seed in range(20):
        obs, infos = env.reset(seed=seed)
        bots = [RuleBasedNegotiator(env.game, me=i) for i in (0, 1)]
        while env.agents:
            obs, rewards, terms, truncs, infos = env.step({a: bots[i].act() for i, a in enumerate(env.possible_agents)})
            assert all(0.0 <= r <= 1.0 for r in rewards.values())
        deals += infos["agent_0"]["deal"]
    assert deals >= 15  # both concede towards 50%, so they nearly always meet


def test_view_expert_reaches_the_optimum_and_is_deterministic():
    env = gym.make("stepgym/Negotiation-v0")
    for seed in range(60):
        env.reset(seed=seed)
        while True:
            obs, reward, term, trunc, info = env.step(env.unwrapped.expert_action())
            if term or trunc:
                break
        assert info["deal"] and info["success"] and reward == pytest.approx(info["optimal_value"])
        assert 0.0 < reward <= 1.0
    a, b = gym.make("stepgym/Negotiation-v0"), gym.make("stepgym/Negotiation-v0")
    assert a.reset(seed=5)[0] == b.reset(seed=5)[0]


def test_view_greedy_demand_gets_no_deal():
    env = gym.make("stepgym/Negotiation-v0", max_rounds=4)
    obs, info = env.reset(seed=1)
    pool = info["pool"]
    while True:
        obs, reward, term, trunc, info = env.step("propose " + " ".join(map(str, pool)))
        if term or trunc:
            break
    assert not info["success"] and reward == 0.0 and "No deal" in obs


def test_bad_knobs():
    with pytest.raises(stepgym.InvalidConfig, match="max_rounds"):
        gym.make("stepgym/Negotiation-v0", max_rounds=1)


def test_parallel_env_pickles():
    import pickle

    env = negotiation_parallel()
    env.reset(seed=2)
    env.step({"agent_0": "propose 1 1 1", "agent_1": "propose 0 0 0"})
    copy = pickle.loads(pickle.dumps(env))
    assert copy.game.pool == env.game.pool and copy.game.standing == env.game.standing
