"""Hostile-input fuzzing of EVERY registered env (new envs are covered automatically).

Actions are what an LLM might emit on a bad day: arbitrary unicode with lone surrogates
and control characters, huge and deeply nested inputs, tool-call look-alikes in every
format stepgym parses, words taken from the env's own observations (near-valid
commands), and random sequences mixing those with expert moves. Invariants after every
step: no exception, observation inside the observation space, finite float reward, bool
flags, the shared info keys, bounded time per step, and byte-identical trajectories for
the same seed and actions.

CI cost is bounded by a fixed example count per env (``FUZZ_EXAMPLES``) and a
derandomized search; ``bench/fuzz.py`` runs the same strategies far longer and records
its figures in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from typing import Any

import gymnasium as gym
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepgym.core import StepEnv, StepResult
from tests.conftest import builtin_env_ids

ENV_IDS = builtin_env_ids()

#: Examples per env per test; raise with STEPGYM_FUZZ_EXAMPLES for a longer local run.
FUZZ_EXAMPLES = int(os.environ.get("STEPGYM_FUZZ_EXAMPLES", "20"))
#: Rough seconds one test may spend on one env; slow envs (third-party interpreters) get
#: fewer examples, never fewer than MIN_EXAMPLES.
FUZZ_BUDGET_S = float(os.environ.get("STEPGYM_FUZZ_BUDGET_S", "1.5"))
MIN_EXAMPLES = 5
#: Task seeds drawn by the fuzzer: few, so envs that build a task per seed (TextWorld
#: compiles a game) pay that once; the actions are what is being explored.
SEEDS = st.integers(0, 4)
#: Longest random action sequence.
MAX_SEQUENCE = 8
#: Upper bound on one step's wall time: generous for a loaded 2-core CI box; bench/fuzz.py
#: reports the real figures.
STEP_BUDGET_S = float(os.environ.get("STEPGYM_FUZZ_STEP_BUDGET_S", "2.0"))

FUZZ_SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,  # time per step is asserted explicitly, per step
    derandomize=True,  # CI must not be flaky; bench/fuzz.py explores randomly
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

# -- strategies ----------------------------------------------------------------------

lone_surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
control_chars = st.one_of(
    st.characters(max_codepoint=0x1F),
    st.sampled_from(["\x7f", "\x85", "\u200b", "\u200d", "\u202e", "\u2028", "\u2029", "\ufeff", "\ufffd", "\U0010ffff"]),
)
any_char = st.one_of(st.characters(), lone_surrogates, control_chars)
wild_text = st.text(any_char, max_size=300)


def _nested(depth: int, kind: str) -> str:
    if kind == "json":
        return '{"a": ' * depth + "1" + "}" * depth
    if kind == "list":
        return "[" * depth + "]" * depth
    if kind == "tag":
        return "<tool_call>" * depth + "</tool_call>" * depth
    return "(" * depth + "1" + ")" * depth


def huge_and_nested(max_action: int) -> st.SearchStrategy[str]:
    """Edge sizes around the action bound and deep nesting (JSON, brackets, tags, parens)."""
    return st.one_of(
        st.builds(_nested, st.sampled_from([50, 1000, 5000]), st.sampled_from(["json", "list", "tag", "paren"])),
        st.builds(
            lambda n, c: c * n,
            st.sampled_from([max_action - 1, max_action, max_action + 1, 4 * max_action]),
            st.sampled_from(["a", "\ud800", "😀", "\x00", "{"]),
        ),
        st.builds(lambda d: "<tool_call>" + _nested(d, "json") + "</tool_call>", st.sampled_from([100, 3000])),
        st.builds(
            lambda d: '<tool_call>{"name": "search", "arguments": {"query": ' + _nested(d, "list") + "}}</tool_call>",
            st.sampled_from([100, 3000]),
        ),
    )


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), wild_text),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(wild_text, inner, max_size=4)),
    max_leaves=12,
)


def _dumps(obj: Any) -> str:
    try:
        return json.dumps(obj, ensure_ascii=False)
    except (TypeError, ValueError):  # pragma: no cover - hypothesis values are JSON-able
        return str(obj)


def tool_call_lookalikes(names: list[str], words: list[str]) -> st.SearchStrategy[str]:
    """Tool calls in every parsed format, with real and fake names and hostile arguments."""
    name = st.one_of(st.sampled_from(names), wild_text.map(lambda s: s[:20]))
    word = st.sampled_from(words) if words else wild_text
    args = st.one_of(
        st.dictionaries(st.one_of(st.sampled_from(["query", "entity", "attribute", "expression", "text", "code", "input"]), wild_text),
                        st.one_of(json_values, word), max_size=4),
        json_values,
    )
    call = st.builds(lambda n, a: {"name": n, "arguments": a}, name, args)
    prefix = st.sampled_from(["", "Thought: let me think.\n", "I will call a tool. ", "```json\n", "<think>hmm</think>"])
    return st.one_of(
        st.builds(lambda p, c: f"{p}<tool_call>{_dumps(c)}</tool_call>", prefix, call),
        st.builds(lambda p, c: f"{p}{_dumps(c)}", prefix, call),
        st.builds(lambda c: f"```json\n{_dumps(c)}\n```", call),
        st.builds(lambda n, w: f"Action: {n}[{w}]", name, st.one_of(word, wild_text)),
        st.builds(lambda n, w: f"Thought: x\nAction: {n}[{w}", name, word),  # unclosed bracket
        st.builds(lambda c, k: f"<tool_call>{_dumps(c)[:k]}", call, st.integers(0, 60)),  # cut off mid-JSON
        st.builds(lambda a, b: f"<tool_call>{_dumps(a)}</tool_call><tool_call>{_dumps(b)}</tool_call>", call, call),
        st.builds(lambda n: f'<tool_call>{{"name": "{n}", "arguments": {{"text": NaN}}}}</tool_call>', st.sampled_from(names)),
    )


def near_valid(words: list[str]) -> st.SearchStrategy[str]:
    """Commands built from the env's own vocabulary: the hardest inputs to reject well."""
    if not words:
        return wild_text
    return st.builds(
        lambda ws, sep, noise: sep.join(ws) + noise,
        st.lists(st.sampled_from(words), min_size=1, max_size=4),
        st.sampled_from([" ", "", "\n", "  ", "\t", ", "]),
        st.sampled_from(["", "!", "?", " \ud800", "\x00", " 😀", "\u202e"]),
    )


