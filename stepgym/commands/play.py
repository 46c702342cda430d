"""``stepgym play``: play an env in the terminal, or watch an agent play it."""

from __future__ import annotations

import argparse
import random

from stepgym.commands._common import add_env_kwargs_option, make_env, parse_env_kwargs
from stepgym.errors import InvalidArgument

HELP = "play an env yourself, or watch an agent (expert, random, a model) play it"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("env_id", metavar="ID", help="env id, e.g. stepgym/ToolUse-v0")
    p.add_argument("--agent", default="human",
                   help="who plays: human (default), expert, random, or an agent spec such as "
                        "hf:PATH, checkpoint:DIR or openai:MODEL@URL")
    p.add_argument("--seed", type=int, default=None, help="seed of the first episode (default: a random seed, shown in the title)")
    p.add_argument("--episodes", type=int, default=1, help="episodes to play (default 1)")
    add_env_kwargs_option(p)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.panel import Panel

    from stepgym.agents import make_agent
    from stepgym.agents.simple import UserQuit

    if args.episodes < 1:
        raise InvalidArgument(f"--episodes must be at least 1, got {args.episodes}")
    env = make_env(args.env_id, parse_env_kwargs(args.env_kwargs))
    human = args.agent == "human"
    # play shows the observations itself; the human agent only reads actions.
    agent = make_agent(args.agent, env, show_observation=False) if human else make_agent(args.agent, env)
    console = Console(highlight=False)
    if human:
        console.print("[dim]Type one action per line (end a line with \\ to continue it); "
                      "/hint shows the expert's step; /quit or Ctrl-D quits.[/]")
    # no --seed: a random one, shown in each episode's title so the episode can be replayed
    first_seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    for ep in range(args.episodes):
        seed = first_seed + ep
        obs, info = env.reset(seed=seed)
        agent.reset()
        console.print(Panel(escape(obs), title=f"{args.env_id}  episode {ep + 1}  seed {seed}", border_style="cyan"))
        total, step, done = 0.0, 0, False
        while not done:
            try:
                action = agent.act(obs, info)
            except (EOFError, UserQuit):
                console.print("\n[yellow]input closed; quitting.[/]")
                env.close()
                return 0
            step += 1
            obs, reward, terminated, truncated, info = env.step(action)
            total += reward
            done = terminated or truncated
            if not human:
                console.print(Panel(escape(action), title=f"step {step}: action", border_style="magenta"))
            console.print(Panel(escape(obs), title=f"step {step}: observation", border_style="cyan"))
            shown = {k: v for k, v in info.items() if k not in ("admissible_commands", "messages")}
            console.print(escape(f"reward {reward:g}  return {total:g}  terminated {terminated}  "
                                 f"truncated {truncated}  info {shown}"), style="dim")
        ok = info.get("success", False)
        console.print(f"[bold {'green' if ok else 'red'}]episode {ep + 1}: {'success' if ok else 'failure'}, "
                      f"return {total:g} in {step} steps[/]")
    env.close()
    return 0
