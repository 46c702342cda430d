"""One error hierarchy for stepgym.

Every error a user can trigger derives from :class:`StepgymError` and says what was
expected, what was given, and how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "StepgymError",
    "UnknownEnvError",
    "ResetNeeded",
    "DependencyNotInstalled",
    "InvalidConfig",
    "InvalidArgument",
    "CheckFailed",
    "NotTextEnv",
]


class StepgymError(Exception):
    """Root of every error stepgym raises on purpose."""


class UnknownEnvError(StepgymError, KeyError):
    """An environment id that is not registered.

    The message lists the closest registered ids (difflib), like ``git`` does for typos.
    """

    def __init__(self, env_id: str, known: Iterable[str]):
        self.env_id = env_id
        known = sorted(known)
        close = difflib.get_close_matches(env_id, known, n=3, cutoff=0.5)
        if not close:
            # Compare names without namespace too: "ToolUse-v0" -> "stepgym/ToolUse-v0".
            bare = {k.split("/")[-1]: k for k in known}
            close = [bare[m] for m in difflib.get_close_matches(env_id.split("/")[-1], list(bare), n=3, cutoff=0.5)]
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        msg = (
            f"Unknown environment id {env_id!r}.{hint} "
            "Run `stepgym list` to see every registered id; third-party envs load with "
            "'module:ns/Name-v0' (the module registers the env on import)."
        )
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class ResetNeeded(StepgymError, RuntimeError):
    """``step()`` was called before ``reset()`` or after the episode ended."""


class DependencyNotInstalled(StepgymError, ImportError):
    """An optional dependency is missing; the message names the exact install command."""

    def __init__(self, what: str, pip: str):
        self.pip = pip
        super().__init__(f"{what} needs an optional dependency that is not installed. Install it with: {pip}")


class InvalidConfig(StepgymError, ValueError):
    """A configuration value is out of range; the message names the field and what is allowed."""

    def __init__(self, field: str, value: object, allowed: str):
        self.field = field
        self.value = value
        super().__init__(f"invalid value for {field!r}: expected {allowed}, got {value!r}")


class InvalidArgument(StepgymError, ValueError):
    """A bad argument to a public function or constructor."""


class NotTextEnv(StepgymError, TypeError):
    """An env whose observations or actions are not text, so an LLM policy cannot act in it.

    The message names the offending space or observation type and how to fix it (a wrapper
    that renders observations as text and parses text actions).
    """


class CheckFailed(StepgymError, AssertionError):
    """``stepgym.check_env`` found contract violations; the message lists each one."""

    def __init__(self, env_id: str, failures: list[str]):
        self.failures = failures
        lines = "\n".join(f"  - {f}" for f in failures)
        super().__init__(f"{env_id} failed {len(failures)} check(s):\n{lines}")


def require(module: str, what: str, pip: str):
    """Import ``module`` or raise :class:`DependencyNotInstalled` naming ``pip``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised through callers
        raise DependencyNotInstalled(what, pip) from exc