_WORD_RE = re.compile(r"[A-Za-z_][\w\-']{0,24}|\d{1,6}")


def vocabulary(env: gym.Env, seed: int = 0) -> list[str]:
    obs, _ = env.reset(seed=seed)
    words = sorted(set(_WORD_RE.findall(obs)))[:300]
    return words


def actions_for(env: gym.Env, words: list[str]) -> st.SearchStrategy[str]:
    names = ["answer", "search", "lookup", "calculator", "python", "finish", *words[:20]]
    max_action = env.action_space.max_length
    return st.one_of(
        wild_text,
        huge_and_nested(max_action),
        tool_call_lookalikes(names, words),
        near_valid(words),
        st.sampled_from(["", " ", "\n", "\x00", "\ud800", "None", "null", "{}", "[]", "<tool_call></tool_call>"]),
    )


# -- invariants -----------------------------------------------------------------------

_ENVS: dict[str, gym.Env] = {}
_WORDS: dict[str, list[str]] = {}
_COST: dict[str, float] = {}


def env_for(env_id: str) -> gym.Env:
    """One env per id for the whole module: ``gym.make`` is not what is being fuzzed."""
    if env_id not in _ENVS:
        env = _ENVS[env_id] = gym.make(env_id)
        _WORDS[env_id] = vocabulary(env)
        # Warm every fuzz seed once and time a reset + step: the per-example cost.
        for seed in range(5):
            env.reset(seed=seed)
        t0 = time.perf_counter()
        env.reset(seed=1)
        for _ in range(2):
            _, _, te, tr, _ = env.step("look")
            if te or tr:
                env.reset(seed=1)
        _COST[env_id] = time.perf_counter() - t0
    return _ENVS[env_id]


