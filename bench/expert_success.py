"""Expert success of the puzzle, game and errand envs, as stated in their cards (docs/envs/*.md).

Usage:
    python bench/expert_success.py            # every configuration below
    python bench/expert_success.py --quick    # 10x fewer episodes

Plays ``expert_action()`` until the episode ends, over seeds 0..N-1, and prints the success
rate, mean steps and mean final reward per configuration. For slippery FrozenLake it also
prints the value-iteration prediction of the best achievable success, which the measured
rate should match.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gymnasium as gym  # noqa: E402

import stepgym  # noqa: E402,F401

CONFIGS: list[tuple[str, int, dict[str, Any]]] = [
    ("stepgym/Sokoban-v0", 1000, {}),
    ("stepgym/Sokoban-v0", 300, {"width": 9, "height": 9, "num_boxes": 3}),
    ("stepgym/FrozenLake-v0", 1000, {}),
    ("stepgym/FrozenLake-v0", 300, {"size": 8}),
    ("stepgym/FrozenLake-v0", 2000, {"slippery": True}),
    ("stepgym/FrozenLake-v0", 500, {"slippery": True, "size": 8}),
    ("stepgym/Wordle-v0", 2000, {}),
    ("stepgym/Countdown-v0", 1000, {}),
    ("stepgym/Countdown-v0", 300, {"num_numbers": 6, "use_all": True}),
    ("stepgym/TicTacToe-v0", 1000, {}),
    ("stepgym/TicTacToe-v0", 1000, {"mistake_prob": 0.3}),
    ("stepgym/ConnectFour-v0", 1000, {}),
    ("stepgym/ConnectFour-v0", 500, {"mistake_prob": 0.2}),
    ("stepgym/Negotiation-v0", 1000, {}),
    ("stepgym/Negotiation-v0", 300, {"n_items": 5, "max_rounds": 10}),
    ("stepgym/Errands-v0", 1000, {"difficulty": "easy"}),
    ("stepgym/Errands-v0", 500, {"difficulty": "medium"}),
    ("stepgym/Errands-v0", 300, {"difficulty": "hard"}),
    ("stepgym/Errands-v0", 300, {"difficulty": "hard", "note": False, "max_steps": 60}),
]

CLASSIC_LAKE = ["SFFF", "FHFH", "FFFH", "HFFG"]


def run(env_id: str, episodes: int, kwargs: dict[str, Any], options: dict[str, Any] | None = None) -> str:
    env = gym.make(env_id, **kwargs)
    wins, steps, rewards, outcomes, optimal, predicted = 0, [], [], {}, [], []
    for seed in range(episodes):
        env.reset(seed=seed, options=options)
        if getattr(env.unwrapped, "slippery", False):
            env.unwrapped.expert_action()
            q = env.unwrapped._q
            predicted.append(max(q[env.unwrapped.max_steps][env.unwrapped._pos]))
        n = 0
        while True:
            _, reward, term, trunc, info = env.step(env.unwrapped.expert_action())
            n += 1
            if term or trunc:
                break
        wins += bool(info.get("success"))
        steps.append(n)
        rewards.append(reward)
        if "outcome" in info:
            outcomes[info["outcome"]] = outcomes.get(info["outcome"], 0) + 1
        if "optimal_value" in info:
            optimal.append(info["optimal_value"])
    parts = [
        f"{env_id} {kwargs or ''}{' ' + str(options) if options else ''}".strip(),
        f"success {wins}/{episodes} = {wins / episodes:.3f}",
        f"mean steps {statistics.mean(steps):.2f} (max {max(steps)})",
        f"mean reward {statistics.mean(rewards):.3f}",
    ]
    if outcomes:
        parts.append("outcomes " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    if optimal:
        parts.append(f"mean optimal value {statistics.mean(optimal):.3f}")
    if predicted:
        parts.append(f"value-iteration prediction {statistics.mean(predicted):.3f}")
    return " | ".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="10x fewer episodes")
    args = p.parse_args(argv)
    scale = 10 if args.quick else 1
    for env_id, n, kw in CONFIGS:
        print(run(env_id, max(10, n // scale), kw), flush=True)
    print(run("stepgym/FrozenLake-v0", max(10, 3000 // scale), {"slippery": True, "max_steps": 100},
              options={"map": CLASSIC_LAKE}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
