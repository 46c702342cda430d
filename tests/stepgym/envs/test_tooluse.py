from __future__ import annotations

import json

import gymnasium as gym
import pytest

import stepgym
from stepgym.actions import format_tool_call
from stepgym.envs.tooluse import answer_matches


def make(**kw):
    return gym.make("stepgym/ToolUse-v0", **kw)


def run_expert(env, seed):
    obs, info = env.reset(seed=seed)
    steps, done = 0, False
    while not done:
        obs, r, te, tr, info = env.step(env.unwrapped.expert_action())
        steps += 1
        done = te or tr
    return r, info, steps


@pytest.mark.parametrize("difficulty,calls", [("easy", 2), ("medium", 3), ("hard", 4)])
def test_expert_solves_every_seed(difficulty, calls):
    env = make(difficulty=difficulty)
    for seed in range(200):
        r, info, steps = run_expert(env, seed)
        assert r == 1.0 and info["success"] is True, seed
        assert steps == calls


def test_difficulty_changes_tasks():
    qs = {d: make(difficulty=d).reset(seed=5)[0].split("\n")[0] for d in ("easy", "medium", "hard")}
    assert len(set(qs.values())) == 3
    obs, info = make(difficulty="hard").reset(seed=5)
    assert info["optimal_steps"] == 4 and info["difficulty"] == "hard"


def test_first_observation_states_task_tools_format():
    obs, _ = make().reset(seed=0)
    assert obs.startswith("Task: ")
    for tool in ("search(query: string)", "lookup(entity: string, attribute: string)", "calculator(expression: string)", "answer(text: string)"):
        assert tool in obs
    assert "<tool_call>" in obs and "arguments schema" in obs and "10 steps" in obs


def test_seeds_give_different_worlds_and_same_seed_same_world():
    a = make().reset(seed=1)[0]
    assert a == make().reset(seed=1)[0]
    assert len({make().reset(seed=s)[0] for s in range(30)}) > 25


def _first_plan_call(env):
    return json.loads(env.unwrapped.expert_action()[len("<tool_call>"):-len("</tool_call>")])


def test_all_action_formats_are_accepted():
    env = make(difficulty="easy")
    env.reset(seed=2)
    call = _first_plan_call(env)
    ent, attr = call["arguments"]["entity"], call["arguments"]["attribute"]
    expected = env.step(format_tool_call("lookup", call["arguments"]))[0]
    for action in (
        json.dumps(call),
        f"Thought: I need it.\nAction: lookup[{ent}, {attr}]",
        f"```json\n{json.dumps(call)}\n```",
        f"I will call the tool now.\n<tool_call>{json.dumps(call)}</tool_call>",
    ):
        obs, r, te, tr, info = env.step(action)
        assert info["action_valid"] is True, action
        assert obs == expected


def test_search_lists_entities_with_relations():
    env = make(difficulty="medium")
    env.reset(seed=0)
    person = _first_plan_call(env)["arguments"]["entity"]
    obs, r, te, tr, info = env.step(format_tool_call("search", {"query": person}))
    assert info["action_valid"] and info["tool"] == "search"
    assert obs.startswith("1. " + person) and "(person)" in obs and "city" in obs
    obs, *_ = env.step(format_tool_call("search", {"query": "zzzqqq"}))
    assert "No entity matches" in obs


def test_lookup_errors_help():
    env = make()
    env.reset(seed=0)
    ent = _first_plan_call(env)["arguments"]["entity"]
    obs, r, te, tr, info = env.step(format_tool_call("lookup", {"entity": ent[:-1], "attribute": "x"}))
    assert f"Did you mean {ent}" in obs and info["action_valid"] is True and info["error"]
    obs, *_ = env.step(format_tool_call("lookup", {"entity": ent, "attribute": "colour"}))
    assert "has no attribute" in obs and "it has:" in obs
    # aliases and case are forgiven
    obs, *_ = env.step(format_tool_call("lookup", {"entity": ent.upper(), "attribute": "Weight"}))
    assert "no attribute" in obs or ":" in obs


def test_calculator_tool_in_env():
    env = make()
    env.reset(seed=0)
    obs, r, te, tr, info = env.step(format_tool_call("calculator", {"expression": "(1990 - 1875) * 2"}))
    assert obs == "230" and info["action_valid"]
    obs, r, te, tr, info = env.step(format_tool_call("calculator", {"expression": "9**9**9"}))
    assert "too large" in obs and te is False