def examples_for(env_id: str, steps_per_example: float) -> settings:
    """FUZZ_SETTINGS with fewer examples for envs whose steps are slow."""
    per_example = _COST[env_id] / 2 * (1 + steps_per_example)
    n = max(MIN_EXAMPLES, min(FUZZ_EXAMPLES, int(FUZZ_BUDGET_S / max(per_example, 1e-6))))
    return settings(FUZZ_SETTINGS, max_examples=n)


#: When a dict, ``checked_step`` adds its figures to it (bench/fuzz.py reads them).
STATS: dict[str, float] | None = None


def checked_step(env: gym.Env, action: str) -> tuple:
    t0 = time.perf_counter()
    obs, reward, terminated, truncated, info = env.step(action)
    took = time.perf_counter() - t0
    if STATS is not None:
        STATS["steps"] = STATS.get("steps", 0) + 1
        STATS["invalid"] = STATS.get("invalid", 0) + (not info.get("action_valid", True))
        STATS["step_s"] = STATS.get("step_s", 0.0) + took
        STATS["max_step_s"] = max(STATS.get("max_step_s", 0.0), took)
    assert took < STEP_BUDGET_S, f"step took {took:.2f} s (budget {STEP_BUDGET_S} s) on {action[:80]!r}"
    assert isinstance(obs, str) and env.observation_space.contains(obs), f"observation outside the space: {obs[:80]!r}"
    assert type(reward) is float and math.isfinite(reward), f"reward {reward!r}"
    assert type(terminated) is bool and type(truncated) is bool
    assert isinstance(info, dict)
    assert type(info.get("action_valid")) is bool
    assert info.get("error") is None or isinstance(info["error"], str)
    if terminated or truncated:
        assert type(info.get("success")) is bool
    # The observation must be encodable for logs and tokenizers (surrogates escaped).
    obs.encode("utf-8", "surrogatepass")
    return obs, reward, terminated, truncated, info


def _fingerprint(obs: str, reward: float, te: bool, tr: bool, info: dict) -> tuple:
    return (obs, reward, te, tr, info.get("action_valid"), info.get("error"), info.get("success"))


# -- properties (shared with bench/fuzz.py) --------------------------------------------


def single_action_property(env: gym.Env, words: list[str], counter: dict | None = None):
    """The property "one hostile step after reset keeps every invariant" for ``env``."""

    @given(seed=SEEDS, action=actions_for(env, words))
    def run(seed: int, action: str) -> None:
        obs, info = env.reset(seed=seed)
        assert env.observation_space.contains(obs)
        if counter is not None:
            counter["actions"] = counter.get("actions", 0) + 1
        _, _, te, tr, info = checked_step(env, action)
        if not info["action_valid"]:
            assert isinstance(info["error"], str) and info["error"], "an invalid action must say why"
        if not (te or tr):
            # The env is still usable after the hostile step.
            checked_step(env, env.unwrapped.expert_action())

    return run


def sequence_property(env: gym.Env, words: list[str], counter: dict | None = None):
    """The property "random sequences keep every invariant and replay identically"."""
    # A step is either hostile text or the expert's move (None), so episodes get deep.
    plan = st.lists(st.one_of(actions_for(env, words), st.just(None)), min_size=1, max_size=MAX_SEQUENCE)

    @given(seed=SEEDS, steps=plan)
    def run(seed: int, steps: list[str | None]) -> None:
        def episode(e: gym.Env) -> list[tuple]:
            obs, _ = e.reset(seed=seed)
            trace: list[tuple] = [obs]
            for a in steps:
                action = e.unwrapped.expert_action() if a is None else a
                if counter is not None:
                    counter["actions"] = counter.get("actions", 0) + 1
                out = checked_step(e, action)
                trace.append((action, *_fingerprint(*out)))
                if out[2] or out[3]:
                    obs, _ = e.reset(seed=seed + 1)
                    trace.append(obs)
            return trace

        first = episode(env)
        again = episode(env)  # same instance, after a full history of other episodes
        assert first == again, "same seed + same actions gave a different trajectory"

    return run


