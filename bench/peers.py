"""Step and reset cost of the games stepgym shares with GEM and TextArena, in one run.

Not a CI job: it needs the peers installed next to stepgym, e.g.::

    python -m venv /tmp/peers
    /tmp/peers/bin/pip install -e . gem-llm textarena
    /tmp/peers/bin/python bench/peers.py --episodes 200 --markdown

Every framework plays the same scripted action sequences (drawn from the episode's seed,
written in each framework's own action format) and each ``step``/``reset`` call is timed
alone with ``perf_counter_ns``; the table shows medians in microseconds. The frameworks of a
game take turns in ``--rounds`` rounds of episodes, so load on a shared machine hits all alike. For TextArena a
step is ``get_observation()`` + ``step()`` (its step returns no observation) on the ``-raw``
env (no wrappers); for GEM, ``gem.make`` as its users get it; for stepgym, ``gym.make``
with Gymnasium's default wrappers.

GEM's and TextArena's Wordle call ``nltk.download`` (and TextArena a POS tagger) at import or
construction, which fails offline. This script writes stepgym's shipped word lists as an
NLTK ``words`` corpus in a temporary ``NLTK_DATA`` folder, turns ``nltk.download`` into a
no-op, and tags every word as a noun, so the peers run offline on the same words.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _offline_nltk() -> None:
    """Give the peers a local word list before they import nltk corpora."""
    from stepgym.envs.wordle import load_words

    data = Path(tempfile.mkdtemp(prefix="peers-nltk-"))
    words = data / "corpora" / "words"
    words.mkdir(parents=True)
    (words / "en").write_text("\n".join(load_words("guesses")) + "\n")
    (words / "en-basic").write_text("\n".join(load_words("answers")) + "\n")
    (words / "README").write_text("stepgym word lists (SCOWL)\n")
    os.environ["NLTK_DATA"] = str(data)
    import nltk

    nltk.data.path.insert(0, str(data))
    nltk.download = lambda *a, **k: True  # offline: never reach the network
    nltk.pos_tag = lambda tokens, *a, **k: [(t, "NN") for t in tokens]


class PeerMissing(Exception):
    """A framework that cannot be imported here; the table says so instead of timing it."""

    def __init__(self, framework: str, exc: BaseException) -> None:
        self.framework = framework
        super().__init__(f"{type(exc).__name__}: {exc}")


def _import(framework: str, module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except Exception as exc:  # ImportError, or a peer failing at import time
        raise PeerMissing(framework, exc) from exc


# -- timing harness -------------------------------------------------------------------------


class Runner:
    """One framework's version of one game: how to make, reset and step it."""

    def __init__(self, framework: str, label: str, make: Callable[[], Any], reset: Callable[[Any, int], Any],
                 step: Callable[[Any, str], bool], fmt: Callable[[str], str],
                 prepare: Callable[[Any, str], str] | None = None) -> None:
        self.framework, self.label = framework, label
        self.make, self.reset, self.step, self.fmt = make, reset, step, fmt
        #: builds an action from the env's state, outside the timed region
        self.prepare = prepare


def time_runner(r: Runner, script: Callable[[int], list[str]], episodes: int, env: Any = None,
                start: int = 0, resets: list[int] | None = None, steps: list[int] | None = None) -> dict[str, float]:
    """Time ``episodes`` episodes (seeds ``start``...); appends to ``resets``/``steps`` when given."""
    env = r.make() if env is None else env
    resets = [] if resets is None else resets
    steps = [] if steps is None else steps
    for ep in range(start, start + episodes):
        t0 = time.perf_counter_ns()
        r.reset(env, ep)
        resets.append(time.perf_counter_ns() - t0)
        for a in script(ep):
            action = r.fmt(a) if r.prepare is None else r.prepare(env, a)
            t0 = time.perf_counter_ns()
            done = r.step(env, action)
            steps.append(time.perf_counter_ns() - t0)
            if done:
                break
    return {
        "reset_us": statistics.median(resets) / 1000,
        "step_us": statistics.median(steps) / 1000 if steps else float("nan"),
        "steps": len(steps),
    }


# -- scripts: the same actions for every framework ------------------------------------------


def _rng(ep: int) -> np.random.Generator:
    return np.random.default_rng(10_000 + ep)


