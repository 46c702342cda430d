"""Plain ``gymnasium.make_vec(..., vectorization_mode="async")`` (shared memory on) with text envs.

Gymnasium's own ``Text`` hooks decode the shared buffer once, so every step used to return
the same stale string; stepgym.spaces registers hooks for ``UnicodeText`` that round-trip
any unicode string up to the space's bound.
"""

from __future__ import annotations

import copy
import multiprocessing as mp
import pickle
from contextlib import closing
from typing import Any

import gymnasium as gym
import pytest
from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory, write_to_shared_memory

import stepgym  # noqa: F401 - registers the built-in envs
from stepgym.core import StepEnv, StepResult
from stepgym.spaces import SharedTextBatch, UnicodeText

UNICODE = ["héllo wörld", "中文 and 😀 emoji", "lone \ud800 surrogate", "", "Ω" * 40, "x\x00y"]


class EchoEnv(StepEnv):
    """Observes the action it is given (bound 40 characters), for round-trip tests."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_obs_chars=40, **kwargs)

    def _reset(self, options: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        return f"start {int(self.np_random.integers(1000))} ✓", {}

    def _step(self, action: str) -> StepResult:
        return StepResult(action, terminated=action == "stop")


ECHO = "stepgym_test/Echo-v0"
if ECHO not in gym.registry:
    gym.register(ECHO, entry_point=EchoEnv)


def _both(env_id: str, **kwargs: Any) -> tuple[gym.vector.VectorEnv, gym.vector.VectorEnv]:
    a = gym.make_vec(env_id, num_envs=2, vectorization_mode="async", **kwargs)
    s = gym.make_vec(env_id, num_envs=2, vectorization_mode="sync", **kwargs)
    assert a.shared_memory  # the default this test is about
    return a, s


@pytest.mark.parametrize("env_id", ["stepgym/ToolUse-v0", "stepgym/Countdown-v0", "stepgym/Household-v0",
                                    "stepgym/TicTacToe-v0"])
def test_async_make_vec_matches_sync_step_by_step(env_id):
    a, s = _both(env_id)
    with closing(a), closing(s):
        oa, _ = a.reset(seed=7)
        os_, _ = s.reset(seed=7)
        assert oa == os_ and isinstance(oa, tuple) and all(isinstance(o, str) for o in oa)
        seen = [oa]
        for t in range(4):
            actions = list(s.call("expert_action")) if t % 2 == 0 else ["not a valid action", "né 😀"]
            ra, rs = a.step(actions), s.step(actions)
            assert ra[0] == rs[0], (ra[0][0][:200], rs[0][0][:200])
            assert ra[1].tolist() == rs[1].tolist()
            assert ra[2].tolist() == rs[2].tolist() and ra[3].tolist() == rs[3].tolist()
            seen.append(ra[0])
        assert len({obs[0] for obs in seen}) > 1  # not one stale string


def test_unicode_observations_round_trip_up_to_the_bound():
    a, s = _both(ECHO)
    with closing(a), closing(s):
        assert a.reset(seed=1)[0] == s.reset(seed=1)[0]
        for i in range(0, len(UNICODE), 2):
            actions = UNICODE[i : i + 2]
            oa = a.step(actions)[0]
            assert oa == s.step(actions)[0] == tuple(actions)
        # exactly the bound, astral characters included; longer ones are clipped by StepEnv
        full = ["😀" * 40, "é" * 39 + "\udfff"]
        assert a.step(full)[0] == tuple(full)
        long = ["a" * 100, "😀" * 41]
        oa = a.step(long)[0]
        assert oa == s.step(long)[0] and all(len(o) == 40 for o in oa)


def test_same_step_autoreset_with_shared_memory():
    a, s = _both(ECHO, vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
    with closing(a), closing(s):
        a.reset(seed=2)
        s.reset(seed=2)
        ra, rs = a.step(["stop", "go 😀"]), s.step(["stop", "go 😀"])
        assert ra[0] == rs[0] and ra[0][0].startswith("start ") and ra[0][1] == "go 😀"
        assert ra[4]["final_obs"][0] == "stop"


def test_copy_false_gives_a_live_view_that_copies_to_a_tuple():
    with closing(gym.make_vec(ECHO, num_envs=2, vectorization_mode="async",
                              vector_kwargs={"copy": False})) as envs:
        envs.reset(seed=0)
        view = envs.step(["one", "two"])[0]
        assert isinstance(view, SharedTextBatch) and view == ("one", "two")
        snapshot = copy.deepcopy(view)
        envs.step(["three", "四"])
        assert view == ("three", "四") and list(view) == ["three", "四"] and view[-1] == "四"
        assert snapshot == ("one", "two") and type(snapshot) is tuple
        assert pickle.loads(pickle.dumps(view)) == ("three", "四")
        assert view[0:1] == ("three",)
        with pytest.raises(IndexError):
            view[2]


def test_hooks_directly_and_their_errors():
    space = UnicodeText(5)
    mem = create_shared_memory(space, n=3, ctx=mp.get_context())
    batch = read_from_shared_memory(space, mem, n=3)
    assert batch == ("", "", "")  # nothing written yet: empty strings, not 'aaaaa'
    write_to_shared_memory(space, 1, "ab😀", mem)
    write_to_shared_memory(space, 2, "12345", mem)
    write_to_shared_memory(space, 1, "z", mem)  # a shorter string replaces a longer one
    assert batch == ("", "z", "12345")
    with pytest.raises(ValueError, match="exceeds its space's bound of 5"):
        write_to_shared_memory(space, 0, "123456", mem)
    with pytest.raises(TypeError, match="must be a str"):
        write_to_shared_memory(space, 0, b"bytes", mem)
