"""``stepgym serve``: an OpenAI-compatible chat-completions endpoint over a local model or checkpoint."""

from __future__ import annotations

import argparse
import os

from stepgym.errors import DependencyNotInstalled, InvalidArgument

HELP = "serve a local model or training checkpoint as an OpenAI-compatible /v1/chat/completions endpoint"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        metavar="SPEC",
        help="hf:PATH_OR_ID, checkpoint:RUN_DIR, or a bare model spec (tiny, smollm2-135m, an HF id, a path)",
    )
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind (default 127.0.0.1, this machine only; 0.0.0.0 exposes it to the network)",
    )
    p.add_argument("--name", default=None, help='model id clients send as "model" (default: the spec)')
    p.add_argument(
        "--api-key",
        default=os.environ.get("STEPGYM_API_KEY"),
        help="require 'Authorization: Bearer KEY' (default: $STEPGYM_API_KEY, else no auth)",
    )
    p.add_argument(
        "--max-new-tokens", type=int, default=512, help="completion tokens when a request sets no max_tokens"
    )
    p.add_argument("--temperature", type=float, default=0.7, help="temperature when a request sets none")
    p.add_argument("--device", default=None, help="torch device, e.g. cuda or cpu (default: where the model loads)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice; 1 is fastest for small models on a busy machine)",
    )


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise InvalidArgument(f"--port must be in 0..65535, got {args.port}")
    try:
        import uvicorn
    except ImportError as exc:
        raise DependencyNotInstalled("stepgym serve", 'pip install "stepgym[serve]"') from exc
    import socket

    from rich.console import Console

    from stepgym.serving import backend_from_spec, create_app

    console = Console(stderr=True, highlight=False)
    if args.threads is not None:
        if args.threads < 1:
            raise InvalidArgument(f"--threads must be at least 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    console.print(f"[dim]loading {args.model} ...[/]")
    backend = backend_from_spec(
        args.model, max_new_tokens=args.max_new_tokens, temperature=args.temperature, device=args.device, stop=()
    )
    name = args.name or args.model
    app = create_app(backend, name, api_key=args.api_key)
    # Bind first so the real port (for --port 0) is printed before serving.
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        raise InvalidArgument(f"cannot listen on {args.host}:{args.port}: {exc.strerror}; pick another --port") from exc
    port = sock.getsockname()[1]
    console.print(f"serving [bold]{name}[/] at http://{args.host}:{port}/v1  (OpenAI base URL; Ctrl-C stops)")
    console.print(
        f"[dim]try: stepgym eval --env stepgym/ToolUse-v0 --agent 'openai:{name}@http://{args.host}:{port}/v1'[/]"
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    server.run(sockets=[sock])
    return 0
