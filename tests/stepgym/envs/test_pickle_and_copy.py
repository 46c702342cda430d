"""Every registered ``stepgym/`` env pickles and deep-copies, and the copy plays on identically.

Process pools under ``spawn``, Ray actors and checkpoints of env state all pickle envs. Each
env is built with ``gymnasium.make`` (its wrappers included) and copied fresh, and again in
the middle of an episode; the copy and the original then get the same actions and must
return the same observations, rewards, flags and infos, across an episode end and the
reset after it. TextWorld runs its games in a ctypes C library and cannot be copied once a
game runs: for it the test checks the clear error and that an env factory pickles instead.
"""

from __future__ import annotations

import copy
import functools
import multiprocessing as mp
import pickle
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import gymnasium as gym
import pytest

import stepgym
from stepgym.errors import InvalidArgument
from stepgym.registration import BUILTINS, is_available

IDS = [e.id for e in stepgym.list_envs("stepgym")]
TEXTWORLD = "stepgym/TextWorld-v0"
COPIES = {
    "pickle": lambda env: pickle.loads(pickle.dumps(env)),
    "deepcopy": copy.deepcopy,
}
JUNK = "this is not an action 😀"


def _make(env_id: str) -> gym.Env:
    info = next((b for b in BUILTINS if b.id == env_id), None)
    if info is not None and not is_available(info):
        pytest.skip(f"{env_id} needs `{info.requires}`")
    return gym.make(env_id)


def _next_action(env: gym.Env, t: int) -> str:
    if t % 3 == 1:
        return JUNK
    try:
        return env.unwrapped.expert_action()
    except NotImplementedError:
        return "look"


def _play(a: gym.Env, b: gym.Env, steps: int) -> int:
    """Step both envs with the same actions (chosen on ``a``); assert equal outcomes. Returns episodes ended."""
    ended = 0
    for t in range(steps):
        action = _next_action(a, t)
        ra, rb = a.step(action), b.step(action)
        assert ra[0] == rb[0], f"step {t}: observations differ"
        assert ra[1:4] == rb[1:4], f"step {t}: reward/flags differ"
        assert ra[4] == rb[4], f"step {t}: infos differ"
        if ra[2] or ra[3]:
            ended += 1
            assert a.reset() == b.reset()  # unseeded: the copied RNG state decides
    return ended


@pytest.mark.parametrize("how", sorted(COPIES))
@pytest.mark.parametrize("env_id", [i for i in IDS if i != TEXTWORLD])
def test_copies_play_on_identically(env_id, how):
    env = _make(env_id)
    fresh = COPIES[how](env)
    assert str(fresh) == str(env)  # the same wrapper stack
    assert env.reset(seed=3) == fresh.reset(seed=3)
    _play(env, fresh, 3)

    env.reset(seed=11)
    env.step(JUNK)
    mid = COPIES[how](env)
    assert mid.unwrapped is not env.unwrapped
    ended = _play(env, mid, 8)
    if env_id != "stepgym/TextArena-v0":  # its default Wordle expert wins in one move too; kept cheap
        assert ended >= 1 or env.unwrapped.max_steps > 8
    env.close()
    mid.close()
    fresh.close()


def _finish_in_worker(env: gym.Env, actions: list[str]) -> list[Any]:
    return [env.step(a)[:4] for a in actions]


def test_a_running_env_continues_in_a_spawned_worker():
    env = gym.make("stepgym/MultiHopQA-v0")
    env.reset(seed=5)
    env.step(JUNK)
    actions = [JUNK, "<tool_call>{\"name\": \"search\", \"arguments\": {\"query\": \"born\"}}</tool_call>"]
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        remote = pool.submit(_finish_in_worker, env, actions).result(timeout=120)
    assert remote == _finish_in_worker(env, actions)


@pytest.mark.parametrize("env_id", IDS)
def test_a_non_str_action_raises_and_does_not_count(env_id):
    """Non-text actions are a programming error (InvalidArgument); malformed text never raises."""
    if env_id == TEXTWORLD:
        pytest.importorskip("textworld")
    env = _make(env_id)
    env.reset(seed=0)
    for bad in (None, 3, b"bytes", ["list"]):
        with pytest.raises(InvalidArgument, match="actions are text"):
            env.step(bad)
    assert env.unwrapped.elapsed_steps == 0
    obs, reward, terminated, truncated, info = env.step("\x00 malformed ]]}} \ud800")
    assert isinstance(obs, str) and info["action_valid"] is False and env.unwrapped.elapsed_steps == 1
    env.close()


def test_textworld_is_used_through_a_factory():
    pytest.importorskip("textworld")
    factory = functools.partial(gym.make, TEXTWORLD, difficulty="easy", num_games=1)
    env = pickle.loads(pickle.dumps(factory))()
    pickle.dumps(env)  # no game running yet: fine
    env.reset(seed=0)
    for how, copy_fn in COPIES.items():
        with pytest.raises(TypeError, match="cannot be pickled or deep-copied.*functools.partial"):
            copy_fn(env)
    obs, *_ = env.step("look")  # the failed copy left the env working
    assert isinstance(obs, str)
    env.close()
    pickle.dumps(env)  # closed: no game, pickles again
