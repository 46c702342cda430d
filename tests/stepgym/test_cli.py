"""The `stepgym` command, driven as a user would (subprocess with scripted input)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from stepgym.cli import main


def stepgym(*args, input=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "stepgym.cli", *args], input=input, capture_output=True,
                          text=True, timeout=timeout, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "PYTHONPATH": ".", "HOME": "/tmp"})


def test_help_lists_commands():
    out = stepgym("--help")
    assert out.returncode == 0
    for cmd in ("list", "play", "check"):
        assert cmd in out.stdout


def test_list_table_and_json():
    out = stepgym("list")
    assert out.returncode == 0 and "stepgym/ToolUse-v0" in out.stdout and "max steps" in out.stdout
    rows = json.loads(stepgym("list", "--json").stdout)
    assert any(r["id"] == "stepgym/ToolUse-v0" and r["max_steps"] == 10 for r in rows)


def test_check_one_and_unknown(capsys):
    assert main(["check", "stepgym/ToolUse-v0", "--episodes", "1"]) == 0
    assert "pass" in capsys.readouterr().out
    out = stepgym("check", "stepgym/ToolUze-v0")
    assert out.returncode == 2 and "Did you mean" in out.stderr


def test_check_without_ids_explains():
    out = stepgym("check")
    assert out.returncode == 2 and "--all" in out.stderr


def test_play_expert_solves():
    out = stepgym("play", "stepgym/ToolUse-v0", "--agent", "expert", "--seed", "3", "-k", "difficulty=hard")
    assert out.returncode == 0, out.stderr
    assert "episode 1: success" in out.stdout and "<tool_call>" in out.stdout


def test_play_human_scripted_input():
    # a human types an invalid action, then a wrong answer
    script = 'hello\n<tool_call>{"name": "answer", "arguments": {"text": "nope"}}</tool_call>\n'
    out = stepgym("play", "stepgym/ToolUse-v0", "--seed", "0", input=script)
    assert out.returncode == 0, out.stderr
    assert "no tool call found" in out.stdout and "Incorrect" in out.stdout and "episode 1: failure" in out.stdout


def test_play_human_eof_quits_cleanly():
    out = stepgym("play", "stepgym/ToolUse-v0", "--seed", "0", input="")
    assert out.returncode == 0 and "quitting" in out.stdout


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["play", "stepgym/ToolUse-v0", "-k", "difficulty"], "KEY=VALUE"),
        (["play", "stepgym/ToolUse-v0", "-k", "difficulty=extreme", "--agent", "expert"], "difficulty must be one of"),
        (["play", "stepgym/ToolUse-v0", "-k", "colour=1", "--agent", "expert"], "does not accept"),
        (["play", "stepgym/ToolUse-v0", "--episodes", "0"], "--episodes"),
    ],
)
def test_bad_arguments_say_how_to_fix(args, fragment):
    out = stepgym(*args)
    assert out.returncode == 2
    assert fragment in out.stderr
    assert "Traceback" not in out.stderr


def test_bench_times_an_env():
    out = stepgym("bench", "--env", "stepgym/ToolUse-v0", "--episodes", "5", "--repeats", "1", "--no-import", "--markdown")
    assert out.returncode == 0, out.stderr
    rows = [line.split("|") for line in out.stdout.splitlines() if line.startswith("| stepgym/ToolUse-v0")]
    kinds = {r[2].strip(): float(r[3]) for r in rows}
    assert {"reset", "step (expert)", "step (invalid)"} <= set(kinds)
    assert all(v > 0 for v in kinds.values())
    assert "bench/Trivial-v0" in out.stdout


@pytest.mark.parametrize("cmd", ["list", "play", "check", "eval", "train", "sft", "serve", "serve-env", "replay",
                                 "bench"])
def test_every_subcommand_has_help(cmd, capsys):
    from stepgym.cli import COMMANDS, build_parser

    assert cmd in COMMANDS
    parser = build_parser()
    assert cmd in parser._subparsers._group_actions[0].choices
    with pytest.raises(SystemExit) as exc:
        main([cmd, "--help"])
    assert exc.value.code == 0
    assert "usage: stepgym " + cmd in capsys.readouterr().out
