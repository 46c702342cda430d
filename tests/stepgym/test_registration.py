from __future__ import annotations

import sys
import textwrap

import gymnasium as gym
import pytest

import stepgym
from stepgym.errors import DependencyNotInstalled, InvalidArgument, UnknownEnvError


def test_builtins_registered_on_import():
    assert "stepgym/ToolUse-v0" in gym.registry
    ids = [e.id for e in stepgym.list_envs("stepgym")]
    assert ids == sorted(ids) and "stepgym/ToolUse-v0" in ids
    for e in stepgym.list_envs("stepgym"):
        assert e.description and e.max_steps and e.reward_range
        # ids follow ns/Name-vN, variants go into kwargs
        assert e.id.startswith("stepgym/") and e.id.rsplit("-v", 1)[1].isdigit()


def test_unknown_id_suggests_close_match():
    with pytest.raises(UnknownEnvError, match="Did you mean 'stepgym/ToolUse-v0'"):
        stepgym.make("stepgym/ToolUze-v0")
    with pytest.raises(UnknownEnvError, match="stepgym/ToolUse-v0"):
        stepgym.make("ToolUse-v0")


def test_bad_id_type():
    with pytest.raises(InvalidArgument):
        stepgym.make("")


def test_module_colon_id_registers_third_party_env(tmp_path, monkeypatch):
    pkg = tmp_path / "thirdparty_quiz.py"
    pkg.write_text(textwrap.dedent('''
        import string
        import gymnasium as gym
        from gymnasium.spaces import Text

        class Quiz(gym.Env):
            def __init__(self):
                self.observation_space = Text(200, min_length=0, charset=string.printable)
                self.action_space = Text(200, min_length=0, charset=string.printable)
            def reset(self, *, seed=None, options=None):
                super().reset(seed=seed)
                self.n = int(self.np_random.integers(1, 9))
                return f"What is {self.n}+1?", {"action_valid": True, "error": None}
            def step(self, action):
                ok = action.strip() == str(self.n + 1)
                return ("right" if ok else "wrong"), float(ok), True, False, {"action_valid": True, "error": None, "success": ok}

        gym.register(id="quizns/Quiz-v0", entry_point=Quiz)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    env = stepgym.make("thirdparty_quiz:quizns/Quiz-v0")
    obs, _ = env.reset(seed=1)
    assert obs.startswith("What is")
    assert any(e.id == "quizns/Quiz-v0" for e in stepgym.list_envs())
    # the checker works on a third-party env with a plain gymnasium Text space
    results = {r.name: r for r in stepgym.run_checks("quizns/Quiz-v0", episodes=1)}
    assert results["text spaces"].passed and results["seeded determinism"].passed
    assert "expert succeeds" not in results
    sys.modules.pop("thirdparty_quiz", None)


def test_module_colon_id_bad_module():
    with pytest.raises(InvalidArgument, match="could not import module"):
        stepgym.make("no_such_module_xyz:ns/X-v0")


def test_dependency_error_names_pip_command():
    err = DependencyNotInstalled("stepgym/TextWorld-v0", "pip install textworld")
    assert "pip install textworld" in str(err)
