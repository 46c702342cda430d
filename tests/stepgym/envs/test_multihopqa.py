"""MultiHopQA-v0: generated questions, BM25 search, EM/F1, and HotpotQA-format datasets."""

from __future__ import annotations

import json
import time

import gymnasium as gym
import pytest

import stepgym  # noqa: F401  (registers the envs)
from stepgym.actions import format_tool_call
from stepgym.envs.multihopqa import f1_score, normalize_answer
from stepgym.errors import InvalidArgument, InvalidConfig


def _run_expert(env, seed):
    obs, info = env.reset(seed=seed)
    steps = 0
    while True:
        obs, reward, term, trunc, info = env.step(env.unwrapped.expert_action())
        steps += 1
        if term or trunc:
            return reward, info, steps


@pytest.mark.parametrize("difficulty", ["easy", "medium", "hard"])
def test_expert_always_answers_correctly(difficulty):
    env = gym.make("stepgym/MultiHopQA-v0", difficulty=difficulty)
    for seed in range(40):
        reward, info, steps = _run_expert(env, seed)
        assert reward == 1.0 and info["success"] is True and info["em"] == 1.0 and info["f1"] == 1.0
        assert info["support_recall"] == 1.0  # it read every supporting document
        assert steps <= env.unwrapped.max_steps


@pytest.mark.parametrize("hops,qtypes", [(2, ("bridge",)), (3, ("bridge",)), (4, ("bridge",)),
                                         (2, ("comparison",)), (4, ("comparison",))])
def test_hop_and_type_knobs(hops, qtypes):
    env = gym.make("stepgym/MultiHopQA-v0", hops=hops, question_types=qtypes)
    for seed in range(15):
        _, info = env.reset(seed=seed)
        assert info["hops"] == hops and info["question_type"] == qtypes[0]
        # The expert reads exactly the supporting documents: one search per hop at most.
        _, end, steps = _run_expert(env, seed)
        assert end["success"] and steps <= hops + 1


def test_search_ranks_the_named_document_first_and_answers_need_the_documents():
    env = gym.make("stepgym/MultiHopQA-v0", difficulty="hard", question_types=("bridge",)).unwrapped
    for seed in range(10):
        env.reset(seed=seed)
        q = env._question
        # A bridge answer is never written in the question: it has to be found.
        assert normalize_answer(q.answer) not in normalize_answer(q.text)
        obs, r, term, trunc, info = env.step(format_tool_call("search", {"query": q.support[0]}))
        assert obs.startswith(f"[1] {q.support[0]}:") and info["action_valid"] and r == 0.0 and not term


def test_wrong_answer_gets_zero_reward_and_f1_in_info():
    env = gym.make("stepgym/MultiHopQA-v0", hops=2, question_types=("bridge",))
    env.reset(seed=1)
    gold = env.unwrapped._question.answer
    obs, r, term, trunc, info = env.step(format_tool_call("answer", {"text": "Nobody " + gold}))
    assert term and r == 0.0 and info["success"] is False and info["em"] == 0.0
    assert 0.0 < info["f1"] < 1.0 and info["answer"] == gold
    assert info["support_recall"] == 0.0  # answered without searching


def test_formats_react_and_bare_json_and_errors():
    env = gym.make("stepgym/MultiHopQA-v0")
    env.reset(seed=2)
    title = env.unwrapped._question.support[0]
    for action in (f"I will look. Action: search[{title}]", json.dumps({"name": "search", "arguments": {"query": title}})):
        obs, r, term, trunc, info = env.step(action)
        assert info["action_valid"] and title in obs
    obs, r, term, trunc, info = env.step(format_tool_call("browse", {"url": "x"}))
    assert not info["action_valid"] and "search" in info["error"] and not term
    obs, r, term, trunc, info = env.step(format_tool_call("search", {"query": "the of and"}))
    assert not info["action_valid"] and "No results" in obs
    # HotpotQA's ReAct prompt: capitalised tools, Finish[...] answers.
    gold = env.unwrapped._question.answer
    obs, r, term, trunc, info = env.step(f"Thought: I know it.\nAction: Finish[{gold}]")
    assert term and r == 1.0 and info["success"] is True


