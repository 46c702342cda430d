"""evaluate(): seeds per episode, statistics, recording, any agent."""

from __future__ import annotations

import json
import math

import pytest

from stepgym.agents import CallableAgent, make_agent
from stepgym.agents.evaluate import evaluate, slot_info, wilson_interval
from stepgym.errors import InvalidArgument, UnknownEnvError


def test_wilson_interval_matches_the_closed_form_and_stays_in_bounds():
    lo, hi = wilson_interval(8, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)  # textbook values for 8/10
    assert wilson_interval(0, 10)[0] == 0.0 and math.isclose(wilson_interval(0, 10)[1], 0.2775, abs_tol=1e-4)
    assert wilson_interval(10, 10)[1] == 1.0 and math.isclose(wilson_interval(10, 10)[0], 0.7225, abs_tol=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    # wider with fewer episodes
    assert (
        wilson_interval(5, 10)[1] - wilson_interval(5, 10)[0]
        > wilson_interval(50, 100)[1] - wilson_interval(50, 100)[0]
    )


def test_episode_k_uses_seed_plus_k_whatever_the_parallelism():
    runs = [
        evaluate(
            "stepgym/ToolUse-v0",
            make_agent("expert"),
            episodes=7,
            seed=11,
            num_envs=n,
            env_kwargs={"difficulty": "medium"},
        )
        for n in (1, 3, 8)
    ]
    for r in runs:
        assert [e.seed for e in r.episodes] == list(range(11, 18))
        assert r.success_rate == 1.0 and r.invalid_action_rate == 0.0
    # the same tasks: the expert takes the same number of steps per episode in every run
    assert (
        [e.steps for e in runs[0].episodes]
        == [e.steps for e in runs[1].episodes]
        == [e.steps for e in runs[2].episodes]
    )


def test_statistics_of_a_failing_agent_and_the_recording(tmp_path):
    bad = CallableAgent(lambda obs: "not a tool call", name="babbler")
    r = evaluate("stepgym/ToolUse-v0", bad, episodes=3, num_envs=2, record_dir=tmp_path)
    assert r.success_rate == 0.0 and r.invalid_action_rate == 1.0
    assert r.mean_steps == 10.0  # ToolUse-v0 truncates at 10 steps
    assert r.tokens_estimated and r.tokens_per_step == len("not a tool call") / 4
    lines = (tmp_path / "babbler__stepgym_ToolUse-v0.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 30
    assert {row["episode"] for row in rows} == {0, 1, 2}
    assert all(row["info"]["action_valid"] is False for row in rows)
    last = [row for row in rows if row["episode"] == 1][-1]
    assert last["step"] == 9 and last["truncated"] is True
    summary = r.summary()
    assert summary["success_ci95"][1] < 0.8 and summary["episodes"] == 3


def test_slot_info_unbatches_vector_infos():
    import numpy as np

    infos = {
        "success": np.array([True, False]),
        "_success": np.array([True, False]),
        "nested": {"x": np.array([1, 2]), "_x": np.array([True, True])},
        "_nested": np.array([True, True]),
    }
    assert slot_info(infos, 0) == {"success": True, "nested": {"x": 1}}
    assert slot_info(infos, 1) == {"nested": {"x": 2}}


def test_bad_arguments():
    with pytest.raises(InvalidArgument, match="episodes"):
        evaluate("stepgym/ToolUse-v0", make_agent("random"), episodes=0)
    with pytest.raises(UnknownEnvError, match="Did you mean"):
        evaluate("stepgym/ToolUse-v1", make_agent("random"), episodes=1)


def test_eval_cli_with_a_model_agent_counts_real_tokens(run_dir, tmp_path):
    from stepgym.cli import main

    out = tmp_path / "e.json"
    rc = main(
        [
            "eval",
            "--env",
            "stepgym/ToolUse-v0",
            "--agent",
            f"hf:{run_dir / 'policy'}",
            "--agent",
            "expert",
            "--episodes",
            "2",
            "--max-new-tokens",
            "4",
            "--temperature",
            "0",
            "-k",
            "max_steps=2",
            "--threads",
            "1",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    results = {r["agent"]: r for r in json.loads(out.read_text())["results"]}
    model = results[f"hf:{run_dir / 'policy'}"]
    assert model["tokens_estimated"] is False and 1 <= model["tokens_per_step"] <= 4
    assert model["mean_steps"] == 2.0 and results["expert"]["tokens_estimated"] is True


def test_wrappers_shape_what_the_agent_sees():
    from functools import partial

    from stepgym.wrappers import HistoryPrompt

    seen: list[str] = []

    def policy(obs: str) -> str:
        seen.append(obs)
        return "not a tool call"

    evaluate(
        "stepgym/ToolUse-v0",
        CallableAgent(policy),
        episodes=1,
        num_envs=1,
        env_kwargs={"max_steps": 3},
        wrappers=[partial(HistoryPrompt)],
    )
    assert len(seen) == 3
    assert seen[2].count("not a tool call") >= 2  # the prompt carries the earlier actions
    assert "Task:" in seen[2]


def test_random_agent_results_do_not_depend_on_parallelism():
    runs = [
        evaluate("stepgym/ToolUse-v0", make_agent("random", seed=3), episodes=6, seed=0, num_envs=n) for n in (1, 4)
    ]
    assert [(e.steps, e.invalid_steps, e.episode_return) for e in runs[0].episodes] == [
        (e.steps, e.invalid_steps, e.episode_return) for e in runs[1].episodes
    ]