def moves_script(names: tuple[str, ...], n: int) -> Callable[[int], list[str]]:
    return lambda ep: [names[i] for i in _rng(ep).integers(0, len(names), size=n).tolist()]


def wordle_script(ep: int) -> list[str]:
    from stepgym.envs.wordle import load_words

    answers = load_words("answers")
    return [answers[i] for i in _rng(ep).choice(len(answers), size=6, replace=False).tolist()]


def tictactoe_script(ep: int) -> list[str]:
    return [str(c) for c in _rng(ep).permutation(9).tolist()]  # cells 0-8; both players alternate


def connect_four_script(ep: int) -> list[str]:
    rng = _rng(ep)
    heights = [0] * 7
    out = []
    for _ in range(42):
        free = [c for c in range(7) if heights[c] < 6]
        c = free[int(rng.integers(len(free)))]
        heights[c] += 1
        out.append(str(c))  # 0-based column
    return out


# -- stepgym --------------------------------------------------------------------------------


def stepgym_runner(label: str, env_id: str, prepare: Callable[[Any, str], str] | None = None,
                   **kwargs: Any) -> Runner:
    import gymnasium as gym

    import stepgym  # noqa: F401  (registers the envs)

    def step(env: Any, a: str) -> bool:
        _, _, term, trunc, _ = env.step(a)
        return term or trunc

    return Runner("stepgym", label, lambda: gym.make(env_id, **kwargs), lambda env, s: env.reset(seed=s), step,
                  lambda a: a, prepare)


def stepgym_aec_runner(label: str, game: str) -> Runner:
    from stepgym.envs.boardgames import connect_four_aec, tictactoe_aec

    factory = tictactoe_aec if game == "tictactoe" else connect_four_aec

    def step(env: Any, a: str) -> bool:
        agent = env.agent_selection
        env.observe(agent)
        env.step(a)
        return env.terminations[env.agent_selection] or env.truncations[env.agent_selection]

    return Runner("stepgym (AEC, 2 players)", label, factory, lambda env, s: env.reset(seed=s), step,
                  lambda a: str(int(a) + 1))


# -- GEM ----------------------------------------------------------------------------------------


def gem_runner(label: str, env_id: str, **kwargs: Any) -> Runner:
    gem = _import("GEM", "gem")

    def step(env: Any, a: str) -> bool:
        _, _, term, trunc, _ = env.step(a)
        return term or trunc

    return Runner("GEM", label, lambda: gem.make(env_id, **kwargs), lambda env, s: env.reset(seed=s), step,
                  lambda a: "\\boxed{" + a + "}")


def _gem_parts(env_id: str) -> tuple[Callable[[], Any], Callable[[Any, int], Any], Callable[[Any, str], bool]]:
    r = gem_runner("", env_id)
    return r.make, r.reset, r.step


# -- TextArena ----------------------------------------------------------------------------------


def textarena_runner(label: str, env_id: str, players: int = 1, fmt: Callable[[str], str] | None = None,
                     **kwargs: Any) -> Runner:
    ta = _import("TextArena", "textarena")

    def reset(env: Any, s: int) -> None:
        env.reset(num_players=players, seed=s)

    def step(env: Any, a: str) -> bool:
        env.get_observation()
        done, _ = env.step(a)
        return bool(done)

    return Runner("TextArena", label, lambda: ta.make(env_id, **kwargs), reset, step,
                  fmt or (lambda a: f"[{a}]"))


# -- the games ----------------------------------------------------------------------------------


