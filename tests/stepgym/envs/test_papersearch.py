"""PaperSearch-v0: corpus and citation graph, dense rewards, penalties, recall/F1."""

from __future__ import annotations

import gymnasium as gym
import pytest

import stepgym  # noqa: F401  (registers the envs)
from stepgym.actions import format_tool_call
from stepgym.envs.papersearch import PaperSearchEnv
from stepgym.errors import InvalidConfig


@pytest.mark.parametrize("difficulty", ["easy", "medium", "hard"])
def test_expert_finds_everything_and_submits_exactly_the_relevant_set(difficulty):
    env = gym.make("stepgym/PaperSearch-v0", difficulty=difficulty)
    for seed in range(25):
        env.reset(seed=seed)
        total = 0.0
        while True:
            obs, r, term, trunc, info = env.step(env.unwrapped.expert_action())
            total += r
            if term or trunc:
                break
        assert term and info["success"] is True
        assert info["recall"] == 1.0 and info["f1"] == 1.0 and info["precision"] == 1.0
        assert total == pytest.approx(1.0)  # the most reward there is: no repeats


def test_hidden_papers_need_citations():
    env = PaperSearchEnv("medium")
    for seed in range(10):
        env.reset(seed=seed)
        hidden = {p for p in env.relevant if env.papers[p].hidden}
        assert len(hidden) == 2
        hits = set(env._search(env.query))
        assert not hits & hidden, "a hidden paper matched the query's words"
        visible = env.relevant - hidden
        for h in hidden:
            assert set(env._neighbours(h)) & visible
        for pid, p in env.papers.items():  # citations go back in time
            assert all(env.papers[r].year <= p.year for r in p.refs)


def test_dense_reward_and_repeat_penalty():
    env = gym.make("stepgym/PaperSearch-v0", difficulty="easy", repeat_penalty=0.2)
    env.reset(seed=1)
    u = env.unwrapped
    q = format_tool_call("search", {"query": u.query})
    _, r1, _, _, info = env.step(q)
    assert r1 == pytest.approx(info["new_relevant"] / len(u.relevant)) and r1 > 0
    _, r2, _, _, info = env.step(q.replace(u.query, "  " + u.query.upper()))  # same query, normalised
    assert r2 == pytest.approx(-0.2) and info["repeated"]
    pid = sorted(u._shown)[0]
    env.step(format_tool_call("expand", {"paper_id": pid}))
    _, r4, _, _, info = env.step(f"Action: expand[{pid}]")
    assert r4 == pytest.approx(-0.2) and info["repeated"]
    _, r5, _, _, info = env.step(format_tool_call("expand", {"paper_id": "P0"}))
    assert not info["action_valid"] and "P1234" in info["error"]


def test_submit_scores_the_list_or_everything_shown():
    env = gym.make("stepgym/PaperSearch-v0", difficulty="hard")
    env.reset(seed=2)
    u = env.unwrapped
    env.step(format_tool_call("search", {"query": u.query}))
    _, r, term, _, info = env.step(format_tool_call("submit", {}))
    shown = u._shown
    assert term and r == 0.0
    assert info["precision"] == pytest.approx(len(shown & u.relevant) / len(shown))
    assert info["recall"] < 1.0 and info["success"] is False  # hidden papers were never shown
    env.reset(seed=2)
    env.step(format_tool_call("search", {"query": u.query}))
    found = sorted(u._shown & u.relevant)
    never_shown = sorted(u.relevant - u._shown)[0]
    ids = f"{found[0]}, {never_shown}, P99999, nonsense"
    _, _, term, _, info = env.step(format_tool_call("submit", {"paper_ids": ids}))
    precision, recall = 1 / 2, 1 / len(u.relevant)  # a never-shown id counts as a wrong guess
    assert info["precision"] == pytest.approx(precision)
    assert info["f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert len(info["unknown_ids"]) == 2


def test_year_condition_in_hard_queries():
    env = PaperSearchEnv("hard")
    env.reset(seed=4)
    cutoff = int(env.query.rsplit("in ", 1)[1].split()[0])
    rel = [env.papers[p] for p in env.relevant]
    old = [p for p in env.papers.values()
           if (p.area, p.task) == (rel[0].area, rel[0].task) and p.pid not in env.relevant]
    assert all(p.year >= cutoff for p in rel) and old and all(p.year < cutoff for p in old)


def test_truncation_reports_recall():
    env = gym.make("stepgym/PaperSearch-v0", difficulty="easy", max_steps=1)
    env.reset(seed=0)
    _, _, term, trunc, info = env.step(format_tool_call("search", {"query": env.unwrapped.query}))
    assert trunc and not term and info["success"] is False and 0.0 < info["recall"] < 1.0


def test_invalid_knobs():
    with pytest.raises(InvalidConfig, match="num_hidden"):
        PaperSearchEnv(num_relevant=3, num_hidden=3)
    with pytest.raises(InvalidConfig, match="num_papers"):
        PaperSearchEnv(num_papers=5)
    with pytest.raises(InvalidConfig, match="difficulty"):
        PaperSearchEnv("extreme")
