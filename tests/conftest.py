"""Shared test helpers: the list of registered env ids every contract test runs over."""

from __future__ import annotations

import importlib
import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import stepgym  # noqa: E402  (registers the built-ins)


def builtin_env_ids() -> list[str]:
    """Every registered stepgym/ env whose optional dependencies are installed."""
    ids = []
    for e in stepgym.list_envs("stepgym"):
        if e.requires:
            try:
                importlib.import_module(e.entry_point.split(":")[0])
            except ImportError:
                continue
        ids.append(e.id)
    return ids
