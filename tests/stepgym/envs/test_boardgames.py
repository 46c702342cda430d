"""Tic-tac-toe and connect-four: rules, opponents, experts, and the PettingZoo AEC API on text.

PettingZoo's ``api_test`` reads ``.dtype`` from every observation and so crashes on text
observations; :func:`text_aec_api_test` below checks the same AEC contract for text envs.
"""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import stepgym  # noqa: F401
from stepgym.envs.boardgames import (
    ConnectFour,
    ConnectFourEnv,
    TicTacToe,
    TicTacToeEnv,
    connect_four_aec,
    connect_four_heuristic,
    minimax_moves,
    tictactoe_aec,
)


def play(env, policy=None):
    while True:
        action = policy(env) if policy else env.unwrapped.expert_action()
        obs, reward, term, trunc, info = env.step(action)
        if term or trunc:
            return reward, info


# -- rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moves", "winner"),
    [
        ((0, 3, 1, 4, 2), 0),  # top row
        ((0, 1, 3, 2, 6), 0),  # left column
        ((1, 0, 2, 4, 3, 8), 1),  # O on the diagonal
        ((0, 1, 2, 4, 3, 5, 7, 6, 8), None),  # draw
    ],
)
def test_tictactoe_rules(moves, winner):
    g = TicTacToe()
    for m in moves:
        assert not g.done
        g.play(m)
    assert g.done and g.winner == winner


@pytest.mark.parametrize(
    ("moves", "winner"),
    [
        ((0, 6, 1, 6, 2, 6, 3), 0),  # horizontal
        ((0, 1, 0, 1, 0, 1, 0), 0),  # vertical
        ((0, 1, 1, 2, 2, 3, 2, 3, 3, 6, 3), 0),  # diagonal up-right
        ((6, 5, 5, 4, 4, 3, 4, 3, 3, 0, 3), 0),  # diagonal up-left
    ],
)
def test_connect_four_rules(moves, winner):
    g = ConnectFour()
    for m in moves:
        assert not g.done
        g.play(m)
    assert g.done and g.winner == winner


def test_connect_four_full_board_is_a_draw_and_full_columns_are_illegal():
    g = ConnectFour()
    # columns filled in pairs by pattern that never makes four
    order = [0, 1, 0, 1, 1, 0, 1, 0, 0, 1, 0, 1, 2, 3, 2, 3, 3, 2, 3, 2, 2, 3, 2, 3,
             4, 5, 4, 5, 5, 4, 5, 4, 4, 5, 4, 5, 6, 6, 6, 6, 6, 6]
    for m in order:
        g.play(m)
    assert g.done and g.winner is None and g.legal() == []
    assert "column 1 is full" in ConnectFour.parse(g, "1")


def test_minimax_blocks_and_wins():
    g = TicTacToe()
    for m in (0, 4, 1):  # X threatens the top row
        g.play(m)
    assert minimax_moves(g) == (2,)
    g.play(2)
    g.play(3)  # X: 0,1,3; O: 4,2 -> O wins at 6 (diagonal 2-4-6)
    assert minimax_moves(g) == (6,)


def test_heuristic_wins_then_blocks():
    g = ConnectFour()
    for m in (0, 6, 0, 6, 0):  # X threatens to complete column 1
        g.play(m)
    assert connect_four_heuristic(g.bits[1], g.bits[0], g.heights) == 0  # O blocks
    g = ConnectFour()
    for m in (0, 6, 0, 6, 0, 6, 1):  # both threaten a vertical four; O to move
        g.play(m)
    assert connect_four_heuristic(g.bits[1], g.bits[0], g.heights) == 6  # O wins rather than blocks


# -- single-agent views ----------------------------------------------------------------------


def test_tictactoe_expert_never_loses():
    env = gym.make("stepgym/TicTacToe-v0")
    for seed in range(30):
        env.reset(seed=seed)
        reward, info = play(env)
        assert info["outcome"] == "draw" and reward == 0.5 and info["success"]
    env = gym.make("stepgym/TicTacToe-v0", mistake_prob=1.0)  # a random opponent
    outcomes = []
    for seed in range(30):
        env.reset(seed=seed)
        _, info = play(env)
        outcomes.append(info["outcome"])
    assert "loss" not in outcomes and outcomes.count("win") >= 20


def test_connect_four_expert_beats_the_heuristic():
    env = gym.make("stepgym/ConnectFour-v0")
    sides = set()
    for seed in range(40):
        _, info = env.reset(seed=seed)
        sides.add(info["side"])
        reward, info = play(env)
        assert info["outcome"] == "win" and reward == 1.0 and info["success"], seed
    assert sides == {"X", "O"}


def test_random_play_loses_to_the_heuristic_mostly():
    env = ConnectFourEnv()
    rng = np.random.default_rng(0)
    losses = 0
    for seed in range(20):
        env.reset(seed=seed)
        _, info = play(env, lambda e: str(int(rng.choice(e.game.legal())) + 1))
        losses += info["outcome"] == "loss"
    assert losses >= 15


