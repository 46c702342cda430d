"""The PettingZoo environment modules (stepgym.envs.pz): PettingZoo's own tests run on them.

``max_cycles_test`` needs a module with ``env(max_cycles=...)`` and ``parallel_env(max_cycles=...)``
where a parallel step is one cycle and every AEC step is one turn. PettingZoo's AEC
``api_test`` reads ``.dtype`` from observations and cannot run on text; the text checks of
test_boardgames run on the raw AEC envs instead.
"""

from __future__ import annotations

import copy
import pickle

import pytest
from pettingzoo.test import max_cycles_test, parallel_api_test
from pettingzoo.utils.conversions import turn_based_aec_to_parallel

from stepgym.envs.boardgames import TicTacToe
from stepgym.envs.pz import connect_four_v0, negotiation_v0, tictactoe_v0
from stepgym.errors import InvalidConfig, ResetNeeded
from tests.stepgym.envs.test_boardgames import text_aec_api_test

MODULES = [tictactoe_v0, connect_four_v0, negotiation_v0]
BOARD = [tictactoe_v0, connect_four_v0]


@pytest.mark.parametrize("mod", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_pettingzoo_max_cycles_test(mod):
    for _ in range(5):  # random actions: a few runs
        max_cycles_test(mod)


@pytest.mark.parametrize("mod", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_pettingzoo_parallel_api_test(mod):
    parallel_api_test(mod.parallel_env(), num_cycles=200)
    parallel_api_test(mod.parallel_env(max_cycles=3), num_cycles=200)


@pytest.mark.parametrize("mod", BOARD, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_aec_text_api_and_turn_based_parallel(mod):
    for seed in range(3):
        text_aec_api_test(mod.raw_env(), seed=seed, legal_prob=0.6)
    par = turn_based_aec_to_parallel(mod.env())
    obs, _ = par.reset(seed=0)
    assert set(obs) == {"player_0", "player_1"}


@pytest.mark.parametrize("mod", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_envs_pickle_and_copy_mid_game(mod):
    for make in (mod.env, mod.parallel_env):
        e = make()
        e.reset(seed=1)
        if make is mod.env:
            e.step("nonsense")
        else:
            e.step({a: "nonsense" for a in e.agents})
        for clone in (pickle.loads(pickle.dumps(e)), copy.deepcopy(e)):
            if make is mod.env:
                assert clone.agent_selection == e.agent_selection
                assert clone.observe(clone.agent_selection) == e.observe(e.agent_selection)
            else:
                acts = {a: "propose 1 1 1" if mod is negotiation_v0 else "1" for a in e.agents}
                assert clone.step(acts) == copy.deepcopy(e).step(acts)


def test_invalid_action_passes_the_turn_and_marks_stay_right():
    env = tictactoe_v0.env()
    env.reset(seed=0)
    env.step("5")            # X at 5
    env.step("banana")       # O loses the move
    assert env.agent_selection == "player_0"
    assert env.infos["player_1"]["action_valid"] is False
    assert "lost the turn" in env.observe("player_0")
    env.step("1")            # X again
    g = env.unwrapped.game
    assert g.cells[0] == "X" and g.cells[4] == "X" and g.to_move == 1
    # the expert plays for O (the side to move), not the side the cells' count would imply
    assert env.unwrapped.expert_action() == "9"  # blocks X's diagonal 1-5-9


def test_retry_mode_keeps_the_turn_and_forfeits():
    env = tictactoe_v0.env(invalid_action="retry", max_invalid=2)
    env.reset(seed=0)
    env.step("banana")
    assert env.agent_selection == "player_0"
    env.step("banana")
    assert env.terminations["player_0"] and env.rewards["player_0"] == -1.0


def test_parallel_round_with_a_win_mid_round():
    par = tictactoe_v0.parallel_env()
    par.reset(seed=0)
    for x, o in (("1", "4"), ("2", "5")):
        obs, rewards, terms, truncs, infos = par.step({"player_0": x, "player_1": o})
        assert not any(terms.values()) and rewards == {"player_0": 0.0, "player_1": 0.0}
    # X completes the top row; O's action of that round is ignored
    obs, rewards, terms, truncs, infos = par.step({"player_0": "3", "player_1": "6"})
    assert rewards == {"player_0": 1.0, "player_1": -1.0}
    assert terms == {"player_0": True, "player_1": True} and par.agents == []
    assert "X wins" in obs["player_1"] and par.aec_env.game.cells[5] == " "
    with pytest.raises(ResetNeeded):
        par.step({"player_0": "7"})


def test_parallel_same_cell_in_one_round_loses_the_second_move():
    par = connect_four_v0.parallel_env(max_cycles=2)
    par.reset(seed=0)
    _, _, _, _, infos = par.step({"player_0": "4"})  # player_1 gave no action: invalid, turn lost
    assert infos["player_0"]["action_valid"] and not infos["player_1"]["action_valid"]
    obs, _, terms, truncs, _ = par.step({"player_0": "4", "player_1": "4"})
    assert truncs == {"player_0": True, "player_1": True} and not any(terms.values())


def test_negotiation_max_cycles_truncates_but_max_rounds_terminates():
    par = negotiation_v0.parallel_env(max_cycles=10, max_rounds=2)
    par.reset(seed=0)
    par.step({"agent_0": "propose 1 1 1", "agent_1": "propose 1 1 1"})
    _, _, terms, truncs, infos = par.step({"agent_0": "propose 1 1 1", "agent_1": "propose 1 1 1"})
    assert all(terms.values()) and not any(truncs.values()) and infos["agent_0"]["success"] is False


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "4"])
def test_bad_max_cycles(bad):
    for mod in MODULES:
        with pytest.raises(InvalidConfig, match="max_cycles"):
            mod.parallel_env(max_cycles=bad)
    with pytest.raises(InvalidConfig, match="invalid_action"):
        tictactoe_v0.raw_env(invalid_action="skip")
    assert isinstance(tictactoe_v0.raw_env().game, TicTacToe)
