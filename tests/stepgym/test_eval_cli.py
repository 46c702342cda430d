"""`stepgym eval` end to end: two envs, two agents, JSON and recordings, third-party ids."""

from __future__ import annotations

import json
import pathlib

from stepgym.cli import main

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def test_two_envs_two_agents_leaderboard_json_and_record(tmp_path, capsys):
    out = tmp_path / "eval.json"
    rec = tmp_path / "rec"
    rc = main(
        [
            "eval",
            "--env",
            "stepgym/ToolUse-v0,stepgym/MultiHopQA-v0",
            "--agent",
            "expert",
            "--agent",
            "random",
            "--episodes",
            "6",
            "--num-envs",
            "3",
            "--seed",
            "5",
            "--json",
            str(out),
            "--record",
            str(rec),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "leaderboard" in text and "stepgym/MultiHopQA-v0" in text and "95% CI" in text
    payload = json.loads(out.read_text())
    results = {(r["env"], r["agent"]): r for r in payload["results"]}
    assert set(results) == {
        (e, a) for e in ("stepgym/ToolUse-v0", "stepgym/MultiHopQA-v0") for a in ("expert", "random")
    }
    for env in ("stepgym/ToolUse-v0", "stepgym/MultiHopQA-v0"):
        expert, rand = results[(env, "expert")], results[(env, "random")]
        assert expert["success_rate"] == 1.0 and expert["invalid_action_rate"] == 0.0
        assert rand["success_rate"] < expert["success_rate"]
        assert [e["seed"] for e in expert["per_episode"]] == list(range(5, 11))
        lo, hi = expert["success_ci95"]
        assert 0.5 < lo < 1.0 and hi == 1.0
    files = sorted(p.name for p in rec.iterdir())
    assert len(files) == 4 and all(f.endswith(".jsonl") for f in files)
    steps = sum(1 for _ in (rec / "expert__stepgym_ToolUse-v0.jsonl").open())
    assert steps == round(results[("stepgym/ToolUse-v0", "expert")]["mean_steps"] * 6)
    # the recording is in RecordTrajectories' format: `stepgym replay` shows it
    from stepgym.wrappers.recording import read_trajectories

    episodes = read_trajectories(rec / "expert__stepgym_ToolUse-v0.jsonl")
    assert len(episodes) == 6 and all(ep["steps"][-1]["info"]["success"] for ep in episodes)
    first = episodes[0]["steps"][0]
    assert first["env_id"] == "stepgym/ToolUse-v0" and first["prompt"].startswith("Task:") and first["observation"]
    capsys.readouterr()
    assert main(["replay", str(rec / "expert__stepgym_ToolUse-v0.jsonl"), "--summary"]) == 0
    assert "6 episode(s)" in capsys.readouterr().out


def test_third_party_env_by_module_id(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    out = tmp_path / "e.json"
    rc = main(
        [
            "eval",
            "--env",
            "custom_env:mygame/GuessNumber-v0",
            "--agent",
            "expert",
            "--episodes",
            "4",
            "--json",
            str(out),
            "-k",
            "high=16",
        ]
    )
    assert rc == 0
    r = json.loads(out.read_text())["results"][0]
    assert r["env"] == "mygame/GuessNumber-v0" and r["success_rate"] == 1.0
    assert r["mean_steps"] <= 5  # binary search over 1..16


def test_errors_are_one_line_with_exit_code_2(capsys):
    assert main(["eval", "--env", "stepgym/ToolUse-v9", "--agent", "expert", "--episodes", "1"]) == 2
    assert "Did you mean" in capsys.readouterr().err
    assert main(["eval", "--env", "stepgym/ToolUse-v0", "--agent", "expertt", "--episodes", "1"]) == 2
    assert "Did you mean 'expert'" in capsys.readouterr().err
    assert main(["eval", "--env", "stepgym/ToolUse-v0", "--episodes", "0"]) == 2


def test_progress_bar_in_a_terminal_and_never_with_no_progress_or_a_pipe(monkeypatch, capsys):
    args = ["eval", "--env", "stepgym/ToolUse-v0", "--agent", "expert", "--episodes", "4", "--num-envs", "2"]
    assert main(args) == 0  # captured output is not a terminal: no bar
    assert "4/4" not in capsys.readouterr().out
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich treats the output as a terminal
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "expert on stepgym/ToolUse-v0" in out and "4/4" in out and "success 4/4" in out
    assert main([*args, "--no-progress"]) == 0
    assert "success 4/4" not in capsys.readouterr().out
