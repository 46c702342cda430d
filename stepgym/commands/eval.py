"""``stepgym eval``: evaluate one or more agents on one or more envs, with confidence intervals."""

from __future__ import annotations

import argparse
import json
from typing import Any

from stepgym.commands._common import add_env_kwargs_option, parse_env_kwargs
from stepgym.errors import InvalidArgument

HELP = "evaluate agents (expert, random, hf:, checkpoint:, openai:) on envs; success rate with 95% CI, leaderboard"

# An episode whose agent fails (a server error, a prompt too long) ends as a failure with its
# error in the table and the JSON; the run goes on. Exit status 0, or 1 when every episode failed.

_MODEL_KINDS = ("hf", "checkpoint", "openai")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from stepgym.agents import AGENT_SPECS

    p.add_argument(
        "--env",
        dest="envs",
        action="append",
        required=True,
        metavar="ID[,ID...]",
        help="env id(s), comma-separated or repeated; third-party envs as module:ns/Name-v0",
    )
    p.add_argument(
        "--agent",
        dest="agents",
        action="append",
        metavar="SPEC",
        help=f"agent spec, repeat for a leaderboard: {AGENT_SPECS} (default: random)",
    )
    p.add_argument("--episodes", type=int, default=20, help="episodes per env and agent (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of episode 0; episode k uses seed+k (default 0)")
    p.add_argument("--num-envs", type=int, default=8, help="episodes run in parallel over a vector env (default 8)")
    p.add_argument(
        "--json", dest="json_path", metavar="FILE", help="write every summary and per-episode result to FILE"
    )
    p.add_argument(
        "--record", metavar="DIR", help="write every step as JSON Lines under DIR (one file per agent and env)"
    )
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature of model agents (0 = greedy)")
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="tokens per action at most, for model agents (openai: agents send 512 unless told)",
    )
    p.add_argument(
        "--max-context",
        type=int,
        default=None,
        metavar="TOKENS",
        help="context size of the openai: agents' server; longer chats lose their oldest turns "
        "(default: learned from the server's /v1/models or its first 'maximum context length' error)",
    )
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no live progress bar (it is off anyway when the output is not a terminal)",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads for local model agents (default: torch's choice)"
    )
    p.add_argument(
        "--device", default=None, help="torch device of hf:/checkpoint: agents: cpu, cuda, cuda:N, auto (default: cpu)"
    )
    p.add_argument(
        "--dtype",
        default=None,
        choices=("float32", "bfloat16", "float16"),
        help="weights of hf:/checkpoint: agents (default: float32; bfloat16 halves memory, fast on GPUs)",
    )
    add_env_kwargs_option(p)


def _env_ids(items: list[str]) -> list[str]:
    ids = [e.strip() for item in items for e in item.split(",") if e.strip()]
    if not ids:
        raise InvalidArgument("--env needs at least one env id, e.g. --env stepgym/ToolUse-v0")
    return list(dict.fromkeys(ids))