def test_view_actions_and_errors():
    env = TicTacToeEnv(agent_first=True)
    obs, info = env.reset(seed=0)
    assert info["side"] == "X" and "Legal cells: 1, 2, 3, 4, 5, 6, 7, 8, 9" in obs
    obs, _, _, _, info = env.step("<answer>place 5</answer>")
    assert info["action_valid"] and "The opponent played" in obs
    obs, _, term, _, info = env.step("5")
    assert info["action_valid"] is False and "taken" in info["error"] and not term
    obs, _, _, _, info = env.step("10")
    assert info["action_valid"] is False and "out of range" in info["error"]
    obs, _, _, _, info = env.step("the middle one")
    assert info["action_valid"] is False and "1 to 9" in obs
    second = TicTacToeEnv(agent_first=False)
    obs, info = second.reset(seed=0)
    assert info["side"] == "O" and "The opponent (X) played" in obs


# -- AEC --------------------------------------------------------------------------------------


def text_aec_api_test(env, num_cycles: int = 200, seed: int = 0, legal_prob: float = 0.8) -> None:
    """The checks of ``pettingzoo.test.api_test`` that apply to text observations and actions."""
    rng = np.random.default_rng(seed)
    assert env.reset(seed=seed) is None
    assert env.agents == env.possible_agents and len(set(env.agents)) == len(env.agents)
    for agent in env.possible_agents:
        assert env.observation_space(agent) is env.observation_space(agent)
        assert env.action_space(agent) is env.action_space(agent)
    assert env.agent_selection in env.agents
    for key in ("rewards", "terminations", "truncations", "infos"):
        assert set(getattr(env, key)) == set(env.agents), key
    history = []
    for agent in env.agent_iter(num_cycles):
        obs, reward, term, trunc, info = env.last()
        assert isinstance(obs, str) and env.observation_space(agent).contains(obs)
        assert obs == env.observe(agent)
        assert isinstance(reward, float) and isinstance(term, bool) and isinstance(trunc, bool)
        assert isinstance(info, dict)
        for other in env.agents:
            o = env.observe(other)
            assert isinstance(o, str) and env.observation_space(other).contains(o)
        if term or trunc:
            env.step(None)  # dead agents must step with None
            continue
        legal = env.game.legal()
        if rng.random() < legal_prob and legal:
            action = env.game.label(int(rng.choice(legal)))
        else:
            action = env.action_space(agent).sample()  # random text: an invalid action
        assert env.action_space(agent).contains(action)
        env.step(action)
        history.append((agent, action))
        for key in ("rewards", "terminations", "truncations", "infos"):
            assert set(getattr(env, key)) == set(env.agents), key
        if env.agents:
            assert all(isinstance(v, float) for v in env.rewards.values())
            assert all("action_valid" in env.infos[a] for a in env.agents)
    assert env.agents == []  # the game ended and every agent was removed
    return history


@pytest.mark.parametrize("factory", [tictactoe_aec, connect_four_aec])
def test_aec_text_api(factory):
    for seed in range(5):
        text_aec_api_test(factory(), seed=seed)


@pytest.mark.parametrize("factory", [tictactoe_aec, connect_four_aec])
def test_aec_is_zero_sum_and_deterministic(factory):
    def run(seed):
        env = factory()
        env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        totals = dict.fromkeys(env.possible_agents, 0.0)
        seen = []
        for agent in env.agent_iter(200):
            obs, reward, term, trunc, _ = env.last()
            totals[agent] += reward
            seen.append(obs)
            env.step(None if term or trunc else env.game.label(int(rng.choice(env.game.legal()))))
        return totals, seen

    totals, seen = run(3)
    assert sum(totals.values()) == 0.0 and sorted(totals.values()) in ([-1.0, 1.0], [0.0, 0.0])
    assert run(3)[1] == seen


def test_aec_invalid_actions_keep_the_turn_then_forfeit():
    env = tictactoe_aec(max_invalid=2)
    env.reset(seed=0)
    env.step("nonsense")
    assert env.agent_selection == "player_0" and env.infos["player_0"]["action_valid"] is False
    assert "invalid" in env.observe("player_0")
    env.step("still nonsense")
    assert all(env.terminations.values())
    assert env.rewards == {"player_0": -1.0, "player_1": 1.0}


def test_aec_expert_move_is_legal():
    env = connect_four_aec()
    env.reset(seed=0)
    for _ in range(6):
        env.step(env.expert_action())
    assert all(env.infos[a]["action_valid"] for a in env.agents)


def test_import_stepgym_and_the_views_do_not_import_pettingzoo():
    code = (
        "import sys, gymnasium as gym, stepgym\n"
        "for i in ('stepgym/TicTacToe-v0', 'stepgym/ConnectFour-v0', 'stepgym/Negotiation-v0'):\n"
        "    gym.make(i).reset(seed=0)\n"
        "print('pettingzoo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_aec_env_pickles_across_processes():
    import pickle

    env = connect_four_aec()
    env.reset(seed=0)
    env.step("4")
    code = "import pickle, sys; e = pickle.loads(sys.stdin.buffer.read()); print(e.game.n_played, e.agent_selection)"
    out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(env), capture_output=True, timeout=120)
    assert out.stdout.decode().split() == ["1", "player_1"], out.stderr.decode()[-500:]
