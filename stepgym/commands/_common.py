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


def import_uvicorn(command: str, port: int) -> Any:
    """The ``uvicorn`` module for a serving command, after checking ``--port`` (one-line errors)."""
    if not 0 <= port <= 65535:
        raise InvalidArgument(f"--port must be in 0..65535, got {port}")
    try:
        import uvicorn
    except ImportError as exc:
        from stepgym.errors import DependencyNotInstalled

        raise DependencyNotInstalled(command, 'pip install "stepgym[serve]"') from exc
    return uvicorn


def bind_socket(host: str, port: int) -> tuple[Any, str]:
    """A listening-ready socket on ``host:port`` and its ``http://`` URL (with the real port of ``--port 0``).

    Binding before the server starts lets the command print the URL first and turns a port
    in use into one line.
    """
    import socket

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InvalidArgument(f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port") from exc
    return sock, f"http://{'[' + host + ']' if ':' in host else host}:{sock.getsockname()[1]}"


def stderr_log(line: str) -> None:
    """One timestamped line on stderr (the serving commands' request log)."""
    import sys
    import time

    print(time.strftime("%H:%M:%S"), line, file=sys.stderr, flush=True)
