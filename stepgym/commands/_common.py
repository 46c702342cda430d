"""Helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import json
from typing import Any

from stepgym.errors import InvalidArgument


ENV_KWARG_HELP = ("keyword argument for the env constructor, e.g. -k difficulty=medium (repeatable; values parse "
                  "as JSON when they can)")


def add_env_kwargs_option(p: argparse.ArgumentParser, dest: str = "env_kwargs", json_option: bool = True) -> None:
    """``-k KEY=VALUE`` (repeatable) and ``--env-kwargs JSON``: the same two spellings in every command."""
    p.add_argument("-k", "--env-kwarg", dest=dest, action="append", default=[], metavar="KEY=VALUE",
                   help=ENV_KWARG_HELP)
    if json_option:
        p.add_argument("--env-kwargs", dest=dest, action="append", metavar="JSON",
                       help="env constructor kwargs as one JSON object, e.g. '{\"difficulty\": \"medium\"}' "
                            "(combines with -k)")


def parse_env_kwargs(items: list[str]) -> dict[str, Any]:
    """``["difficulty=hard", "max_steps=5"]`` -> ``{"difficulty": "hard", "max_steps": 5}``.

    An item that is a JSON object (``--env-kwargs``) contributes all of its keys.
    """
    out: dict[str, Any] = {}
    for item in items:
        if item.lstrip().startswith("{"):
            try:
                obj = json.loads(item)
            except ValueError:
                obj = None
            if not isinstance(obj, dict):
                raise InvalidArgument(f"--env-kwargs expects a JSON object such as '{{\"difficulty\": \"medium\"}}', "
                                      f"got {item!r}")
            out.update(obj)
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidArgument(f"env kwargs are KEY=VALUE, got {item!r}; for example -k difficulty=medium")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def with_env_kwarg_items(cfg: Any, items: list[str]) -> Any:
    """``cfg`` with the ``-k KEY=VALUE`` items merged over its ``env_kwargs`` (a copy; the config is validated again)."""
    extra = parse_env_kwargs(items)
    if not extra:
        return cfg
    import dataclasses

    return dataclasses.replace(cfg, env_kwargs={**cfg.env_kwargs, **extra})


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
