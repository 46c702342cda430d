"""Wrappers for any text env: context, reward shaping, action formats, malformed actions, recording.

Each is a :class:`gymnasium.Wrapper` that works over stepgym's envs and over third-party
envs with a plain :class:`gymnasium.spaces.Text` space, composes with the others, and
forgets its per-episode state on ``reset``. See docs/wrappers.md for a tour.

Example:
    >>> import gymnasium as gym, stepgym
    >>> from stepgym.wrappers import ContextWindow, ParseActions, StepPenalty
    >>> env = ContextWindow(StepPenalty(ParseActions(gym.make("stepgym/ToolUse-v0")), 0.01), max_steps=4)
    >>> prompt, info = env.reset(seed=0)
    >>> prompt, reward, terminated, truncated, info = env.step("Action: lookup[Belxo, population]")
    >>> info["reward_components"], info["context"]["steps_kept"]
    ({'env': 0.0, 'step_penalty': -0.01}, 1)
"""

from __future__ import annotations

from stepgym.wrappers.context import (
    ChatMessages,
    ContextWindow,
    HistoryPrompt,
    HistoryTemplate,
    TokenBudget,
    TokenCounter,
)
from stepgym.wrappers.formats import (
    FORMATS,
    ParseActions,
    ParsedAction,
    format_answer_tag,
    format_hermes,
    parse_action,
    parse_answer_tag,
    parse_boxed,
)
from stepgym.wrappers.malformed import MODES as MALFORMED_MODES
from stepgym.wrappers.malformed import MalformedActionPolicy
from stepgym.wrappers.recording import (
    DEFAULT_INFO_KEYS,
    RecordTrajectories,
    read_recording,
    read_trajectories,
)
from stepgym.wrappers.reward import (
    DiscountedTerminalReward,
    FormatReward,
    InvalidActionPenalty,
    Potential,
    PotentialShaping,
    StepPenalty,
    SuccessBonus,
)

__all__ = [
    # context (the state s_t)
    "HistoryPrompt",
    "ContextWindow",
    "TokenBudget",
    "ChatMessages",
    "HistoryTemplate",
    "TokenCounter",
    # reward shaping (info["reward_components"])
    "StepPenalty",
    "InvalidActionPenalty",
    "FormatReward",
    "SuccessBonus",
    "PotentialShaping",
    "Potential",
    "DiscountedTerminalReward",
    # action formats
    "ParseActions",
    "ParsedAction",
    "parse_action",
    "parse_answer_tag",
    "parse_boxed",
    "format_hermes",
    "format_answer_tag",
    "FORMATS",
    # malformed actions
    "MalformedActionPolicy",
    "MALFORMED_MODES",
    # recording
    "RecordTrajectories",
    "read_trajectories",
    "read_recording",
    "DEFAULT_INFO_KEYS",
]
