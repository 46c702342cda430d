"""Action formats: every format parses, and ParseActions makes them act like the canonical one."""

from __future__ import annotations

import gymnasium as gym
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepgym.actions import ParseError, format_tool_call
from stepgym.errors import InvalidArgument
from stepgym.wrappers import ParseActions, format_answer_tag, parse_action, parse_answer_tag, parse_boxed

LOOKUP = {"entity": "Belxo", "attribute": "population"}


@pytest.mark.parametrize(
    "text, kind, style, name, payload",
    [
        (format_tool_call("lookup", LOOKUP), "tool_call", "hermes", "lookup", LOOKUP),
        ('Let me look.\n{"name": "lookup", "arguments": {"entity": "Belxo", "attribute": "population"}}'.split("\n")[1],
         "tool_call", "json", "lookup", LOOKUP),
        ('```json\n{"name": "lookup", "arguments": {"entity": "Belxo"}}\n```', "tool_call", "json", "lookup", {"entity": "Belxo"}),
        ("Thought: I need it.\nAction: lookup[Belxo, population]", "tool_call", "react", "lookup", "Belxo, population"),
        ("I think it is <answer> 42 </answer>", "answer", "answer", "answer", "42"),
        ("<ANSWER>a</ANSWER> then <answer>b</answer>", "answer", "answer", "answer", "b"),
        (r"so the area is $\boxed{\frac{3}{4}}$.", "answer", "boxed", "answer", r"\frac{3}{4}"),
        (r"\boxed{1} no wait \boxed{2}", "answer", "boxed", "answer", "2"),
    ],
)
def test_every_format_parses(text, kind, style, name, payload):
    p = parse_action(text)
    assert not isinstance(p, ParseError), p
    assert (p.kind, p.style, p.name) == (kind, style, name)
    if style == "react":
        assert p.raw_input == payload
    elif kind == "answer":
        assert p.text == payload
    else:
        assert p.arguments == payload


def test_broken_tool_call_keeps_its_specific_error():
    p = parse_action('<tool_call>{"name": "lookup", "arguments": </tool_call>')
    assert isinstance(p, ParseError) and "not valid JSON" in p.message
    assert isinstance(parse_action(""), ParseError) and "empty" in parse_action("").message


def test_formats_can_be_restricted():
    assert isinstance(parse_action("<answer>4</answer>", formats=("hermes",)), ParseError)
    assert parse_action("<answer>4</answer>", formats=("answer",)).text == "4"
    with pytest.raises(InvalidArgument):
        parse_action("x", formats=("yaml",))


def test_boxed_and_answer_edge_cases():
    assert parse_boxed(r"\boxed{a{b}c}") == "a{b}c"
    assert parse_boxed(r"\boxed{unclosed") is None
    assert parse_boxed(r"\boxed{ok} and \boxed{broken") == "ok"
    assert parse_answer_tag("<answer>unclosed") is None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_parsing_never_raises(text):
    out = parse_action(text)
    assert isinstance(out, ParseError) or out.kind in ("tool_call", "answer")


def solve(env, to_format):
    """Play the expert's plan, each action rewritten by ``to_format``; return the trajectory."""
    obs, _ = env.reset(seed=3)
    traj = [obs]
    while True:
        canonical = env.unwrapped.expert_action()
        step = env.step(to_format(canonical))
        traj.append(step[:4] + ({k: step[4].get(k) for k in ("action_valid", "success")},))
        if step[2] or step[3]:
            return traj


def _as_react(canonical):
    p = parse_action(canonical)
    if p.name == "answer":
        return f"Thought: done.\nAction: Finish[{p.arguments['text']}]"
    return f"Thought: next.\nAction: {p.name}[{', '.join(str(v) for v in p.arguments.values())}]"


def _as_json(canonical):
    return canonical.removeprefix("<tool_call>").removesuffix("</tool_call>")


def _as_answer_tag(canonical):
    p = parse_action(canonical)
    return _as_react(canonical) if p.name != "answer" else f"Final: <answer>{p.arguments['text']}</answer>"


def _as_boxed(canonical):
    p = parse_action(canonical)
    return _as_json(canonical) if p.name != "answer" else rf"The answer is \boxed{{{p.arguments['text']}}}"


@pytest.mark.parametrize("to_format", [_as_react, _as_json, _as_answer_tag, _as_boxed])
def test_parse_actions_normalises_every_format_on_tooluse(to_format):
    reference = solve(gym.make("stepgym/ToolUse-v0", difficulty="medium"), lambda a: a)
    env = ParseActions(gym.make("stepgym/ToolUse-v0", difficulty="medium"))
    assert solve(env, to_format) == reference
    assert reference[-1][4]["success"] is True


def test_parse_actions_info_and_passthrough():
    env = ParseActions(gym.make("stepgym/ToolUse-v0"))
    env.reset(seed=0)
    _, _, _, _, info = env.step("Action: lookup[Belxo, population]")
    assert info["action_format"] == "react" and info["action_valid"] is True
    assert info["raw_action"] == "Action: lookup[Belxo, population]"
    obs, _, _, _, info = env.step("no idea")
    assert info["action_format"] is None and info["action_valid"] is False and "Invalid action" in obs


def test_custom_formatter_for_command_envs():
    seen = []

    def fmt(parsed):
        seen.append(parsed.style)
        return format_answer_tag(parsed)

    env = ParseActions(gym.make("wrapperstest/PlainText-v0"), formats=("answer", "boxed"), formatter=fmt)
    env.reset(seed=0)
    env.step(r"\boxed{abc}")
    assert seen == ["boxed"]
    with pytest.raises(InvalidArgument):
        ParseActions(gym.make("stepgym/ToolUse-v0"), formatter="hermes")


def test_action_space_is_widened_for_plain_text_envs():
    inner = gym.make("wrapperstest/PlainText-v0")
    env = ParseActions(inner)
    assert not inner.action_space.contains("<answer>abc</answer>")
    assert env.action_space.contains("<answer>abc</answer>") and env.action_space.contains("😀")
