"""Any stepgym env as a `verifiers <https://pypi.org/project/verifiers/>`_ multi-turn environment.

Needs the optional extra ``verifiers``: ``pip install "stepgym[verifiers]"``.

One episode is one rollout: the env's reset observation is the prompt (a user message),
every assistant message is one ``env.step`` action (its text content, as the model wrote
it), every observation after it comes back as the next user message, and the rollout ends
when the env terminates or truncates (its last observation is the final user message).
The rubric scores a rollout with the env's return (the sum of its step rewards; each
step's reward is also written on the trajectory step), or with ``score="success"`` with
``info["success"]`` at the end; the other one, the number of steps and the number of
invalid actions are logged as metrics.

The module is its own verifiers environment module: ``vf-eval`` (and prime-rl) load it by
its dotted name and call :func:`load_environment`::

    vf-eval stepgym.integrations.verifiers_env -a '{"env": "stepgym/Countdown-v0"}' \\
        -b http://127.0.0.1:8000/v1 -k OPENAI_API_KEY -m tiny -n 4 -r 1 -t 64

Dataset row ``i`` is the episode of seed ``seed + i`` (the eval split continues after the
train split), so rollouts of a row replay the same episode.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from stepgym.errors import DependencyNotInstalled, InvalidArgument
from stepgym.registration import check_trainable, make

PIP = 'pip install "stepgym[verifiers]"'

try:
    import verifiers as vf
    from datasets import Dataset
except ImportError as exc:  # one line that says what to install
    raise DependencyNotInstalled("stepgym.integrations.verifiers_env (verifiers environments)", PIP) from exc
try:
    _MultiTurnEnv = vf.MultiTurnEnv
except AttributeError as exc:  # verifiers 0.4 dropped the classic stack for verifiers.v1
    raise DependencyNotInstalled(
        f"stepgym.integrations.verifiers_env (verifiers' MultiTurnEnv API, which verifiers "
        f"{getattr(vf, '__version__', '?')} no longer has; 0.3.x has it)", PIP) from exc

__all__ = ["StepgymVerifiersEnv", "load_environment", "message_text"]

# keys of the rollout state this environment owns
_ENV, _RETURN, _SUCCESS, _STEPS, _INVALID = (
    "stepgym_env", "stepgym_return", "stepgym_success", "stepgym_steps", "stepgym_invalid_actions")


def message_text(message: Any) -> str:
    """The text of a chat message (a dict or a verifiers message), as the env's action.

    A message whose content is a list of parts gives its text parts joined; no content
    (a message of tool calls only) gives ``""``, which the env answers as an invalid action.

    Example:
        >>> message_text({"role": "assistant", "content": [{"type": "text", "text": "go "}, {"type": "text", "text": "north"}]})
        'go north'
    """
    content = message.get("content") if isinstance(message, dict) else getattr(message, "content", None)
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        text = part.get("text") if isinstance(part, dict) else getattr(part, "text", None)
        if isinstance(text, str):
            parts.append(text)
    return "".join(parts)


# verifiers reads the names of the functions as the names of the metrics
async def episode_return(state: dict[str, Any]) -> float:
    """The env's return over the rollout (the sum of its step rewards)."""
    return float(state.get(_RETURN, 0.0))


async def success(state: dict[str, Any]) -> float:
    """1.0 when the episode ended with ``info["success"]`` true, else 0.0."""
    return 1.0 if state.get(_SUCCESS) else 0.0


async def env_steps(state: dict[str, Any]) -> float:
    """How many actions the env took."""
    return float(state.get(_STEPS, 0))


async def invalid_actions(state: dict[str, Any]) -> float:
    """How many actions the env answered with ``info["action_valid"]`` false."""
    return float(state.get(_INVALID, 0))


