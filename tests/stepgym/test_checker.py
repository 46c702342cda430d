"""The checker must catch real contract violations, not only pass good envs."""

from __future__ import annotations

import numpy as np
import pytest

import stepgym
from stepgym.core import StepEnv, StepResult
from stepgym.errors import CheckFailed


class _Good(StepEnv):
    default_max_steps = 4

    def _reset(self, options):
        self.target = int(self.np_random.integers(0, 10))
        return f"say {self.target}", {}

    def _step(self, action):
        ok = action.strip() == str(self.target)
        return StepResult("ok" if ok else "no", reward=float(ok), terminated=ok, success=ok)

    def expert_action(self):
        return str(self.target)


class _RaisesOnJson(_Good):
    def _step(self, action):
        import json

        if action.startswith("{"):
            json.loads(action)  # a bug: hostile JSON escapes as an exception
        return super()._step(action)


class _Nondeterministic(_Good):
    def _reset(self, options):
        import random

        self.target = random.randint(0, 10**9)  # global RNG: not seeded by reset(seed)
        return f"say {self.target}", {}


class _NumpyBool(_Good):
    def step(self, action):
        obs, r, te, tr, info = super().step(action)
        return obs, r, np.bool_(te), tr, info


class _EchoesEverything(_Good):
    def _step(self, action):
        return StepResult("you said " + action * 3)


def _failed(env):
    return {r.name for r in stepgym.run_checks(env, episodes=2, gymnasium_checks=False) if not r.passed}


def test_good_env_passes():
    assert _failed(_Good()) == set()


def test_catches_exceptions_on_hostile_input():
    assert "hostile actions" in _failed(_RaisesOnJson())


def test_catches_unseeded_randomness():
    assert "seeded determinism" in _failed(_Nondeterministic())


def test_catches_numpy_bool_flags():
    assert _failed(_NumpyBool()) & {"hostile actions", "random actions"}


def test_catches_unbounded_echo():
    assert "hostile actions" in _failed(_EchoesEverything(max_obs_chars=10**9, max_action_chars=10**7))


def test_check_env_raises_with_every_failure_listed():
    with pytest.raises(CheckFailed) as exc:
        stepgym.check_env(_RaisesOnJson(), gymnasium_checks=False)
    assert "hostile actions" in str(exc.value)


def test_hostile_actions_are_varied():
    from stepgym.checker import hostile_actions

    pairs = hostile_actions()
    labels = [label for label, _ in pairs]
    acts = dict(pairs)
    assert len(set(labels)) == len(labels) == len(acts)
    assert "" in acts.values() and any(len(a) >= 1_000_000 for a in acts.values())
    assert any("\ud800" in a for a in acts.values())
