"""Self-play on stepgym's PettingZoo envs: one agent plays both seats.

Two games, two PettingZoo APIs:

* tic-tac-toe under the AEC API (turn by turn: ``agent_iter`` / ``last`` / ``step``),
* negotiation under the parallel API (both agents act at once, one ``act_batch`` call).

In self-play a single agent object plays every seat; its ``slots`` keep one memory per
seat (slot 0 = first player, slot 1 = second), so a chat model sees its own side's
conversation only. The default agent is a ten-line rule policy wrapped with
``CallableAgent``; pass any agent spec to pit a model against itself::

    python examples/pettingzoo_selfplay.py --games 20
    python examples/pettingzoo_selfplay.py --agent hf:runs/my_run/policy --games 4
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

import numpy as np

from stepgym.agents import CallableAgent, make_agent
from stepgym.envs.boardgames import tictactoe_aec
from stepgym.envs.negotiation import negotiation_parallel


def rule_policy(rng: np.random.Generator):
    """A random legal move in board games; in negotiation, ask for what you value most, accept a fair offer."""

    def act(observation: str) -> str:
        legal = re.search(r"Legal \w+: ([\d, ]+)\.", observation)
        if legal:  # board game: a random legal cell
            return str(rng.choice(legal.group(1).split(", ")))
        pool = [int(n) for n in re.findall(r"(\d+) \w+(?:,| and|\.)", observation.split("\n")[0])[:3]]
        values = [int(v) for v in re.findall(r"\w+ (\d+)", observation.split("\n")[1])[:3]]
        offer = re.search(r"worth (\d+) to you", observation)
        whole = re.search(r"whole pool: (\d+)", observation)
        rnd = re.search(r"Round (\d+) of (\d+)", observation)
        last_round = rnd is not None and rnd.group(1) == rnd.group(2)
        if offer and whole and (2 * int(offer.group(1)) >= int(whole.group(1)) or last_round):
            return "accept"  # half the pool's value to us is a fair deal; anything beats no deal at the end
        take = [n if v >= 3 else 0 for n, v in zip(pool, values, strict=False)]  # keep what is worth a lot to us
        return "propose " + " ".join(map(str, take))

    return act


def play_tictactoe(agent, games: int, seed: int) -> Counter:
    """AEC self-play; returns outcome counts (X wins, O wins, draws, forfeits)."""
    env = tictactoe_aec()
    outcomes: Counter = Counter()
    for g in range(games):
        env.reset(seed=seed + g)
        agent.reset()
        returns = Counter()
        for name in env.agent_iter():
            obs, reward, terminated, truncated, info = env.last()
            returns[name] += reward
            if terminated or truncated:
                action = None  # PettingZoo: a finished agent steps with None
            else:
                seat = env.possible_agents.index(name)
                action = agent.act_batch([obs], [info], slots=[seat])[0]
            env.step(action)
        outcomes["X wins" if returns["player_0"] > 0 else "O wins" if returns["player_1"] > 0 else "draw"] += 1
    return outcomes


def play_negotiation(agent, games: int, seed: int) -> tuple[int, float]:
    """Parallel self-play; returns (deals made, mean reward per agent)."""
    env = negotiation_parallel()
    deals, total = 0, 0.0
    for g in range(games):
        observations, infos = env.reset(seed=seed + g)
        agent.reset()
        while env.agents:
            names = list(env.agents)
            actions = agent.act_batch(
                [observations[n] for n in names],
                [infos[n] for n in names],
                slots=[env.possible_agents.index(n) for n in names],
            )
            observations, rewards, terms, truncs, infos = env.step(dict(zip(names, actions, strict=True)))
            total += sum(rewards.values())
        deals += any(i.get("success") for i in infos.values())
    return deals, total / (2 * games)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default=None, help="agent spec (default: the rule policy in this file)")
    parser.add_argument("--games", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.agent:
        agent = make_agent(args.agent)
    else:
        agent = CallableAgent(rule_policy(np.random.default_rng(args.seed)), name="rules")
    outcomes = play_tictactoe(agent, args.games, args.seed)
    print(f"tic-tac-toe, {agent.name} vs itself, {args.games} games: {dict(outcomes)}")
    deals, mean_reward = play_negotiation(agent, args.games, args.seed)
    print(f"negotiation, {agent.name} vs itself, {args.games} games: {deals} deals, mean reward {mean_reward:.3f}")


if __name__ == "__main__":
    main()
