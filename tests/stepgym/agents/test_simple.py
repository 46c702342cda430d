"""Random, expert and human agents on real envs."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

import stepgym
from stepgym.actions import ParseError, parse_tool_call
from stepgym.agents import ExpertAgent, HumanAgent, RandomAgent, UserQuit, make_agent, parse_tools
from stepgym.errors import InvalidArgument
from tests.conftest import builtin_env_ids


def _tooluse():
    env = stepgym.make("stepgym/ToolUse-v0", difficulty="medium")
    obs, info = env.reset(seed=3)
    return env, obs, info


def test_random_agent_writes_tool_calls_with_the_envs_tool_names():
    env, obs, info = _tooluse()
    names = {t.name for t in parse_tools(obs)}
    agent = RandomAgent(seed=1, p_malformed=0.0)
    calls = [parse_tool_call(agent.act(obs, info)) for _ in range(40)]
    assert all(not isinstance(c, ParseError) for c in calls)
    used = {c.name for c in calls}
    assert used <= names and len(used) >= 3  # varied, and only tools the env offers
    # later observations (tool results) do not list tools; the agent remembers them per slot
    obs2, *_ = env.step(agent.act(obs, info))
    assert parse_tool_call(agent.act(obs2, {})).name in names


def test_random_agent_is_reproducible_and_sometimes_malformed():
    _, obs, info = _tooluse()
    a = [RandomAgent(seed=7).act(obs, info) for _ in range(2)]
    assert a[0] == a[1]
    env, obs, info = _tooluse()
    agent = RandomAgent(seed=0, p_malformed=1.0)
    for _ in range(10):  # every malformed call is rejected by the env, none crashes it
        _, _, terminated, truncated, step_info = env.step(agent.act(obs, info))
        assert step_info["action_valid"] is False
        if terminated or truncated:
            obs, info = env.reset(seed=4)


def test_random_agent_picks_admissible_commands_and_falls_back_to_the_action_space():
    agent = RandomAgent(seed=0)
    cmds = ["go north", "open fridge", "look"]
    assert {agent.act("A kitchen.", {"admissible_commands": cmds}) for _ in range(20)} <= set(cmds)
    env, _, _ = _tooluse()
    fallback = RandomAgent(env=env, seed=0).act("", {})
    assert isinstance(fallback, str) and env.action_space.contains(fallback)


def test_random_agent_rejects_bad_probability():
    with pytest.raises(InvalidArgument, match="p_malformed"):
        RandomAgent(p_malformed=2.0)


@pytest.mark.parametrize("env_id", ["stepgym/ToolUse-v0", "stepgym/MultiHopQA-v0"])
def test_expert_agent_solves_episodes(env_id):
    env = stepgym.make(env_id)
    agent = make_agent("expert", env=env)
    for seed in range(5):
        obs, info = env.reset(seed=seed)
        agent.reset()
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
            done = terminated or truncated
        assert info["success"] is True and terminated


def test_expert_agent_needs_the_env():
    with pytest.raises(InvalidArgument, match="make_agent\\('expert', env=env\\)"):
        ExpertAgent().act("obs", {})


def _human(text: str, env=None):
    out = io.StringIO()
    return HumanAgent(env, input=io.StringIO(text), console=Console(file=out, width=100)), out


def test_human_agent_reads_scripted_actions_and_shows_the_observation():
    agent, out = _human("first action\nsecond\n")
    assert agent.act("You see a door.", {"error": "bad format"}) == "first action"
    assert agent.act("Next.", {}) == "second"
    shown = out.getvalue()
    assert "You see a door." in shown and "bad format" in shown and "action>" in shown


def test_human_agent_continues_lines_ending_in_backslash():
    agent, _ = _human("line one\\\nline two\n")
    assert agent.act("obs", {}) == "line one\nline two"


def test_human_agent_hint_shows_the_expert_step_then_reads_again():
    env, obs, info = _tooluse()
    agent, out = _human("/hint\nmy move\n", env)
    assert agent.act(obs, info) == "my move"
    assert env.unwrapped.expert_action() in out.getvalue().replace("\n", "")


@pytest.mark.parametrize("text", ["/quit\n", ""])
def test_human_agent_quit_and_end_of_input(text):
    agent, _ = _human(text)
    with pytest.raises(UserQuit):
        agent.act("obs", {})


def test_human_agent_can_leave_printing_to_the_caller():
    out = io.StringIO()
    agent = HumanAgent(input=io.StringIO("go\n"), console=Console(file=out), show_observation=False, prompt=None)
    assert agent.act("secret observation", {}) == "go"
    assert out.getvalue() == ""


@pytest.mark.parametrize("env_id", builtin_env_ids())
def test_random_agent_writes_valid_actions_on_every_builtin_env(env_id):
    env = stepgym.make(env_id)
    agent = make_agent("random", env=env, seed=0)
    valid = steps = 0
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        agent.reset()
        done = False
        while not done and steps < 60:
            obs, _, terminated, truncated, info = env.step(agent.act(obs, info))
            valid += info["action_valid"]
            steps += 1
            done = terminated or truncated
    assert valid >= 0.4 * steps, f"only {valid}/{steps} random actions were valid on {env_id}"


def test_random_agent_reads_text_formats():
    agent = RandomAgent(seed=0)
    legal = {agent.act("Board.\nLegal cells: 2, 7, 9.", {}) for _ in range(30)}
    assert {a.removeprefix("<answer>").removesuffix("</answer>") for a in legal} <= {"2", "7", "9"}
    agent.reset()
    moves = {agent.act("Answer with one move: left, down, right or up.", {}) for _ in range(30)}
    assert moves <= {"left", "down", "right", "up"} and len(moves) == 4
    agent.reset()
    obs = "Round 1 of 6. Answer 'propose N N N' with the counts YOU take, or 'accept'."
    acts = {agent.act(obs, {}) for _ in range(30)}
    assert "accept" in acts and any(re.fullmatch(r"propose \d \d \d", a) for a in acts)
    agent.reset()
    expr = agent.act(
        "Numbers: 86, 64, 52. Target: 100. Answer with the expression, e.g. 25 * 4 + 3 or <answer>25 * 4 + 3</answer>.",
        {},
    )
    assert set(re.findall(r"\d+", expr)) <= {"86", "64", "52"} and re.search(r"[-+*/]", expr)
