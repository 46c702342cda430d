"""A plain Gymnasium loop over a stepgym env with your own policy (no stepgym agent classes).

The policy is ten lines of string handling: for "What is the A of E?" it looks up
attribute A of entity E, then answers with the value it read. It solves the one-hop easy
ToolUse-v0 tasks; anything smarter (an LLM) plugs in the same way: a function from
observation text to action text.

    python examples/gym_loop.py --episodes 20
"""

from __future__ import annotations

import argparse
import json
import re

import gymnasium as gym

import stepgym  # noqa: F401  (registers the stepgym/ envs)


def my_policy(observation: str) -> str:
    """Observation text in, action text out."""
    task = re.search(r"What is the (.+?) of (.+?)\?", observation)
    if task:  # first step: the task is in the observation
        attribute = task.group(1).replace("founding year", "founded").replace("headquarters city", "headquarters")
        call = {"name": "lookup", "arguments": {"entity": task.group(2), "attribute": attribute}}
    else:  # second step: the lookup result "Entity attribute: value"
        call = {"name": "answer", "arguments": {"text": observation.rsplit(":", 1)[-1].strip()}}
    return "<tool_call>" + json.dumps(call) + "</tool_call>"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20)
    args = parser.parse_args()

    env = gym.make("stepgym/ToolUse-v0", difficulty="easy")
    wins = 0
    for episode in range(args.episodes):
        obs, info = env.reset(seed=episode)
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(my_policy(obs))
            done = terminated or truncated
        wins += info["success"]
    print(f"my_policy solved {wins}/{args.episodes} episodes of stepgym/ToolUse-v0 (easy)")


if __name__ == "__main__":
    main()
