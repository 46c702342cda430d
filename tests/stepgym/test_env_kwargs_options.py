"""One way to pass env kwargs in every command: -k KEY=VALUE and --env-kwargs JSON."""

from __future__ import annotations

import pytest

from stepgym.cli import build_parser
from stepgym.commands._common import parse_env_kwargs, with_env_kwarg_items
from stepgym.errors import InvalidArgument


def test_items_and_json_objects_combine_later_wins():
    got = parse_env_kwargs(['{"difficulty": "hard", "max_steps": 3}', "max_steps=5", "tools=[\"lookup\"]"])
    assert got == {"difficulty": "hard", "max_steps": 5, "tools": ["lookup"]}
    with pytest.raises(InvalidArgument, match="JSON object"):
        parse_env_kwargs(["{not json"])


@pytest.mark.parametrize("command", ["eval", "play", "check", "bench"])
def test_env_commands_take_both_spellings(command):
    parser = build_parser()
    base = {"eval": ["eval", "--env", "stepgym/ToolUse-v0"], "play": ["play", "stepgym/ToolUse-v0"],
            "check": ["check", "stepgym/ToolUse-v0"], "bench": ["bench", "--env", "stepgym/ToolUse-v0"]}[command]
    args = parser.parse_args(base + ["--env-kwargs", '{"difficulty": "medium"}', "-k", "max_steps=4"])
    assert parse_env_kwargs(args.env_kwargs) == {"difficulty": "medium", "max_steps": 4}


@pytest.mark.parametrize("command", ["train", "sft"])
def test_train_and_sft_take_k_items_over_the_json_option(command):
    from steppo.config import config_from_args

    parser = build_parser()
    args = parser.parse_args([command, "--model", "tiny", "--env-kwargs", '{"difficulty": "hard", "max_steps": 3}',
                              "-k", "max_steps=5"])
    cfg = with_env_kwarg_items(config_from_args(args, command), args._env_kwarg_items)
    assert cfg.env_kwargs == {"difficulty": "hard", "max_steps": 5}
