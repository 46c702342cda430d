"""``stepgym.registration.check_trainable``: one probe build of an env, one-line errors that say the fix."""

from __future__ import annotations

import string

import gymnasium as gym
import pytest
from gymnasium.spaces import Discrete, Text

import stepgym
from stepgym.errors import InvalidArgument, NotTextEnv, StepgymError, UnknownEnvError
from stepgym.registration import check_trainable

QUIZ = "tests.steppo.thirdparty_quiz"


class _TextObsIntAction(gym.Env):
    """Text observations, but the actions are integers: an LLM's text cannot drive it."""

    closed = 0

    def __init__(self, level: int = 1):
        self.observation_space = Text(100, charset=string.printable)
        self.action_space = Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return "pick 0, 1 or 2", {}

    def step(self, action):
        return "done", 0.0, True, False, {}

    def close(self):
        type(self).closed += 1


class _Closes(_TextObsIntAction):
    def __init__(self, level: int = 1):
        super().__init__(level)
        self.action_space = Text(100, charset=string.printable)


class _Broken(gym.Env):
    def __init__(self):
        raise RuntimeError("a bug in the env")


for _id, _cls in (("checktest/IntAction-v0", _TextObsIntAction), ("checktest/Closes-v0", _Closes),
                  ("checktest/Broken-v0", _Broken)):
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_cls)


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert "\n" not in msg, msg
    return msg


def test_builtin_env_passes_and_returns_the_bare_id():
    assert check_trainable("stepgym/Countdown-v0") == "stepgym/Countdown-v0"
    assert check_trainable("stepgym/ToolUse-v0", {"difficulty": "medium"}, seed=3) == "stepgym/ToolUse-v0"


def test_plain_gymnasium_env_in_module_form_passes():
    assert check_trainable(f"{QUIZ}:quiz/Quiz-v0") == "quiz/Quiz-v0"
    assert check_trainable("quiz/Quiz-v0", None) == "quiz/Quiz-v0"  # registered now


def test_typo_suggests_the_registered_id():
    with pytest.raises(UnknownEnvError, match="Did you mean 'stepgym/ToolUse-v0'") as e:
        check_trainable("stepgym/ToolUze-v0")
    _one_line(e.value)


def test_missing_module_says_how_to_fix():
    with pytest.raises(InvalidArgument, match="could not import module 'no_such_module_xyz'.*PYTHONPATH") as e:
        check_trainable("no_such_module_xyz:ns/X-v0")
    _one_line(e.value)


def test_unexpected_kwarg_names_it_and_the_constructor_parameters():
    with pytest.raises(InvalidArgument) as e:
        check_trainable("stepgym/Wordle-v0", {"difficulty": "easy"})
    msg = _one_line(e.value)
    assert "'difficulty'" in msg and "stepgym.envs.wordle:WordleEnv" in msg
    # the env's own parameters and the StepEnv ones it forwards **kwargs to
    assert "max_guesses" in msg and "max_steps" in msg and "Remove it from the env kwargs" in msg


def test_unexpected_kwargs_on_a_constructor_without_parameters():
    with pytest.raises(InvalidArgument, match="takes no keyword arguments") as e:
        check_trainable(f"{QUIZ}:quiz/Quiz-v0", {"difficulty": "easy", "level": 2})
    msg = _one_line(e.value)
    assert "'difficulty', 'level'" in msg and "Remove them" in msg


def test_bad_value_surfaces_the_env_message():
    with pytest.raises(InvalidArgument) as e:
        check_trainable("stepgym/ToolUse-v0", {"difficulty": "nightmare"})
    msg = _one_line(e.value)
    assert "difficulty must be one of" in msg and "'nightmare'" in msg and "env kwargs" in msg


def test_non_dict_kwargs():
    with pytest.raises(InvalidArgument, match="JSON object"):
        check_trainable("stepgym/ToolUse-v0", ["difficulty", "easy"])  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore:.*not within the observation space")
@pytest.mark.parametrize("env_id, needle", [
    ("CartPole-v1", "non-text observation_space Box(shape=(4,)"),
    (f"{QUIZ}:quiz/BoxQuiz-v0", "non-text observation_space Box(shape=(2,)"),
    (f"{QUIZ}:quiz/NumberQuiz-v0", "observations of type ndarray, not str"),
    ("checktest/IntAction-v0", "non-text action_space Discrete(3)"),
])
def test_non_text_env_says_to_wrap_it(env_id, needle):
    with pytest.raises(NotTextEnv) as e:
        check_trainable(env_id)
    msg = _one_line(e.value)
    assert needle in msg
    assert "text observations and actions (str)" in msg and "Wrapper" in msg and "Text" in msg
    assert isinstance(e.value, StepgymError)


def test_probe_env_is_closed():
    before_ok, before_bad = _Closes.closed, _TextObsIntAction.closed
    check_trainable("checktest/Closes-v0")
    with pytest.raises(NotTextEnv):
        check_trainable("checktest/IntAction-v0")
    assert _Closes.closed == before_ok + 1 and _TextObsIntAction.closed == before_bad + 1


def test_expert_needed_for_behaviour_cloning():
    assert check_trainable("stepgym/Countdown-v0", expert=True) == "stepgym/Countdown-v0"
    with pytest.raises(InvalidArgument, match=r"no expert_action\(\).*--sft-episodes 0") as e:
        check_trainable(f"{QUIZ}:quiz/Quiz-v0", expert=True)
    _one_line(e.value)


def test_env_bug_without_kwargs_keeps_its_traceback():
    with pytest.raises(RuntimeError, match="a bug in the env"):
        check_trainable("checktest/Broken-v0")
    # with kwargs the kwargs are the likely cause: one line naming them
    with pytest.raises(InvalidArgument, match="could not build stepgym/Sokoban-v0 with env kwargs"):
        check_trainable("stepgym/Sokoban-v0", {"num_boxes": "x"})


def test_exported():
    assert "check_trainable" in stepgym.registration.__all__
