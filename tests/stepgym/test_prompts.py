"""stepgym.prompts: the one place an episode becomes a chat and prompt token ids."""

from __future__ import annotations

import gymnasium as gym
import pytest

import stepgym  # noqa: F401 - registers the envs
from stepgym.prompts import ChatPromptBuilder, episode_chat, history_turns_kept, transcript_chat, windowed_chat


def test_agents_and_rollout_use_the_same_objects():
    from stepgym.agents import base

    assert base.windowed_chat is windowed_chat and base.history_turns_kept is history_turns_kept
    rollout = pytest.importorskip("steppo.rollout")
    assert rollout.ChatPromptBuilder is ChatPromptBuilder and "ChatPromptBuilder" in rollout.__all__


@pytest.mark.parametrize("n", range(7))
def test_episode_chat_is_the_window_of_history_turns_kept(n):
    obs = [f"o{i}" for i in range(n + 1)]
    acts = [f"a{i}" for i in range(n)]
    assert episode_chat(obs, acts, 3, 3, "sys") == windowed_chat(obs, acts, history_turns_kept(n, 3, 3), "sys")


def test_windowed_chat_without_kept_turns_shows_the_latest_observation():
    chat = windowed_chat(["task", "o1", "o2"], ["a1", "a2"], 0, "sys")
    assert [m["role"] for m in chat] == ["system", "user"]
    assert chat[1]["content"] == "task\n\n[2 step(s) so far]\nLast observation: o2"


def test_context_wrappers_render_transcript_chat():
    from stepgym.wrappers import ChatMessages

    env = ChatMessages(gym.make("stepgym/ToolUse-v0"), system="Be brief.", max_steps=1)
    task, _ = env.reset(seed=0)
    env.step("hi")
    *_, info = env.step("hello")
    steps = env.transcript[1]
    note = env.template.omitted.format(n=1)
    assert info["messages"] == transcript_chat(task, steps[1:], "Be brief.", note)


def test_chat_prompt_builder_continues_from_the_sampled_ids():
    pytest.importorskip("transformers")
    from stepgym.models import load_tokenizer

    tok = load_tokenizer("tiny")
    pb = ChatPromptBuilder(tok, max_history_turns=4)
    ids0, text0 = pb.build(["Task: 2+2?"], [])
    resp = tok("4", add_special_tokens=False)["input_ids"]
    ids1, text1 = pb.build(["Task: 2+2?", "correct"], ["4"], previous=(ids0, text0, resp))
    assert ids1[: len(ids0) + len(resp)] == ids0 + resp and text1.startswith(text0 + "4")
