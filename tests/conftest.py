"""Shared test helpers: the list of registered env ids every contract test runs over."""

from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import stepgym  # noqa: E402  (registers the built-ins)


def builtin_env_ids() -> list[str]:
    """Every registered stepgym/ env whose optional dependencies are installed."""
    from stepgym.registration import is_available

    return [e.id for e in stepgym.list_envs("stepgym") if is_available(e)]