def games() -> list[tuple[str, Callable[[int], list[str]], list[Callable[[], Runner]]]]:
    sokoban_moves = moves_script(("up", "down", "left", "right"), 30)
    lake_moves = moves_script(("left", "down", "right", "up"), 30)

    def countdown_script(ep: int) -> list[str]:
        return ["guess"] * 4

    def countdown_sum(env: Any, _: str) -> str:
        # a well-formed expression over the given numbers (usually not the target): a full check
        nums = env.unwrapped.numbers
        return f"({nums[0]} + {nums[1]}) * {nums[2]} - {nums[3]}"

    return [
        ("Wordle (5 letters)", wordle_script, [
            lambda: stepgym_runner("Wordle", "stepgym/Wordle-v0"),
            lambda: gem_runner("Wordle", "game:Wordle-v0-hard"),
            lambda: textarena_runner("Wordle", "Wordle-v0-raw"),
        ]),
        ("Sokoban (6x6, 2 boxes)", sokoban_moves, [
            lambda: stepgym_runner("Sokoban", "stepgym/Sokoban-v0", width=6, height=6, num_boxes=2, max_steps=30),
            lambda: gem_runner("Sokoban", "game:Sokoban-v0-easy"),
            lambda: textarena_runner("Sokoban", "Sokoban-v0-raw", num_boxes=2, dim_room=(6, 6), max_turns=30),
        ]),
        ("Sokoban (7x7, 2 boxes, stepgym default)", sokoban_moves, [
            lambda: stepgym_runner("Sokoban", "stepgym/Sokoban-v0", max_steps=30),
        ]),
        ("FrozenLake (4x4)", lake_moves, [
            lambda: stepgym_runner("FrozenLake", "stepgym/FrozenLake-v0", max_steps=30),
            lambda: textarena_runner("FrozenLake", "FrozenLake-v0-raw"),
        ]),
        ("Countdown", countdown_script, [
            lambda: stepgym_runner("Countdown", "stepgym/Countdown-v0", prepare=countdown_sum),
            lambda: Runner("GEM", "Countdown (reasoning-gym, one turn)", *_gem_parts("rg:countdown"),
                           lambda a: "\\boxed{(1 + 2) * 3 - 4}"),
            lambda: textarena_runner("Countdown", "Countdown-v0-raw", fmt=lambda a: "[0 1 +]"),
        ]),
        ("TicTacToe", tictactoe_script, [
            lambda: stepgym_aec_runner("TicTacToe", "tictactoe"),
            lambda: stepgym_runner("TicTacToe (vs minimax: 2 plies per step)", "stepgym/TicTacToe-v0",
                                   agent_first=True),
            lambda: textarena_runner("TicTacToe", "TicTacToe-v0-raw", players=2),
        ]),
        ("ConnectFour", connect_four_script, [
            lambda: stepgym_aec_runner("ConnectFour", "connect_four"),
            lambda: stepgym_runner("ConnectFour (vs heuristic: 2 plies per step)", "stepgym/ConnectFour-v0",
                                   agent_first=True),
            lambda: textarena_runner("ConnectFour", "ConnectFour-v0-raw", players=2),
        ]),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=100, help="episodes per game and framework")
    p.add_argument("--rounds", type=int, default=10, help="frameworks alternate in this many rounds of episodes")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = p.parse_args(argv)
    _offline_nltk()
    rows: list[tuple[str, str, str, str, str]] = []
    for game, script, makers in games():
        # Frameworks take turns in rounds of episodes, so that load spikes on a shared
        # machine hit all of them alike.
        entries: list[dict[str, Any]] = []
        for mk in makers:
            try:
                runner = mk()
                entries.append({"runner": runner, "env": runner.make(), "resets": [], "steps": [], "error": None})
            except Exception as exc:  # a peer that cannot even be imported or built
                framework = exc.framework if isinstance(exc, PeerMissing) else "?"
                why = str(exc) if isinstance(exc, PeerMissing) else f"{type(exc).__name__}: {exc}"
                rows.append((game, framework, "n/a", "n/a", "not available here: " + why.splitlines()[0][:120]))
        per_round = max(1, args.episodes // args.rounds)
        for rnd in range(args.rounds):
            for e in entries:
                if e["error"] is not None:
                    continue
                try:
                    time_runner(e["runner"], script, per_round, env=e["env"], start=rnd * per_round,
                                resets=e["resets"], steps=e["steps"])
                except Exception as exc:
                    traceback.print_exc(file=sys.stderr)
                    e["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:120]
        for e in entries:
            runner = e["runner"]
            name = runner.framework + ("" if runner.label in game else f" [{runner.label}]")
            if e["error"] is not None:
                rows.append((game, name, "n/a", "n/a", e["error"]))
            else:
                rows.append((game, name, f"{statistics.median(e['resets']) / 1000:.1f}",
                             f"{statistics.median(e['steps']) / 1000:.1f}", f"{len(e['steps'])} steps"))
            print(f"{rows[-1]}", file=sys.stderr, flush=True)
    header = ("game", "framework", "reset µs", "step µs", "note")
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
