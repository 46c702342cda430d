"""What to do when the model's step is malformed: one wrapper, five documented policies.

Training recipes disagree on this, and the choice changes what a policy learns, so it is
explicit here. A step is *malformed* when the ``validator`` rejects it (see below) or when
the env reports ``info["action_valid"] == False`` after the step.

=================  ==========================================================================
mode               what happens on a malformed step
=================  ==========================================================================
``feedback``       The env takes the step (it counts towards the step limit) and the
                   observation explains the problem; the episode goes on. **This is what the
                   StepPO paper's setups do** (HotpotQA with a search tool, ALFWorld,
                   WebShop): the error text is fed back as the next observation and the
                   agent continues. stepgym's envs already behave this way, so this mode
                   mostly adds the validator's message when a stricter format is required.
``penalize``       ``feedback`` plus a reward of ``-penalty`` (component ``"malformed"``), as
                   recipes with an invalid-action penalty coefficient do.
``terminate``      The episode ends on the first malformed step (``terminated=True``,
                   ``info["success"] = False``) with ``-penalty``. Strict, cheap rollouts;
                   the model never sees its error.
``reprompt``       The env is *not* stepped: the observation is the error plus the previous
                   observation, and the model tries again, up to ``max_retries`` times in a
                   row; the next malformed step is then passed to the env. Retries do not
                   count towards the env's step limit. Needs a validator.
``default_action`` The malformed step is replaced by ``default_action`` (a string, or a
                   callable ``(last_observation, last_info) -> str``) and the env takes that;
                   ``info["action_replaced"]`` is True. Needs a validator.
=================  ==========================================================================

The validator is ``validator(action) -> str | None`` (an error message, or ``None`` when
the action is fine). When none is given, ``env.unwrapped.validate_action`` is used if the
env has one, else "parses as a tool call in some supported format"
(:func:`~stepgym.wrappers.formats.parse_action`), which suits tool-calling envs.
``info["malformed"]`` says whether the step was malformed, in every mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym

from stepgym.actions import ParseError
from stepgym.core import clip_text
from stepgym.errors import InvalidArgument
from stepgym.spaces import DEFAULT_ACTION_CHARS, UnicodeText
from stepgym.wrappers._common import UNBOUNDED, add_reward_component, check_number, text_bound
from stepgym.wrappers.formats import parse_action

__all__ = ["MalformedActionPolicy", "MODES"]

MODES: tuple[str, ...] = ("feedback", "penalize", "terminate", "reprompt", "default_action")

_MAX_FEEDBACK = 2048


def _default_validator(env: gym.Env) -> Callable[[str], str | None]:
    own = getattr(env.unwrapped, "validate_action", None)
    if callable(own):
        return own

    def tool_call_validator(action: str) -> str | None:
        parsed = parse_action(action)
        return parsed.message if isinstance(parsed, ParseError) else None

    return tool_call_validator


class MalformedActionPolicy(gym.Wrapper):
    """Choose what a malformed step does: ``feedback``, ``penalize``, ``terminate``, ``reprompt``, ``default_action``.

    See the module docs for each mode and which the StepPO paper uses (``feedback``).

    Args:
        env: any text env.
        mode: one of :data:`MODES`.
        validator: ``action -> error message | None``; see the module docs for the default.
            In ``feedback``/``penalize``/``terminate`` modes it is only used when given
            (otherwise the env's ``action_valid`` decides).
        penalty: reward subtracted in ``penalize`` and ``terminate`` modes.
        max_retries: consecutive retries allowed in ``reprompt`` mode.
        default_action: the replacement in ``default_action`` mode.
        repeat_observation: in ``reprompt`` mode, repeat the previous observation after
            the error (turn off under a context wrapper, which already shows it).

    Example:
        >>> import gymnasium as gym, stepgym
        >>> from stepgym.wrappers import MalformedActionPolicy
        >>> env = MalformedActionPolicy(gym.make("stepgym/ToolUse-v0"), mode="reprompt", max_retries=1)
        >>> _ = env.reset(seed=0)
        >>> obs, r, term, trunc, info = env.step("I am not sure")
        >>> info["malformed"], info["retries_left"], env.unwrapped.elapsed_steps
        (True, 0, 0)
    """

    def __init__(
        self,
        env: gym.Env,
        mode: str = "feedback",
        *,
        validator: Callable[[str], str | None] | None = None,
        penalty: float = 0.1,
        max_retries: int = 2,
        default_action: str | Callable[[Any, dict[str, Any]], str] | None = None,
        repeat_observation: bool = True,
    ) -> None:
        super().__init__(env)
        if mode not in MODES:
            raise InvalidArgument(f"mode must be one of {MODES}, got {mode!r}")
        if validator is not None and not callable(validator):
            raise InvalidArgument(f"validator must be a callable action -> str | None, got {validator!r}")
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise InvalidArgument(f"max_retries must be an int >= 0, got {max_retries!r}")
        if mode == "default_action" and default_action is None:
            raise InvalidArgument(
                "mode='default_action' needs default_action=: a string the env accepts, "
                "or a callable (last_observation, last_info) -> str"
            )
        if default_action is not None and not (isinstance(default_action, str) or callable(default_action)):
            raise InvalidArgument(f"default_action must be a str or a callable, got {default_action!r}")
        self.mode = mode
        self.penalty = check_number("penalty", penalty, low=0.0)
        self.max_retries = max_retries
        self.default_action = default_action
        self.repeat_observation = bool(repeat_observation)
        self._user_validator = validator
        self.validator = validator if validator is not None or mode in ("feedback", "penalize", "terminate") \
            else _default_validator(env)
        self._last_obs: Any = ""
        self._last_info: dict[str, Any] = {}
        self._retries = 0
        # Malformed text of any kind is a valid input to this wrapper.
        self.action_space = UnicodeText(
            max(text_bound(env.action_space, DEFAULT_ACTION_CHARS), DEFAULT_ACTION_CHARS), min_length=0
        )
        inner = text_bound(env.observation_space)
        if mode in ("reprompt", "feedback", "penalize", "terminate"):
            # Error text is put in front of the observation (reprompt: of the previous one).
            self.observation_space = UnicodeText(min(UNBOUNDED, inner + _MAX_FEEDBACK + 64), min_length=0)

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self._last_obs, self._last_info = obs, dict(info)
        self._retries = 0
        return obs, info

    def _check(self, action: Any) -> str | None:
        if self.validator is None:
            return None
        if not isinstance(action, str):
            return f"the action must be text, got {type(action).__name__}."
        err = self.validator(action)
        return None if err is None else clip_text(str(err), _MAX_FEEDBACK - 64)

    def step(self, action: Any):
        error = self._check(action)
        if error is not None and self.mode == "reprompt" and self._retries < self.max_retries:
            self._retries += 1
            left = self.max_retries - self._retries
            obs = f"Your step could not be used: {error} Try again ({left} retr{'y' if left == 1 else 'ies'} left)."
            if self.repeat_observation and isinstance(self._last_obs, str):
                obs += "\n\n" + self._last_obs
            info = {"action_valid": False, "error": error, "malformed": True, "retries_left": left}
            return obs, 0.0, False, False, info
        replaced = False
        original = action
        if error is not None and self.mode == "default_action":
            d = self.default_action
            action = d if isinstance(d, str) else d(self._last_obs, self._last_info)
            replaced = True
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = dict(info)
        env_invalid = info.get("action_valid", True) is False
        malformed = error is not None or env_invalid
        if replaced:
            info["action_replaced"] = True
            info["original_action"] = original
            info["error"] = error
            # The env took a valid replacement; the model's step itself was malformed.
            info["action_valid"] = False
        elif error is not None:
            info["action_valid"] = False
            if not env_invalid:  # when the env objected too, its own message stays
                info["error"] = error
                if isinstance(obs, str):
                    obs = f"Format error: {error}\n\n{obs}"
        if self.mode == "reprompt":
            # any step the env takes (valid, or malformed after the retries) starts a new count
            self._retries = 0
            info["retries_left"] = self.max_retries
        if malformed and self.mode in ("penalize", "terminate"):
            reward, info = add_reward_component(float(reward), info, "malformed", -self.penalty)
        if malformed and self.mode == "terminate" and not terminated:
            terminated, truncated = True, False
            info["success"] = False
        info["malformed"] = malformed
        self._last_obs, self._last_info = obs, info
        return obs, reward, terminated, truncated, info
