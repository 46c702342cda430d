"""RecordTrajectories: one JSON line per step, whole episodes, crash-safe; `stepgym replay`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym

from stepgym.cli import main as cli_main
from stepgym.wrappers import RecordTrajectories, StepPenalty, read_recording, read_trajectories
from tests.stepgym.wrappers.conftest import CountEnv

ROOT = Path(__file__).resolve().parents[3]


def play(env, seed, actions=None):
    env.reset(seed=seed)
    done, t = False, 0
    while not done:
        a = actions[t] if actions and t < len(actions) else env.unwrapped.expert_action()
        _, _, term, trunc, _ = env.step(a)
        done = term or trunc
        t += 1


def test_lines_fields_and_episodes(tmp_path):
    path = tmp_path / "sub" / "rec.jsonl"
    env = RecordTrajectories(StepPenalty(gym.make("stepgym/ToolUse-v0"), 0.01), path)
    play(env, 0, ["junk"])
    play(env, 1)
    env.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    recs = [json.loads(x) for x in lines]
    eps = read_trajectories(path)
    assert [len(e["steps"]) for e in eps] == [sum(r["episode"] == i for r in recs) for i in (0, 1)]
    first = recs[0]
    assert {"run", "episode", "step", "prompt", "action", "observation", "reward", "terminated", "truncated",
            "info", "env_id", "seed"} <= set(first)
    assert first["action"] == "junk" and first["info"]["action_valid"] is False
    assert first["prompt"].startswith("Task:") and first["env_id"] == "stepgym/ToolUse-v0"
    assert recs[1]["prompt"] == first["observation"]  # s_{t+1} is the observation of step t
    assert sum(first["info"]["reward_components"].values()) == first["reward"]
    assert [r["step"] for r in recs if r["episode"] == 1] == list(range(len(eps[1]["steps"])))
    assert eps[1]["steps"][-1]["terminated"] is True


def test_episode_is_written_only_when_it_ends(tmp_path):
    path = tmp_path / "rec.jsonl"
    env = RecordTrajectories(CountEnv(), path)
    env.reset(seed=0)
    env.step("junk")
    assert path.read_bytes() == b""
    env.reset(seed=1)  # an unfinished episode is flushed with what it had
    assert len(path.read_bytes().splitlines()) == 1
    env.close()


def test_any_unicode_round_trips(tmp_path):
    path = tmp_path / "rec.jsonl"
    env = RecordTrajectories(CountEnv(), path, info_keys="all")
    env.reset(seed=0)
    weird = ["lone \udc80 surrogate", "\ud83d half emoji", "中文 😀 \x00 nul", "quote \" back \\ slash \u2028"]
    for a in weird:
        env.step(a)
    env.close()
    raw = path.read_bytes()
    raw.decode("utf-8")  # the file is valid UTF-8
    actions = [json.loads(line)["action"] for line in raw.splitlines()]
    assert actions == weird


def test_kill_9_mid_episode_leaves_only_whole_lines(tmp_path):
    """A process killed while an episode runs (the model generating) leaves whole lines only."""
    path = tmp_path / "rec.jsonl"
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from stepgym.wrappers import RecordTrajectories
        from tests.stepgym.wrappers.conftest import CountEnv
        env = RecordTrajectories(CountEnv(max_steps=5), {str(path)!r})
        for ep in range(4):
            env.reset(seed=ep)
            done = False
            while not done:
                a = "x \\udc80 " * 2000 if ep % 2 else env.unwrapped.expert_action()
                _, _, term, trunc, _ = env.step(a)
                done = term or trunc
        env.reset(seed=99)
        env.step("a step of the episode that will never end")
        print("ready", flush=True)
        time.sleep(60)  # "generating" the next step when the kill comes
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    steps_by_episode: dict = {}
    for line in raw.splitlines():
        rec = json.loads(line)  # every line parses
        steps_by_episode.setdefault(rec["episode"], []).append(rec["step"])
    assert sorted(steps_by_episode) == [0, 1, 2, 3]  # the unfinished episode is not there
    for steps in steps_by_episode.values():
        assert steps == list(range(len(steps)))  # whole episodes
    episodes, skipped = read_recording(path)
    assert skipped == 0 and all(ep["steps"][-1]["terminated"] or ep["steps"][-1]["truncated"] for ep in episodes)


def test_partial_tail_is_repaired_on_open_and_skipped_on_read(tmp_path):
    path = tmp_path / "rec.jsonl"
    env = RecordTrajectories(CountEnv(), path)
    play(env, 0)
    env.close()
    with open(path, "ab") as f:
        f.write(b'{"run": "x", "episode": 9, "ste')  # a write cut short
    assert read_recording(path)[1] == 1
    env = RecordTrajectories(CountEnv(), path)
    play(env, 1)
    env.close()
    episodes, skipped = read_recording(path)
    assert skipped == 0 and len(episodes) == 2


def test_a_line_torn_by_another_writer_does_not_swallow_the_next_episode(tmp_path):
    path = tmp_path / "rec.jsonl"
    env = RecordTrajectories(CountEnv(), path)  # opened before the other writer's write is cut short
    with open(path, "ab") as f:
        f.write(b'{"run": "killed", "episode": 0, "st')  # no newline: its writer died mid-write
    play(env, 3)
    env.close()
    data = path.read_bytes()
    assert data.endswith(b"\n") and data.count(b'"run": "killed"') == 1
    episodes, skipped = read_recording(path)
    assert skipped == 1  # the torn line alone
    assert len(episodes) == 1 and episodes[0]["steps"][-1]["terminated"]
    assert [st["step"] for st in episodes[0]["steps"]] == list(range(len(episodes[0]["steps"])))


def test_replay_command(tmp_path, capsys):
    path = tmp_path / "rec.jsonl"
    env = RecordTrajectories(StepPenalty(CountEnv(), 0.01), path)
    play(env, 0, ["junk \udc80"])
    play(env, 1)
    env.close()
    assert cli_main(["replay", str(path), "--episode", "1", "--prompts"]) == 0
    out = capsys.readouterr().out
    assert "2 episode(s)" in out and "episode 1" in out and "step_penalty" in out and "total = 1" in out
    assert cli_main(["replay", str(path), "--summary"]) == 0
    out = capsys.readouterr().out
    assert "step 0" not in out
    assert cli_main(["replay", str(path), "--limit", "1"]) == 0
    assert "\\udc80" in capsys.readouterr().out
    assert cli_main(["replay", str(tmp_path / "missing.jsonl")]) == 2
    assert cli_main(["replay", str(path), "--episode", "7"]) == 2
