from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import pytest
from gymnasium.spaces import Text
from hypothesis import given
from hypothesis import strategies as st

import stepgym
from stepgym.core import StepEnv, StepResult, clip_text, quote_action
from stepgym.spaces import UnicodeText


@pytest.mark.parametrize("name", stepgym.__all__)
def test_every_public_name_imports(name):
    assert getattr(stepgym, name) is not None


def test_import_is_light():
    code = "import sys, stepgym; bad=[m for m in ('torch','transformers','pettingzoo','steppo') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_steppo_imports_without_side_effects():
    out = subprocess.run([sys.executable, "-c", "import sys, steppo; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


@given(st.text(max_size=50))
def test_unicode_text_contains_any_string_in_bounds(s):
    space = UnicodeText(50, min_length=0)
    assert space.contains(s)
    assert not space.contains(s + "x" * 51)


def test_unicode_text_edge_cases():
    space = UnicodeText(5, min_length=1)
    assert not space.contains("")
    assert space.contains("\ud800")
    assert not space.contains(b"abc")
    assert not space.contains(3)
    assert isinstance(space, Text)
    space.seed(0)
    a = [space.sample() for _ in range(5)]
    space.seed(0)
    assert a == [space.sample() for _ in range(5)]
    assert all(space.contains(x) for x in a)
    assert UnicodeText(5) == UnicodeText(5) and UnicodeText(5) != UnicodeText(6)


@given(st.text(max_size=300), st.integers(min_value=1, max_value=120))
def test_clip_text_bound(text, limit):
    out = clip_text(text, limit)
    assert len(out) <= limit
    if len(text) <= limit:
        assert out == text


def test_clip_text_keeps_head_and_tail():
    out = clip_text("HEAD" + "x" * 1000 + "TAIL", 100)
    assert out.startswith("HEAD") and out.endswith("TAIL") and "cut" in out


def test_quote_action_is_bounded_and_printable():
    q = quote_action("\ud800" + "a" * 10_000)
    assert len(q) < 200 and "10001 characters" in q
    q.encode("utf-8")  # no lone surrogate survives


class _Echo(StepEnv):
    default_max_steps = 3

    def _reset(self, options):
        return "start", {}

    def _step(self, action):
        return StepResult("echo: " + action * 100, reward=1, terminated=action == "stop", success=action == "stop")


def test_stepenv_truncation_and_success_key():
    env = _Echo()
    env.reset(seed=0)
    out = [env.step("a") for _ in range(3)]
    assert [o[3] for o in out] == [False, False, True]
    assert out[-1][4]["success"] is False
    env.reset()
    *_, term, trunc, info = env.step("stop")
    assert term is True and trunc is False and info["success"] is True


def test_stepenv_bounds_observation_and_action():
    env = _Echo(max_obs_chars=100, max_action_chars=10)
    env.reset()
    obs, *_ = env.step("abcdefgh")
    assert len(obs) <= 100 and "cut" in obs
    obs, r, te, tr, info = env.step("x" * 11)
    assert info["action_valid"] is False and "limit" in obs


def test_stepenv_rejects_bad_arguments():
    with pytest.raises(stepgym.InvalidArgument, match="max_steps"):
        _Echo(max_steps=0)
    with pytest.raises(stepgym.InvalidArgument, match="render_mode"):
        _Echo(render_mode="rgb_array")
    env = _Echo()
    env.reset()
    with pytest.raises(stepgym.InvalidArgument, match="expected str"):
        env.step(3)


def test_render_ansi_returns_last_observation():
    env = _Echo(render_mode="ansi")
    obs, _ = env.reset()
    assert env.render() == obs


def test_step_record_fields():
    r = stepgym.StepRecord(prompt_ids=[1, 2], response_ids=[3], logprobs=[-0.5], reward=1.0, traj_id=0, step_index=0, done=True)
    assert r.terminated is False and r.info == {}
