"""Helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import json
from typing import Any

from stepgym.errors import InvalidArgument


def add_env_kwargs_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-k", "--env-kwarg", dest="env_kwargs", action="append", default=[], metavar="KEY=VALUE",
        help="keyword argument for the env constructor, e.g. -k difficulty=medium (repeatable; values parse as JSON when they can)",
    )


def parse_env_kwargs(items: list[str]) -> dict[str, Any]:
    """``["difficulty=hard", "max_steps=5"]`` -> ``{"difficulty": "hard", "max_steps": 5}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidArgument(f"env kwargs are KEY=VALUE, got {item!r}; for example -k difficulty=medium")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def make_env(env_id: str, kwargs: dict[str, Any]):
    """``stepgym.make`` that turns a bad constructor keyword into a clear error."""
    from stepgym.registration import make, resolve_env_id

    env_id = resolve_env_id(env_id)
    try:
        return make(env_id, **kwargs)
    except TypeError as exc:
        if "keyword" in str(exc) or "argument" in str(exc):
            raise InvalidArgument(f"{env_id} does not accept these env kwargs {sorted(kwargs)}: {exc}") from exc
        raise
