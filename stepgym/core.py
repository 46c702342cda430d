"""The step-level MDP core: :class:`StepEnv` and :class:`StepRecord`.

One action is one whole LLM generation (thought + tool call / command / answer); one
observation is the text the model reads next. ``StepEnv`` implements the parts every
text env shares so that subclasses only write the task logic:

* text spaces (:class:`~stepgym.spaces.UnicodeText`) with length bounds,
* the step limit (``truncated``) and the shared ``info`` keys
  (``action_valid``, ``error``, and ``success`` at episode end),
* Python ``float`` rewards and ``bool`` flags, observations cut to the space bound,
* an oversized action answered with an error observation (``action_valid=False``, the step
  counts) instead of a crash; a non-string action raises
  :class:`~stepgym.errors.InvalidArgument`, and ``step()`` before ``reset()`` or after the
  episode ended raises :class:`~stepgym.errors.ResetNeeded`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, SupportsFloat

import gymnasium as gym

from stepgym.errors import InvalidArgument, ResetNeeded
from stepgym.spaces import DEFAULT_ACTION_CHARS, DEFAULT_OBS_CHARS, UnicodeText

__all__ = ["StepEnv", "StepRecord", "StepResult", "clip_text", "quote_action"]


def clip_text(text: str, limit: int, marker: str = "\n[... {n} characters cut ...]\n") -> str:
    """Cut ``text`` to at most ``limit`` characters, keeping its head and tail.

    Example:
        >>> clip_text("a" * 10, 8, marker="..")
        'aaa..aaa'
    """
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    m = marker.format(n=cut)
    # the marker itself takes room; grow the cut until everything fits.
    m = marker.format(n=cut + len(m))
    room = max(0, limit - len(m))
    if room == 0:
        return text[:limit]
    head = room - room // 2
    tail = room // 2
    return text[:head] + m + (text[len(text) - tail :] if tail else "")


def quote_action(action: str, limit: int = 120) -> str:
    """A short, printable quotation of an action for error messages.

    Echoes of model output are bounded (a 1 MB action must not become a 1 MB observation)
    and escape what is not printable, lone surrogates included.
    """
    head = action[:limit]
    text = head.encode("unicode_escape", errors="backslashreplace").decode("ascii")
    if len(text) > limit:
        text = text[:limit]
    if len(action) > limit:
        text += f"... ({len(action)} characters)"
    return repr(text) if text else "''"


@dataclass(slots=True)
class StepResult:
    """What :meth:`StepEnv._step` returns; ``StepEnv.step`` turns it into the 5-tuple."""

    observation: str
    reward: float = 0.0
    terminated: bool = False
    success: bool | None = None
    action_valid: bool = True
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class StepRecord:
    """One step of the step-level MDP, as the trainer stores it.

    Token ids are exactly the ones fed to and produced by the model (token-in/token-out):
    a trainer never re-tokenises ``prompt_text``/``response_text`` to train.

    Attributes:
        prompt_ids: token ids of the state s_t (the prompt fed to the model).
        response_ids: token ids of the action a_t (the generated step).
        logprobs: log pi_old(a_t,i | s_t, a_t,<i) per response token.
        reward: r_t returned by the env for this step.
        traj_id: id of the episode this step belongs to.
        step_index: t, 0-based within the episode.
        done: True on the episode's last step (terminated or truncated).
        terminated: True when the episode ended by the task (no bootstrap).
        truncated: True when the episode hit its step limit (bootstrap allowed).
        group_id: id shared by episodes of the same task seed (GRPO-style groups).
        prompt_text / response_text: the decoded texts, for logs and anchors.
        info: anything else worth keeping (env info keys, value estimates, ...).
    """

    prompt_ids: list[int]
    response_ids: list[int]
    logprobs: list[float]
    reward: float
    traj_id: int
    step_index: int
    done: bool
    terminated: bool = False
    truncated: bool = False
    group_id: int = 0
    prompt_text: str = ""
    response_text: str = ""
    info: dict[str, Any] = field(default_factory=dict)


class StepEnv(gym.Env[str, str]):
    """Base class of stepgym's text environments.

    Subclasses implement :meth:`_reset` (build the task from ``self.np_random``, return
    the first observation and extra info), :meth:`_step` (apply one action, return a
    :class:`StepResult`) and :meth:`expert_action`.

    Args:
        max_steps: steps before the episode is truncated.
        max_obs_chars: bound of the observation space; longer observations are cut in
            the middle with a marker.
        max_action_chars: bound of the action space; longer actions get an error
            observation (they are not parsed).
        render_mode: ``"ansi"`` (``render()`` returns the last observation) or ``"human"``
            (prints it).

    Example:
        >>> import gymnasium as gym, stepgym
        >>> env = gym.make("stepgym/ToolUse-v0", difficulty="easy")
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step("hello")
        >>> info["action_valid"], type(reward), type(terminated)
        (False, <class 'float'>, <class 'bool'>)
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "human"], "render_fps": 4}
    #: One line shown by ``stepgym list``.
    description: ClassVar[str] = ""
    #: Default step limit; ``max_steps=`` overrides it per instance.
    default_max_steps: ClassVar[int] = 20
    reward_range: tuple[float, float] = (0.0, 1.0)

    def __init__(
        self,
        *,
        max_steps: int | None = None,
        max_obs_chars: int = DEFAULT_OBS_CHARS,
        max_action_chars: int = DEFAULT_ACTION_CHARS,
        render_mode: str | None = None,
    ) -> None:
        max_steps = self.default_max_steps if max_steps is None else max_steps
        if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
            raise InvalidArgument(f"max_steps must be a positive int, got {max_steps!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise InvalidArgument(
                f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}"
            )
        self.max_steps = max_steps
        self.render_mode = render_mode
        self.observation_space = UnicodeText(max_obs_chars, min_length=0)
        self.action_space = UnicodeText(max_action_chars, min_length=0)
        self._max_obs = max_obs_chars
        self._max_action = max_action_chars
        self._t = 0
        self._done = True
        self._needs_reset = True
        self._last_obs = ""

    # -- subclass API ---------------------------------------------------------------
    def _reset(self, options: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def _step(self, action: str) -> StepResult:
        raise NotImplementedError

    def _on_truncate(self) -> dict[str, Any]:
        """Extra info at truncation (e.g. the correct answer); default nothing."""
        return {}

    def expert_action(self) -> str:
        """A correct next action from the current state, in the env's canonical format."""
        raise NotImplementedError(f"{type(self).__name__} has no expert")

    # -- gymnasium API --------------------------------------------------------------
    @property
    def elapsed_steps(self) -> int:
        """Steps taken in the current episode."""
        return self._t

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        self._t = 0
        self._done = False
        self._needs_reset = False
        obs, extra = self._reset(options)
        info: dict[str, Any] = {"action_valid": True, "error": None}
        info.update(extra)
        obs = self._finish_obs(obs)
        if self.render_mode == "human":
            self.render()
        return obs, info

    def step(self, action: str) -> tuple[str, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._needs_reset:
            raise ResetNeeded(
                "step() called " + ("before reset()" if self._t == 0 else "after the episode ended")
                + "; call env.reset() to start a new episode"
            )
        if not isinstance(action, str):
            raise InvalidArgument(
                f"actions are text: expected str, got {type(action).__name__}. "
                "Decode model output to a string before calling step()."
            )
        self._t += 1
        if len(action) > self._max_action:
            res = StepResult(
                observation=f"Error: your action has {len(action)} characters; the limit is {self._max_action}. "
                "Write one short step.",
                action_valid=False,
                error=f"action longer than {self._max_action} characters",
            )
        else:
            res = self._step(action)
        terminated = bool(res.terminated)
        truncated = (not terminated) and self._t >= self.max_steps
        info: dict[str, Any] = {"action_valid": bool(res.action_valid), "error": res.error}
        info.update(res.info)
        if terminated or truncated:
            self._done = True
            self._needs_reset = True
            info["success"] = bool(res.success) if res.success is not None else False
            if truncated:
                info.update(self._on_truncate())
        elif res.success is not None:
            info["success"] = bool(res.success)
        obs = self._finish_obs(res.observation)
        if self.render_mode == "human":
            self.render()
        return obs, float(res.reward), terminated, truncated, info

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return self._last_obs
        if self.render_mode == "human":
            print(self._last_obs)
        return None

    def _finish_obs(self, obs: str) -> str:
        if len(obs) > self._max_obs:
            obs = clip_text(obs, self._max_obs)
        self._last_obs = obs
        return obs