def test_metrics():
    assert normalize_answer("The Mirel  Institute.") == "mirel institute"
    assert f1_score("yes", "no") == 0.0
    assert f1_score("Mirel Institute", "the Mirel Institute") == 1.0


def test_invalid_knobs_raise():
    with pytest.raises(InvalidConfig, match="difficulty"):
        gym.make("stepgym/MultiHopQA-v0", difficulty="extreme")
    with pytest.raises(InvalidConfig, match="hops"):
        gym.make("stepgym/MultiHopQA-v0", hops=7)
    with pytest.raises(InvalidConfig, match="hops"):
        gym.make("stepgym/MultiHopQA-v0", hops=3, question_types=("comparison",))


def test_reset_is_fast():
    env = gym.make("stepgym/MultiHopQA-v0", difficulty="hard")
    env.reset(seed=0)
    t0 = time.perf_counter()
    for seed in range(50):
        env.reset(seed=seed)
    per_reset = (time.perf_counter() - t0) / 50
    assert per_reset < 0.05, f"reset takes {per_reset * 1e3:.1f} ms"


HOTPOT = [
    {
        "_id": "a1",
        "question": "Which city is the home of the band that recorded Blue Lanterns?",
        "answer": "Porto Velho",
        "type": "bridge",
        "supporting_facts": [["Blue Lanterns", 0], ["The Quiet Ferns", 1]],
        "context": [
            ["Blue Lanterns", ["Blue Lanterns is a 1998 album.", "It was recorded by The Quiet Ferns."]],
            ["The Quiet Ferns", ["The Quiet Ferns are a rock band.", "The band is based in Porto Velho."]],
            ["Red Harbor", ["Red Harbor is a 2001 album by Salt Road."]],
            ["Salt Road", ["Salt Road is a duo from Lisbon."]],
        ],
    },
    {
        "_id": "b2",
        "question": "Were Salt Road and The Quiet Ferns formed in the same year?",
        "answer": "no",
        "type": "comparison",
        "supporting_facts": {"title": ["Salt Road", "The Quiet Ferns"], "sent_id": [0, 0]},
        "context": {
            "title": ["Salt Road", "The Quiet Ferns", "Blue Lanterns"],
            "sentences": [["Salt Road formed in 1990."], ["The Quiet Ferns formed in 1994."], ["An album."]],
        },
    },
]


def test_hotpotqa_dataset(tmp_path):
    path = tmp_path / "hotpot.json"
    path.write_text(json.dumps(HOTPOT))
    env = gym.make("stepgym/MultiHopQA-v0", dataset=str(path))
    obs, info = env.reset(seed=0, options={"index": 0})
    assert HOTPOT[0]["question"] in obs and info["num_documents"] == 4 and info["hops"] == 2
    obs, *_ = env.step(format_tool_call("search", {"query": "band based in Porto Velho"}))
    assert obs.startswith("[1] The Quiet Ferns:")
    seen = set()
    for seed in range(12):
        reward, info, steps = _run_expert(env, seed)
        assert reward == 1.0 and info["success"]
        seen.add(info["answer"])
    assert seen == {"Porto Velho", "no"}  # both records get drawn
    # JSON lines work too.
    jl = tmp_path / "hotpot.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in HOTPOT))
    env = gym.make("stepgym/MultiHopQA-v0", dataset=str(jl))
    _, info = env.reset(seed=0, options={"index": 1})
    assert info["question_type"] == "comparison"


def test_bad_dataset_errors(tmp_path):
    with pytest.raises(InvalidArgument, match="does not exist"):
        gym.make("stepgym/MultiHopQA-v0", dataset=str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"question": "q?", "answer": "a"}]))
    with pytest.raises(InvalidArgument, match="context"):
        gym.make("stepgym/MultiHopQA-v0", dataset=str(bad))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(HOTPOT))
    env = gym.make("stepgym/MultiHopQA-v0", dataset=str(good))
    with pytest.raises(InvalidArgument, match="index"):
        env.reset(seed=0, options={"index": 5})
