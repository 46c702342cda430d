from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stepgym.actions import ParseError, ToolCall, format_tool_call, parse_tool_call


def test_hermes_with_thought():
    c = parse_tool_call('Let me look. <tool_call>{"name": "lookup", "arguments": {"entity": "A", "attribute": "age"}}</tool_call>')
    assert c == ToolCall("lookup", {"entity": "A", "attribute": "age"}, "hermes")


def test_bare_json_and_fenced_and_parameters_alias():
    assert parse_tool_call('{"name": "search", "arguments": {"query": "x"}}').style == "json"
    c = parse_tool_call('```json\n{"name": "search", "parameters": {"query": "x"}}\n```')
    assert c.name == "search" and c.arguments == {"query": "x"}


def test_openai_style_string_arguments():
    c = parse_tool_call('<tool_call>{"name": "search", "arguments": "{\\"query\\": \\"x\\"}"}</tool_call>')
    assert c.arguments == {"query": "x"}


def test_react_last_action_line():
    c = parse_tool_call("Thought: first search\nAction: search[old]\nThought: no\nAction: lookup[Velora, population]")
    assert c.name == "lookup" and c.raw_input == "Velora, population" and c.style == "react"


def test_errors_explain():
    assert "not closed" in parse_tool_call("<tool_call>{}").message
    assert "exactly one" in parse_tool_call("<tool_call>{}</tool_call><tool_call>{}</tool_call>").message
    assert "not valid JSON" in parse_tool_call("<tool_call>{nope}</tool_call>").message
    assert '"name"' in parse_tool_call('<tool_call>{"arguments": {}}</tool_call>').message
    assert "empty" in parse_tool_call("   ").message
    assert "nested too deeply" in parse_tool_call("<tool_call>" + "[" * 5000 + "</tool_call>").message


def test_format_round_trip():
    text = format_tool_call("answer", {"text": "Zürich 😀"})
    assert parse_tool_call(text) == ToolCall("answer", {"text": "Zürich 😀"}, "hermes")


@given(st.text(max_size=400))
def test_never_raises(s):
    assert isinstance(parse_tool_call(s), (ToolCall, ParseError))