@pytest.mark.parametrize(
    "action,fragment",
    [
        ("just text", "no tool call found"),
        ('<tool_call>{"name": "fly", "arguments": {}}</tool_call>', "unknown tool"),
        ('<tool_call>{"name": "lookup", "arguments": {"entity": "x"}}</tool_call>', "missing argument"),
        ('<tool_call>{"name": "search", "arguments": {"query": ["a"]}}</tool_call>', "must be a string"),
        ('<tool_call>{"name": "search", "arguments": {"q": "a"}}</tool_call>', "unknown argument"),
        ("Action: lookup[onlyone]", "comma-separated"),
    ],
)
def test_invalid_actions_explained(action, fragment):
    env = make()
    env.reset(seed=0)
    obs, r, te, tr, info = env.step(action)
    assert info["action_valid"] is False and fragment in obs and fragment in info["error"]
    assert r == 0.0 and te is False


def test_wrong_answer_ends_with_zero_and_reveals():
    env = make()
    env.reset(seed=0)
    obs, r, te, tr, info = env.step(format_tool_call("answer", {"text": "definitely wrong"}))
    assert (r, te, info["success"]) == (0.0, True, False) and "The answer was" in obs


def test_truncation_at_step_limit_reports_answer():
    env = make(max_steps=3)
    env.reset(seed=0)
    for _ in range(3):
        obs, r, te, tr, info = env.step("nothing")
    assert tr is True and te is False and info["success"] is False and "answer" in info


def test_expert_recovers_after_mistakes_and_respects_budget():
    env = make(difficulty="hard", max_steps=6)
    for seed in range(50):
        env.reset(seed=seed)
        env.step("garbage")
        env.step(format_tool_call("search", {"query": "anything"}))
        done = False
        while not done:
            obs, r, te, tr, info = env.step(env.unwrapped.expert_action())
            done = te or tr
        assert info["success"] is True
    # with a single step left, the expert answers directly
    env = make(difficulty="hard", max_steps=2)
    env.reset(seed=0)
    env.step("garbage")
    assert '"answer"' in env.unwrapped.expert_action()


@pytest.mark.parametrize("given,gold,ok", [
    ("42", 42, True), ("The answer is 42.", 42, True), ("1,204", 1204, True), ("42.00001", 42, True),
    ("41", 42, False), ("42 or 43", 42, False), ("", 42, False), ("the Velora Labs", "Velora Labs", True),
    ("velora  labs!", "Velora Labs", True), ("Velora", "Velora Labs", False), ("-3", -3, True),
])
def test_answer_matching(given, gold, ok):
    assert answer_matches(given, gold) is ok


def test_bad_kwargs_raise_clear_errors():
    with pytest.raises(stepgym.InvalidArgument, match="difficulty"):
        make(difficulty="extreme")
    with pytest.raises(stepgym.InvalidArgument, match="tools"):
        make(tools=("search",))
    with pytest.raises(stepgym.InvalidArgument, match="num_distractors"):
        make(num_distractors=-1)


def test_tools_subset_is_respected():
    env = make(tools=("lookup",))
    obs, _ = env.reset(seed=0)
    assert "search(" not in obs and "calculator(" not in obs
    obs, *_ , info = env.step(format_tool_call("search", {"query": "x"}))
    assert "unknown tool" in obs


def test_hard_has_lookalike_names():
    env = make(difficulty="hard").unwrapped
    env.reset(seed=0)
    names = [e.name for e in env.world.entities]
    cities = [e.name for e in env.world.entities if e.kind == "city"]
    assert any(n != c and n.startswith(c + " ") for c in cities for n in names)


def test_compact_prompt_is_short_and_same_task():
    full, _ = make().reset(seed=4)
    short, _ = make(compact=True).reset(seed=4)
    assert len(short) < len(full) / 2
    assert short.split("\n")[0] == full.split("\n")[0]
    assert "lookup(entity: string, attribute: string)" in short and "<tool_call>" in short


def test_python_tool_variant_end_to_end():
    env = make(difficulty="medium", tools=("search", "lookup", "calculator", "python"))
    obs, _ = env.reset(seed=0)
    assert "python(code: string)" in obs
    code_tasks = 0
    for seed in range(6):
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            a = env.unwrapped.expert_action()
            obs, r, te, tr, info = env.step(a)
            if '"python"' in a:
                code_tasks += 1
                assert info["action_valid"] and obs.strip().isdigit()
            done = te or tr
        assert info["success"]
    assert code_tasks >= 1
    env.reset(seed=0)
    obs, r, te, tr, info = env.step(format_tool_call("python", {"code": "open('/etc/shadow').read()"}))
    assert te is False and info["error"] and "Error" in obs
