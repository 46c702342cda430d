"""``stepgym play``: play an env in the terminal, or watch an agent play it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from stepgym.commands._common import add_env_kwargs_option, make_env, parse_env_kwargs
from stepgym.errors import InvalidArgument

HELP = "play an env yourself, or watch an agent (expert, random, a model) play it"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("env_id", metavar="ID", help="env id, e.g. stepgym/ToolUse-v0")
    p.add_argument("--agent", default="human",
                   help="who plays: human (default), expert, random, or an agent spec such as hf:PATH or openai:MODEL@URL")
    p.add_argument("--seed", type=int, default=None, help="seed of the first episode (default: random)")
    p.add_argument("--episodes", type=int, default=1, help="episodes to play (default 1)")
    add_env_kwargs_option(p)


class _Builtin:
    """Fallback agents used when the agents package is not available."""

    def __init__(self, spec: str, env: Any):
        self.spec, self.env = spec, env

    def reset(self) -> None:
        pass

    def act(self, observation: str, info: dict[str, Any]) -> str:
        if self.spec == "expert":
            return self.env.unwrapped.expert_action()
        if self.spec == "random":
            return self.env.action_space.sample()
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")


def _agent(spec: str, env: Any) -> Any:
    try:
        from stepgym.agents import make_agent
    except ImportError:
        if spec not in ("human", "expert", "random"):
            raise InvalidArgument(f"--agent must be human, expert or random here, got {spec!r}") from None
        return _Builtin(spec, env)
    return make_agent(spec, env)


def _quit_errors() -> tuple[type[BaseException], ...]:
    try:
        from stepgym.agents.simple import UserQuit
    except ImportError:
        return (EOFError,)
    return (EOFError, UserQuit)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.panel import Panel

    if args.episodes < 1:
        raise InvalidArgument(f"--episodes must be at least 1, got {args.episodes}")
    env = make_env(args.env_id, parse_env_kwargs(args.env_kwargs))
    agent = _agent(args.agent, env)
    console = Console(highlight=False)
    human = args.agent == "human"
    if human:
        console.print("[dim]Type one action per line. Empty input is an (invalid) action; Ctrl-D quits.[/]")
    for ep in range(args.episodes):
        seed = None if args.seed is None else args.seed + ep
        obs, info = env.reset(seed=seed)
        agent.reset()
        console.print(Panel(obs, title=f"{args.env_id}  episode {ep + 1}  seed {seed}", border_style="cyan"))
        total, step, done = 0.0, 0, False
        while not done:
            if human:
                console.print("[bold]action>[/] ", end="")
            try:
                action = agent.act(obs, info)
            except _quit_errors():
                console.print("\n[yellow]input closed; quitting.[/]")
                env.close()
                return 0
            step += 1
            obs, reward, terminated, truncated, info = env.step(action)
            total += reward
            done = terminated or truncated
            if not human:
                console.print(Panel(action, title=f"step {step}: action", border_style="magenta"))
            console.print(Panel(obs, title=f"step {step}: observation", border_style="cyan"))
            shown = {k: v for k, v in info.items() if k not in ("admissible_commands", "messages")}
            console.print(f"[dim]reward {reward:g}  return {total:g}  terminated {terminated}  truncated {truncated}  info {shown}[/]")
        ok = info.get("success", False)
        console.print(f"[bold {'green' if ok else 'red'}]episode {ep + 1}: {'success' if ok else 'failure'}, "
                      f"return {total:g} in {step} steps[/]")
    env.close()
    return 0
