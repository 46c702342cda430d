"""``stepgym serve``: an OpenAI-compatible server over a local model or checkpoint.

Endpoints (see :mod:`stepgym.serving`): ``/v1/chat/completions`` (content streamed token by
token), ``/v1/completions`` (token ids in, token ids and log-probs out, as vLLM serves it),
``/v1/models``, and the runtime weight updates ``/v1/load_lora_adapter``,
``/v1/unload_lora_adapter`` (vLLM's) and ``/update_weights_from_disk`` (SGLang's) that
``stepgym train --generator openai:MODEL@URL`` uses.

It prints ``serving MODEL_ID at http://HOST:PORT/v1`` once it listens (``MODEL_ID`` is
``--name``, else the ``--model`` spec: what clients send as ``"model"`` and what
``/v1/models`` lists), then one line per answered request on stderr (``--quiet`` turns
them off). Requests are accepted while a generation runs; generations run one at a
time, and the requests that queue meanwhile are batched (see
:class:`stepgym.serving.TransformersBackend`).
"""

from __future__ import annotations

import argparse
import os

from stepgym.commands._common import bind_socket, import_uvicorn, stderr_log
from stepgym.errors import InvalidArgument

HELP = ("serve a local model or training checkpoint as an OpenAI-compatible server (/v1/chat/completions, "
        "/v1/completions with token ids, weight updates)")


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
    p.add_argument(
        "--name",
        default=None,
        metavar="MODEL_ID",
        help='the model id clients send as "model" and /v1/models lists, e.g. policy '
        "(default: the --model spec as written)",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("STEPGYM_API_KEY"),
        help="require 'Authorization: Bearer KEY' (default: $STEPGYM_API_KEY, else no auth)",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="completion tokens when a request sets no max_tokens (default: a policy folder's trained "
        "setting, else 512)",
    )
    p.add_argument("--temperature", type=float, default=0.7, help="temperature when a request sets none")
    p.add_argument("--device", default=None, help="torch device: cpu, cuda, cuda:N, auto (default: where the model loads)")
    p.add_argument(
        "--dtype",
        default=None,
        choices=("float32", "bfloat16", "float16"),
        help="cast the weights (default: float32; bfloat16 halves memory, fast on GPUs)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="requests that queue while the model is busy are generated together, this many at most (default 8)",
    )
    p.add_argument("--quiet", action="store_true", help="no line per request on stderr")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice; 1 is fastest for small models on a busy machine)",
    )


def run(args: argparse.Namespace) -> int:
    uvicorn = import_uvicorn("stepgym serve", args.port)
    from rich.console import Console

    from stepgym.serving import backend_from_spec, create_app

    console = Console(stderr=True, highlight=False)
    if args.threads is not None:
        if args.threads < 1:
            raise InvalidArgument(f"--threads must be at least 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    if args.batch_size < 1:
        raise InvalidArgument(f"--batch-size must be at least 1, got {args.batch_size}")
    name = args.name or args.model
    if not name.strip():
        raise InvalidArgument("--name must not be empty")
    console.print(f"[dim]loading {args.model} ...[/]", soft_wrap=True)
    settings: dict = {"temperature": args.temperature, "device": args.device, "batch_size": args.batch_size}
    if getattr(args, "dtype", None) is not None:
        settings["dtype"] = args.dtype
    if args.max_new_tokens is not None:
        if args.max_new_tokens < 1:
            raise InvalidArgument(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
        settings["max_new_tokens"] = args.max_new_tokens
    if not args.model.startswith("checkpoint:"):
        # A base model answers until its end-of-turn token; a policy folder keeps the stop
        # strings and action length it was trained with (see TransformersBackend).
        settings.setdefault("max_new_tokens", 512)
        settings["stop"] = ()
    backend = backend_from_spec(args.model, **settings)
    agent = backend.agent
    stops = ", ".join(repr(s) for s in agent.stop) or "none (end-of-turn token only)"
    console.print(
        f"[dim]default max_tokens {agent.max_new_tokens}; stop strings: {stops}; "
        f"up to {backend.max_batch} queued requests per generate[/]",
        soft_wrap=True,
    )

    app = create_app(backend, name, api_key=args.api_key, log=None if args.quiet else stderr_log)
    # Bind first so the real port (for --port 0) is printed before serving.
    sock, url = bind_socket(args.host, args.port)
    url += "/v1"
    console.print(f"serving [bold]{name}[/] at {url}  (OpenAI base URL; Ctrl-C stops)", soft_wrap=True)
    console.print(
        f"[dim]try: stepgym eval --env stepgym/ToolUse-v0 --agent 'openai:{name}@{url}'[/]", soft_wrap=True
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    server.run(sockets=[sock])
    return 0
