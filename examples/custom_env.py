"""Write your own text env, register it, check it, evaluate agents on it, and train on it.

The env: guess a hidden number in 1..N; each guess gets "higher" or "lower". Reward 1.0
for finding it, with the step limit as truncation. It subclasses ``stepgym.StepEnv``
(which supplies the text spaces, step limit and shared info keys), registers itself as
``mygame/GuessNumber-v0`` when this module is imported, and works with every stepgym
command through the ``module:ns/Name-v0`` id form::

    cd examples   # the module must be importable: PYTHONPATH=. (a console script does not add the cwd)
    export PYTHONPATH=.
    stepgym check custom_env:mygame/GuessNumber-v0
    stepgym eval --env custom_env:mygame/GuessNumber-v0 --agent expert --agent random
    stepgym train --env custom_env:mygame/GuessNumber-v0 --env-kwargs '{}' --out runs/guess

Run this file to do all three from Python (``--budget small`` for a quick run).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from typing import Any, ClassVar

import gymnasium as gym

import stepgym
from stepgym import StepEnv, StepResult
from stepgym.core import quote_action

ENV_ID = "mygame/GuessNumber-v0"
_GUESS = re.compile(r"<guess>\s*(-?\d+)\s*</guess>")


class GuessNumberEnv(StepEnv):
    """Find the hidden number with ``<guess>N</guess>`` actions.

    Args:
        high: the number lies in 1..high.
        **kwargs: ``max_steps`` and the other :class:`~stepgym.StepEnv` options.
    """

    description: ClassVar[str] = "Guess a hidden number; each guess is answered with higher or lower"
    default_max_steps: ClassVar[int] = 12

    def __init__(self, high: int = 100, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if high < 2:
            raise stepgym.InvalidArgument(f"high must be at least 2, got {high}")
        self.high = high

    def _reset(self, options: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        self.secret = int(self.np_random.integers(1, self.high + 1))  # seeded through the env's RNG only
        self.lo, self.hi = 1, self.high
        return (
            f"I am thinking of a number between 1 and {self.high}. "
            f"Guess it: write <guess>N</guess>. You have {self.max_steps} guesses."
        ), {}

    def _step(self, action: str) -> StepResult:
        m = _GUESS.search(action)
        if not m:
            return StepResult(
                f"I could not read a guess in {quote_action(action)}. Write <guess>N</guess>.",
                action_valid=False,
                error="no <guess>N</guess> in the action",
            )
        n = int(m.group(1))
        if n == self.secret:
            return StepResult(f"{n} is right!", reward=1.0, terminated=True, success=True)
        if n < self.secret:
            self.lo = max(self.lo, n + 1)
            return StepResult(f"{n} is too low: higher.")
        self.hi = min(self.hi, n - 1)
        return StepResult(f"{n} is too high: lower.")

    def expert_action(self) -> str:
        return f"<guess>{(self.lo + self.hi) // 2}</guess>"  # binary search: at most log2(high)+1 guesses


# Register on import; `stepgym ... custom_env:mygame/GuessNumber-v0` imports this module.
# In a package of your own, prefer a string entry point ("yourpkg.envs:GuessNumberEnv") so
# nothing is imported until gym.make; here the class object also works when run as a script.
if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point=GuessNumberEnv)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=["small", "full"], default="full")
    parser.add_argument("--skip-train", action="store_true", help="stop after the check and the evaluation")
    args = parser.parse_args()
    small = args.budget == "small"

    from stepgym.cli import main as stepgym_cli

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # so `custom_env:` imports this file
    env_id = f"custom_env:{ENV_ID}"

    print("== 1. check the env against the stepgym + Gymnasium contracts")
    if stepgym_cli(["check", env_id, "--episodes", "2" if small else "5"]) != 0:
        return 1

    print("== 2. evaluate two agents on it")
    stepgym_cli(
        [
            "eval",
            "--env",
            env_id,
            "--agent",
            "expert",
            "--agent",
            "random",
            "--episodes",
            "8" if small else "50",
            "--num-envs",
            "4",
        ]
    )

    print("== 3. train a policy on it with StepPO")
    if args.skip_train:
        print("skipping training (--skip-train)")
        return 0
    try:
        import steppo.trainer  # noqa: F401
        from stepgym.commands import train as _train  # noqa: F401
    except ImportError as exc:
        print(
            f"skipping training: the StepPO trainer is not available here ({exc}). "
            'Install it with pip install "stepgym[train]".'
        )
        return 0
    out = tempfile.mkdtemp(prefix="guess_run_") if small else "runs/guess"
    # env kwargs {}: the trainer's default ({"difficulty": "easy"}) is for ToolUse-v0.
    env_kwargs = '{"high": 8, "max_steps": 3}' if small else "{}"
    train_args = [
        "train",
        "--env",
        env_id,
        "--env-kwargs",
        env_kwargs,
        "--model",
        "tiny",
        "--out",
        out,
        "--stop-strings",
        "</guess>",
        "--overwrite",
    ]
    if small:
        train_args += [
            "--iterations",
            "1",
            "--episodes-per-iteration",
            "4",
            "--group-size",
            "2",
            "--max-new-tokens",
            "6",
            "--eval-episodes",
            "2",
            "--no-eval-before",
            "--no-progress",
            "--threads",
            "1",
        ]
    rc = stepgym_cli(train_args)
    if rc == 0:
        print(f"trained; evaluate it with: stepgym eval --env {env_id} --agent checkpoint:{out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
