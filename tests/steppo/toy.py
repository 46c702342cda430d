"""A two-step toy text env for the trainer's fast tests (registered as ``steppotest/Boxes-v0``).

Observation: which box to open. Step 1: ``open red`` / ``open blue`` (the one the task
names); step 2: ``done``. Reward 1 on success. Importing this module registers the env, so
the CLI can reach it as ``tests.steppo.toy:steppotest/Boxes-v0``.
"""

from __future__ import annotations

import gymnasium as gym

from stepgym.core import StepEnv, StepResult

COLORS = ("red", "blue")


class BoxesEnv(StepEnv):
    description = "open the named box, then say done"
    default_max_steps = 4

    def _reset(self, options):
        self._color = COLORS[int(self.np_random.integers(len(COLORS)))]
        self._opened = False
        return f"Open the {self._color} box, then say done.", {}

    def _step(self, action: str) -> StepResult:
        a = action.strip().lower()
        if not self._opened:
            if a == f"open {self._color}":
                self._opened = True
                return StepResult("The box is open. Say done.")
            return StepResult("Wrong. Open the right box.", action_valid=a.startswith("open "), error="wrong box")
        if a == "done":
            return StepResult("Well done.", reward=1.0, terminated=True, success=True)
        return StepResult("Say done.", action_valid=False, error="expected done")

    def expert_action(self) -> str:
        return "done" if self._opened else f"open {self._color}"


if "steppotest/Boxes-v0" not in gym.registry:
    gym.register(id="steppotest/Boxes-v0", entry_point="tests.steppo.toy:BoxesEnv")
