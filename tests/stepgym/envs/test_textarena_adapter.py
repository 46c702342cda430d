"""TextArena-v0 and the PettingZoo view of multi-player TextArena games."""

from __future__ import annotations

import importlib.util
import random
import re
import sys

import gymnasium as gym
import pytest

import stepgym
from stepgym.errors import DependencyNotInstalled, InvalidConfig

HAS_TEXTARENA = importlib.util.find_spec("textarena") is not None
needs_textarena = pytest.mark.skipif(
    not HAS_TEXTARENA, reason="the 'textarena' extra is not installed (pip install 'stepgym[textarena]')"
)


def test_missing_extra_gives_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "textarena", None)
    monkeypatch.delitem(sys.modules, "stepgym.envs.textarena_adapter", raising=False)
    with pytest.raises(DependencyNotInstalled, match="pip install textarena"):
        gym.make("stepgym/TextArena-v0")
    with pytest.raises(DependencyNotInstalled, match="pip install"):
        stepgym.make("stepgym/TextArena-v0", game="Wordle-v0")


@pytest.fixture(scope="module")
def wordle():
    return gym.make("stepgym/TextArena-v0", game="Wordle-v0")


@needs_textarena
def test_wordle_plays_offline_with_shipped_words(wordle):
    obs, info = wordle.reset(seed=0)
    assert "Wordle" in obs and info["game"] == "Wordle-v0"
    obs, r, term, trunc, info = wordle.step("I think [crane]")
    assert info["action_valid"] and re.search(r"[GYX] [GYX] [GYX] [GYX] [GYX]", obs) and r == 0.0
    obs, r, term, trunc, info = wordle.step("crane without brackets")
    assert not info["action_valid"] and "invalid move" in info["error"].lower() and not term
    obs, r, term, trunc, info = wordle.step(wordle.unwrapped.expert_action())
    assert term and r == 1.0 and info["success"] is True


@needs_textarena
def test_seeding_is_reproducible_and_leaves_global_random_alone(wordle):
    random.seed(123)
    expected = [random.random() for _ in range(3)]
    random.seed(123)
    secrets = []
    for seed in (0, 0, 1, 2, 3):
        wordle.reset(seed=seed)
        secrets.append(wordle.unwrapped.expert_action())
        wordle.step("[crane]")
    assert [random.random() for _ in range(3)] == expected
    assert secrets[0] == secrets[1] and len(set(secrets[1:])) > 1


@needs_textarena
def test_other_single_player_game_and_errors():
    env = gym.make("stepgym/TextArena-v0", game="GuessTheNumber-v0")
    env.reset(seed=5)
    obs, r, term, trunc, info = env.step(env.unwrapped.expert_action())
    assert term and info["success"] is True
    with pytest.raises(InvalidConfig, match="textarena_aec_env"):
        gym.make("stepgym/TextArena-v0", game="TicTacToe-v0")
    with pytest.raises(InvalidConfig, match="Wordle-v0"):
        gym.make("stepgym/TextArena-v0", game="Wordel-v0")
    hang = gym.make("stepgym/TextArena-v0", game="Hangman-v0")
    hang.reset(seed=0)
    with pytest.raises(NotImplementedError, match="no expert"):
        hang.unwrapped.expert_action()


@needs_textarena
def test_tictactoe_through_pettingzoo_aec():
    from pettingzoo import AECEnv

    from stepgym.envs.textarena_adapter import textarena_aec_env

    env = textarena_aec_env("TicTacToe-v0")
    assert isinstance(env, AECEnv) and env.possible_agents == ["player_0", "player_1"]
    # PettingZoo's api_test reads .dtype from observations and fails on text; these are the
    # same checks written for text: alternating turns, spaces contain observations, the game
    # ends with every agent terminated and zero-sum rewards.
    for seed in (0, 1):
        env.reset(seed=seed)
        movers, totals = [], {a: 0.0 for a in env.possible_agents}
        for agent in env.agent_iter(max_iter=50):
            obs, reward, term, trunc, info = env.last()
            assert env.observation_space(agent).contains(obs)
            totals[agent] += reward
            if term or trunc:
                env.step(None)
                continue
            movers.append(agent)
            moves = re.findall(r"'\[(\d)\]'", obs.rsplit("Available Moves:", 1)[-1])
            assert moves, obs
            env.step(f"[{moves[0]}]")
        assert not env.agents
        assert all(a != b for a, b in zip(movers, movers[1:]))
        assert sum(totals.values()) == 0.0 and set(totals.values()) <= {-1.0, 0.0, 1.0}
    # An invalid move is reported in infos, not raised.
    env.reset(seed=3)
    env.step("[42]")
    assert env.infos["player_0"]["action_valid"] is False