def _agent_kwargs(spec: str, args: argparse.Namespace) -> dict[str, Any]:
    kind = spec.partition(":")[0]
    kw: dict[str, Any] = {}
    if kind in _MODEL_KINDS:
        if args.temperature is not None:
            kw["temperature"] = args.temperature
        if args.max_new_tokens is not None:
            kw["max_tokens" if kind == "openai" else "max_new_tokens"] = args.max_new_tokens
        if kind == "openai" and args.max_context is not None:
            kw["max_context"] = args.max_context
        if kind != "openai":
            kw.update({k: v for k in ("device", "dtype") if (v := getattr(args, k, None)) is not None})
    elif kind == "random":
        kw["seed"] = args.seed
    return kw


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from stepgym.agents import make_agent
    from stepgym.agents.evaluate import evaluate
    from stepgym.progress import episode_stats, progress_bar
    from stepgym.registration import resolve_env_id

    if args.episodes < 1:
        raise InvalidArgument(f"--episodes must be at least 1, got {args.episodes}")
    if args.num_envs < 1:
        raise InvalidArgument(f"--num-envs must be at least 1, got {args.num_envs}")
    if args.max_context is not None and args.max_context < 2:
        raise InvalidArgument(f"--max-context must be the server's context size in tokens, got {args.max_context}")
    env_ids = _env_ids(args.envs)
    for e in env_ids:
        resolve_env_id(e)  # fail fast on a typo, before loading any model
    specs = args.agents or ["random"]
    if args.threads is not None:
        if args.threads < 1:
            raise InvalidArgument(f"--threads must be at least 1, got {args.threads}")
        if any(s.partition(":")[0] in ("hf", "checkpoint") for s in specs):
            import torch

            torch.set_num_threads(args.threads)
    env_kwargs = parse_env_kwargs(args.env_kwargs)
    console = Console(highlight=False)
    agents = [make_agent(s, None, **_agent_kwargs(s, args)) for s in specs]
    # Two agents from the same spec family would share a name; make labels unique.
    labels: list[str] = []
    for spec, agent in zip(specs, agents, strict=True):
        label = agent.name if agent.name not in labels else spec
        while label in labels:
            label += "'"
        labels.append(label)
        agent.name = label

    results = []
    with progress_bar(console, getattr(args, "progress", True)) as progress:
        for env_id in env_ids:
            for agent in agents:
                where = f"{agent.name} on {env_id.split(':')[-1]}"
                task = progress.add_task(where, total=args.episodes, stats=episode_stats(None))

                def on_step(p: Any, t: Any = task, where: str = where) -> None:
                    progress.update(t, completed=p.done, stats=episode_stats(p))
                    for ep in p.finished:
                        if ep.error is not None:
                            # One line per failed episode, as it happens; the run goes on.
                            progress.console.print(
                                f"[yellow]{escape(where)}: episode {ep.episode} (seed {ep.seed}) "
                                f"failed: {escape(_short(ep.error))}[/]",
                                soft_wrap=True,
                            )

                res = evaluate(
                    env_id,
                    agent,
                    episodes=args.episodes,
                    seed=args.seed,
                    num_envs=args.num_envs,
                    env_kwargs=env_kwargs,
                    record_dir=args.record,
                    on_step=on_step,
                )
                results.append(res)
    for agent in agents:
        agent.close()

    any_estimate = False
    for env_id in dict.fromkeys(r.env_id for r in results):
        table = Table(title=f"{env_id}  ({args.episodes} episodes, seeds {args.seed}..{args.seed + args.episodes - 1})")
        table.add_column("agent", overflow="fold", min_width=min(24, max(8, *(len(n) for n in labels))))
        rows = [r for r in results if r.env_id == env_id]
        show_errors = any(r.errors for r in rows)
        cols = ("success", "95% CI", "return", "steps", "invalid") + (("errors",) if show_errors else ())
        for col in (*cols, "tok/step", "wall s"):
            table.add_column(col, justify="right", no_wrap=True)
        for r in rows:
            lo, hi = r.ci95
            any_estimate |= r.tokens_estimated
            table.add_row(
                r.agent,
                _pct(r.success_rate),
                f"{100 * lo:.0f}-{100 * hi:.0f}%",
                f"{r.mean_return:.3f}",
                f"{r.mean_steps:.2f}",
                _pct(r.invalid_action_rate),
                *([f"[red]{r.errors}[/]" if r.errors else "0"] if show_errors else []),
                ("≈" if r.tokens_estimated else "") + f"{r.tokens_per_step:.1f}",
                f"{r.wall_s:.2f}",
            )
        # Logs and pipes get the whole table, however narrow their default width.
        console.print(table, crop=console.is_terminal)
    if any_estimate:
        console.print(
            "[dim]return and steps are means per episode; invalid = share of steps with action_valid False; "
            "≈ tok/step: agents without a tokenizer are counted as characters/4.[/]"
        )
    failed = [(r, e) for r in results for e in r.episodes if e.error is not None]
    if failed:
        # Each distinct error once, with how many episodes it ended.
        kinds: dict[tuple[str, str], int] = {}
        for r, e in failed:
            key = (r.agent, e.error or "")
            kinds[key] = kinds.get(key, 0) + 1
        console.print(
            f"[yellow]{len(failed)} episode(s) ended on an agent error and count as failures "
            "(per-episode errors are in --json):[/]"
        )
        for (agent_name, error), count in kinds.items():
            console.print(f"  [yellow]{escape(agent_name)}, {count}x:[/] {escape(_short(error))}", soft_wrap=True)
    if len(agents) > 1:
        board = Table(title="leaderboard (success rate; mean over envs)")
        board.add_column("rank", justify="right")
        board.add_column("agent")
        envs = list(dict.fromkeys(r.env_id for r in results))
        for e in envs:
            board.add_column(e.split("/")[-1], justify="right")
        board.add_column("mean", justify="right")
        by_agent = {a.name: {r.env_id: r for r in results if r.agent == a.name} for a in agents}
        ranked = sorted(by_agent.items(), key=lambda kv: -sum(r.success_rate for r in kv[1].values()) / len(envs))
        for rank, (name, rows) in enumerate(ranked, 1):
            mean = sum(r.success_rate for r in rows.values()) / len(envs)
            board.add_row(str(rank), name, *[_pct(rows[e].success_rate) for e in envs], _pct(mean))
        console.print(board)
    if args.json_path:
        payload = {
            "envs": env_ids,
            "agents": labels,
            "episodes": args.episodes,
            "seed": args.seed,
            "env_kwargs": env_kwargs,
            "results": [r.to_dict() for r in results],
        }
        with open(args.json_path, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, default=str)
        console.print(f"[dim]wrote {args.json_path}[/]")
    if results and all(r.errors == r.n for r in results):
        console.print("[red]every episode ended on an agent error: nothing was evaluated[/]")
        return 1
    return 0
