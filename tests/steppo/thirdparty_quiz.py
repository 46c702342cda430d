"""A plain Gymnasium quiz env written with no knowledge of stepgym (it must not import it).

Importing the module registers ``quiz/Quiz-v0`` (text spaces, ``__init__`` without
arguments) plus two envs the trainer must refuse: ``quiz/BoxQuiz-v0`` (a ``Box``
observation space) and ``quiz/NumberQuiz-v0`` (declares text spaces but returns numbers).
The CLI reaches them as ``tests.steppo.thirdparty_quiz:quiz/Quiz-v0``.
"""

from __future__ import annotations

import string

import gymnasium as gym
import numpy as np
from gymnasium.spaces import Box, Discrete, Text

CHARS = string.printable


class QuizEnv(gym.Env):
    """Answer 1-3 small additions in a row; reward 1 per right answer, done after the last."""

    metadata = {"render_modes": []}

    def __init__(self):
        self.observation_space = Text(max_length=500, min_length=0, charset=CHARS)
        self.action_space = Text(max_length=500, min_length=0, charset=CHARS)

    def _question(self) -> str:
        a, b = (int(x) for x in self.np_random.integers(0, 5, size=2))
        self._answer = str(a + b)
        return f"What is {a}+{b}? Answer with the number only."

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._left = int(self.np_random.integers(1, 4))
        return self._question(), {}

    def step(self, action):
        right = str(action).strip() == self._answer
        self._left -= 1
        done = self._left == 0
        obs = ("Right." if right else f"Wrong, it was {self._answer}.") + ("" if done else " " + self._question())
        return obs, float(right), done, False, {"success": right}


class BoxQuizEnv(gym.Env):
    """The same idea with a vector observation: not something an LLM can read."""

    def __init__(self):
        self.observation_space = Box(0.0, 9.0, shape=(2,), dtype=np.float32)
        self.action_space = Discrete(19)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.integers(0, 5, size=2).astype(np.float32), {}

    def step(self, action):
        return np.zeros(2, dtype=np.float32), 0.0, True, False, {}


class NumberQuizEnv(QuizEnv):
    """Declares text spaces but returns the question as a number array."""

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.array([1, 2]), {}


for _id, _cls in (("quiz/Quiz-v0", QuizEnv), ("quiz/BoxQuiz-v0", BoxQuizEnv), ("quiz/NumberQuiz-v0", NumberQuizEnv)):
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_cls, max_episode_steps=5)
