"""``stepgym serve-env``: any registered env as an OpenEnv server (WebSocket ``/ws`` + HTTP).

It prints ``serving ENV_ID at http://HOST:PORT`` once it listens; openenv-core's
``GenericEnvClient(base_url=...)``, stepgym's ``stepgym/OpenEnv-v0`` and
``stepgym/OpenEnvPool-v0`` connect to that URL. See :mod:`stepgym.openenv_server` for the
protocol and docs/security.md for the limits.
"""

from __future__ import annotations

import argparse
import os

from stepgym.commands._common import (add_env_kwargs_option, bind_socket, import_uvicorn, parse_env_kwargs,
                                      stderr_log)

HELP = "serve a registered env as an OpenEnv server (reset/step/state over WebSocket and HTTP)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("env", metavar="ENV_ID", help="registered env id, e.g. stepgym/ToolUse-v0 or mymodule:myns/Name-v0")
    p.add_argument("--port", type=int, default=8001, help="TCP port (default 8001; 0 picks a free one)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind (default 127.0.0.1, this machine only; 0.0.0.0 exposes it to the network)",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("STEPGYM_API_KEY"),
        help="require 'Authorization: Bearer KEY' or http://user:KEY@host URLs (default: $STEPGYM_API_KEY, else no auth)",
    )
    add_env_kwargs_option(p)
    p.add_argument(
        "--allow-kwarg",
        dest="allow_kwargs",
        action="append",
        default=[],
        metavar="NAME",
        help="an env kwarg clients may set with reset, e.g. --allow-kwarg difficulty (repeatable; default none). "
        "Kwargs that run code or loosen the sandbox are never allowed",
    )
    p.add_argument("--max-sessions", type=int, default=64, help="concurrent sessions, one env each (default 64)")
    p.add_argument("--idle-timeout", type=float, default=300.0, metavar="S",
                   help="close a session after this many seconds without a message (default 300)")
    p.add_argument("--max-request-bytes", type=int, default=256 * 1024,
                   help="largest request body or WebSocket message (default 262144)")
    p.add_argument("--max-steps-per-s", type=float, default=100.0,
                   help="steps per second per session; 0 = unlimited (default 100)")
    p.add_argument("--expose-expert", action="store_true",
                   help="include the env's expert_action in state (for `stepgym check` and demos; gives away answers)")
    p.add_argument("--quiet", action="store_true", help="no line per session on stderr")


def run(args: argparse.Namespace) -> int:
    uvicorn = import_uvicorn("stepgym serve-env", args.port)
    from rich.console import Console

    from stepgym.openenv_server import EnvServerConfig, create_env_app

    console = Console(stderr=True, highlight=False)
    cfg = EnvServerConfig(
        env_id=args.env,
        env_kwargs=parse_env_kwargs(args.env_kwargs or []),
        allow_kwargs=tuple(args.allow_kwargs),
        api_key=args.api_key,
        max_sessions=args.max_sessions,
        idle_timeout_s=args.idle_timeout,
        max_request_bytes=args.max_request_bytes,
        max_steps_per_s=args.max_steps_per_s,
        expose_expert=args.expose_expert,
    )

    app = create_env_app(cfg, log_line=None if args.quiet else stderr_log)
    env_id = app.state.sessions.env_id
    # Build one env now: bad fixed kwargs fail here, with one line, not at the first client.
    from stepgym.commands._common import make_env

    make_env(env_id, cfg.env_kwargs).close()
    sock, url = bind_socket(args.host, args.port)
    allowed = ", ".join(cfg.allow_kwargs) or "none"
    console.print(f"serving [bold]{env_id}[/] at {url}  (OpenEnv; WebSocket {url.replace('http', 'ws', 1)}/ws; "
                  f"Ctrl-C stops)", soft_wrap=True)
    console.print(f"[dim]client kwargs allowed: {allowed}; up to {cfg.max_sessions} sessions; "
                  f"try: stepgym check stepgym/OpenEnv-v0 -k base_url={url}[/]", soft_wrap=True)
    # ws_max_size: a hard cap well above the per-message limit, which gets a clear error message instead.
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off",
                                           ws_max_size=4 * cfg.max_request_bytes, ws_ping_interval=20.0))
    server.run(sockets=[sock])
    return 0