# -- tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_single_hostile_actions(env_id):
    env = env_for(env_id)
    examples_for(env_id, 2)(single_action_property(env, _WORDS[env_id]))()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_random_sequences_are_safe_and_deterministic(env_id):
    env = env_for(env_id)
    examples_for(env_id, 2 * (1 + MAX_SEQUENCE / 2))(sequence_property(env, _WORDS[env_id]))()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_fresh_instance_matches_reused_instance(env_id):
    """Nothing leaks from one episode to the next: a fresh env replays byte for byte."""
    env = env_for(env_id)
    words = _WORDS[env_id]
    fresh = gym.make(env_id)
    actions = ["\ud800", words[0] if words else "x", "", "<tool_call>{}</tool_call>"]
    for e in (env, fresh):
        e.reset(seed=5)
    outs = []
    for e in (env, fresh):
        obs, _ = e.reset(seed=7)
        trace = [obs]
        for a in actions:
            out = checked_step(e, a)
            trace.append(_fingerprint(*out))
            if out[2] or out[3]:
                break
        outs.append(trace)
    assert outs[0] == outs[1]


class _FragileEnv(StepEnv):
    """A deliberately buggy env: the fuzzer must catch it (the tests can fail)."""

    def _reset(self, options):
        return "Say hello.", {}

    def _step(self, action):
        if "\ud800" <= action[:1] <= "\udfff" or "\x00" in action:
            action.encode("utf-8")  # raises on a lone surrogate; a typical real bug
            raise ValueError("NUL in action")
        return StepResult("ok", reward=float("nan") if action == "nan" else 0.0)

    def expert_action(self):
        return "hello"


def test_fuzzer_catches_a_fragile_env():
    env = _FragileEnv(max_steps=5)
    # Stops at the first failure; the example cap only matters if the fuzzer went blind.
    strict = settings(FUZZ_SETTINGS, max_examples=200, report_multiple_bugs=False)
    with pytest.raises((UnicodeEncodeError, ValueError, AssertionError)):
        strict(single_action_property(env, ["hello", "nan"]))()


#: Programs for the python tool: known escapes, random text, and small generated code.
PYTHON_PROGRAMS = st.one_of(
    st.sampled_from([
        "import os\nwhile True: os.fork()",
        "x = bytearray(10**10)",
        "while True: pass",
        "print(open('/etc/shadow').read())",
        "import socket; socket.create_connection(('127.0.0.1', 80))",
        "print('x' * 10**7)",
        "import os, signal; os.kill(os.getppid(), signal.SIGKILL)",
        "raise SystemExit(3)",
        "import sys; sys.stdout.write('\\udcff' * 10)",
        "import ctypes; ctypes.string_at(0)",
        "def f(): return f()\nf()",
        "exec('(' * 100000 + ')' * 100000)",
    ]),
    wild_text,
    st.builds(lambda a, op, b: f"print({a} {op} {b})", st.integers(-10**30, 10**30),
              st.sampled_from(["+", "-", "*", "//", "%", "**", "/"]), st.integers(-50, 50)),
)


def tooluse_python_env() -> gym.Env:
    """ToolUse-v0 with the python tool, with short limits so hostile programs end fast."""
    env = gym.make("stepgym/ToolUse-v0", tools=("search", "lookup", "calculator", "python"), difficulty="medium")
    env.unwrapped.tools["python"] = type(env.unwrapped.tools["python"])(timeout_s=1.0, cpu_s=1, memory_mb=256)
    return env


def python_tool_property(env: gym.Env):
    """The property "any program is an observation, and the tool works right after"."""
    from stepgym.actions import format_tool_call

    @given(code=PYTHON_PROGRAMS)
    def run(code: str) -> None:
        env.reset(seed=0)
        obs, reward, te, tr, info = checked_step(env, format_tool_call("python", {"code": code}))
        assert not te and reward == 0.0
        ok = checked_step(env, format_tool_call("python", {"code": "print(6 * 7)"}))
        assert ok[0] == "42" and ok[4]["error"] is None, ok[0]

    return run


def test_tooluse_with_python_tool_survives_hostile_code():
    """ToolUse-v0 with the python tool: hostile programs get error observations, fast."""
    settings(FUZZ_SETTINGS, max_examples=12)(python_tool_property(tooluse_python_env()))()