class StepgymVerifiersEnv(_MultiTurnEnv):
    """A verifiers ``MultiTurnEnv`` whose rollouts are episodes of a stepgym env.

    Args:
        env_id: a registered env id (``stepgym/ToolUse-v0``, or ``module:ns/Name-v0``).
        env_kwargs: keyword arguments of the env (``{"difficulty": "easy"}``).
        num_examples: rows of the train dataset (episodes of seeds ``seed ..``).
        num_eval_examples: rows of the eval dataset (the seeds after the train ones).
        seed: the seed of the first episode.
        score: what the rubric rewards: ``"return"`` (the env's return) or ``"success"``.
        max_turns: end a rollout after this many actions even if the env goes on
            (``None``: the env's own step limit ends it).
        system_prompt: an optional system message put before every prompt.
        **kwargs: passed on to ``vf.MultiTurnEnv`` (``timeout_seconds``, ...).

    Example:
        >>> env = StepgymVerifiersEnv("stepgym/Countdown-v0", num_examples=2, num_eval_examples=1)
        >>> row = env.get_dataset()[0]
        >>> row["info"]["seed"], row["prompt"][0]["role"], "Countdown" in row["prompt"][0]["content"]
        (0, 'user', True)
        >>> env.get_eval_dataset()[0]["info"]["seed"]
        2
    """

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any] | None = None,
        *,
        num_examples: int = 100,
        num_eval_examples: int | None = None,
        seed: int = 0,
        score: Literal["return", "success"] = "return",
        max_turns: int | None = None,
        system_prompt: str | None = None,
        **kwargs: Any,
    ) -> None:
        if score not in ("return", "success"):
            raise InvalidArgument(f"score must be 'return' or 'success', got {score!r}")
        for name, value in (("num_examples", num_examples), ("seed", seed)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "num_examples" else 0):
                raise InvalidArgument(f"{name} must be an int >= {1 if name == 'num_examples' else 0}, got {value!r}")
        if num_eval_examples is None:
            num_eval_examples = num_examples
        if isinstance(num_eval_examples, bool) or not isinstance(num_eval_examples, int) or num_eval_examples < 0:
            raise InvalidArgument(f"num_eval_examples must be an int >= 0, got {num_eval_examples!r}")
        if max_turns is not None and (isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 1):
            raise InvalidArgument(f"max_turns must be an int >= 1 or None, got {max_turns!r}")
        self.stepgym_env_id = check_trainable(env_id, env_kwargs, seed=seed)  # one-line errors for bad ids/kwargs
        self.stepgym_env_kwargs = dict(env_kwargs or {})
        self.stepgym_max_turns = max_turns
        self.first_seed = seed
        self.num_train_examples = num_examples
        self.num_eval_examples = num_eval_examples

        scores = {"return": episode_return, "success": success}
        rubric = vf.Rubric(funcs=[scores[score]], weights=[1.0])
        for metric in (scores["success" if score == "return" else "return"], env_steps, invalid_actions):
            rubric.add_metric(metric)
        super().__init__(
            dataset=lambda: self._episodes(seed, num_examples),
            eval_dataset=(lambda: self._episodes(seed + num_examples, num_eval_examples)) if num_eval_examples else None,
            system_prompt=system_prompt,
            rubric=rubric,
            max_turns=-1,  # the env ends episodes; a cut here would drop the last action unstepped
            **kwargs,
        )

    def _episodes(self, first_seed: int, count: int) -> Dataset:
        """One row per episode: the reset observation as the prompt, the seed in ``info``."""
        env = make(self.stepgym_env_id, **self.stepgym_env_kwargs)
        rows = []
        try:
            for seed in range(first_seed, first_seed + count):
                obs, _ = env.reset(seed=seed)
                rows.append({
                    "prompt": [{"role": "user", "content": obs}],
                    "answer": "",
                    "info": {"seed": seed},
                })
        finally:
            env.close()
        return Dataset.from_list(rows)

    async def setup_state(self, state: Any, **kwargs: Any) -> Any:
        """Build this rollout's env and reset it with the row's seed (it replays the prompt's episode)."""
        seed = int(state["info"]["seed"])
        env = await asyncio.to_thread(make, self.stepgym_env_id, **self.stepgym_env_kwargs)
        await asyncio.to_thread(env.reset, seed=seed)
        state[_ENV] = env
        state[_RETURN] = 0.0
        state[_SUCCESS] = False
        state[_STEPS] = 0
        state[_INVALID] = 0
        return state

    async def env_response(self, messages: Any, state: Any, **kwargs: Any) -> Any:
        """Step the env with the last assistant message; its observation is the next user message."""
        env = state[_ENV]
        action = message_text(messages[-1]) if messages else ""
        obs, reward, terminated, truncated, info = await asyncio.to_thread(env.step, action)
        reward = float(reward)
        state[_RETURN] += reward
        state[_STEPS] += 1
        if not info.get("action_valid", True):
            state[_INVALID] += 1
        step = state["trajectory"][-1]
        step["reward"] = reward
        step["extras"]["stepgym"] = {
            "action_valid": bool(info.get("action_valid", True)),
            "error": info.get("error"),
            "terminated": bool(terminated),
            "truncated": bool(truncated),
        }
        cut = self.stepgym_max_turns is not None and state[_STEPS] >= self.stepgym_max_turns
        response = [vf.UserMessage(content=str(obs))]
        if terminated or truncated or cut:
            state[_SUCCESS] = bool(info.get("success", False))
            state["final_env_response"] = response
        return response

    @vf.cleanup
    async def close_stepgym_env(self, state: Any) -> None:
        """Close the rollout's env."""
        env = state.pop(_ENV, None)
        if env is not None:
            await asyncio.to_thread(env.close)


def load_environment(
    env: str = "stepgym/ToolUse-v0",
    num_examples: int = 100,
    num_eval_examples: int | None = None,
    seed: int = 0,
    score: Literal["return", "success"] = "return",
    max_turns: int | None = None,
    system_prompt: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
    **more_env_kwargs: Any,
) -> StepgymVerifiersEnv:
    """The verifiers entry point: a :class:`StepgymVerifiersEnv` of the stepgym env id ``env``.

    The id's argument is ``env``, not ``env_id``: verifiers' loader takes ``env_id`` itself
    (the name of this module). Env kwargs come as ``env_kwargs={...}`` or as extra keywords
    (``load_environment("stepgym/ToolUse-v0", difficulty="easy")``); ``vf-eval`` passes them
    in ``-a '{"env": "stepgym/ToolUse-v0", "difficulty": "easy"}'``.

    Example:
        >>> env = load_environment("stepgym/Countdown-v0", num_examples=3)
        >>> len(env.get_dataset()), env.stepgym_env_id
        (3, 'stepgym/Countdown-v0')
    """
    kwargs = {**(env_kwargs or {}), **more_env_kwargs}
    return StepgymVerifiersEnv(
        env,
        kwargs,
        num_examples=num_examples,
        num_eval_examples=num_eval_examples,
        seed=seed,
        score=score,
        max_turns=max_turns,
        system_prompt=system_prompt,
    )
