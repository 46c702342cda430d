"""Every `stepgym ...` line of the README: the cheap ones run as written, the rest parse and validate.

Training, serving and the demo take minutes, so for those the check is that the command line
is accepted exactly as written (every option exists, every value validates, the env builds with
its kwargs); the cheap commands run end to end in a scratch folder.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _commands() -> list[str]:
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.DOTALL):
        for line in block.splitlines():
            for part in line.split("&&"):
                part = part.split("#")[0].strip()
                if part.startswith("stepgym "):
                    lines.append(part)
    return lines


COMMANDS = _commands()
# cheap enough to run as written (mypkg lines need the README's own module: tests/test_readme.py runs them)
RUN = [c for c in COMMANDS if c.split()[1] in ("list", "play", "eval", "check") and "mypkg" not in c
       and "openai:" not in c]


def test_the_readme_has_the_commands_this_file_checks():
    verbs = {c.split()[1] for c in COMMANDS}
    assert {"train", "sft", "serve", "eval", "list", "play", "check"} <= verbs
    assert len(RUN) >= 5


@pytest.mark.parametrize("line", [c for c in COMMANDS if c not in RUN], ids=lambda c: c[:60])
def test_heavy_commands_parse_and_validate_as_written(line):
    from stepgym.cli import build_parser

    args = build_parser().parse_args(shlex.split(line)[1:])
    verb = line.split()[1]
    if verb in ("train", "sft"):
        from stepgym.commands._common import with_env_kwarg_items
        from stepgym.registration import check_trainable
        from steppo.config import PRESETS, config_from_args

        preset = dict(PRESETS[args.preset]) if getattr(args, "preset", None) else {}
        cfg = with_env_kwarg_items(config_from_args(args, verb, preset), args._env_kwarg_items)
        check_trainable(cfg.env, cfg.env_kwargs)
    if verb == "eval":
        from stepgym.commands._common import parse_env_kwargs
        from stepgym.registration import check_trainable

        for env_id in (e for spec in args.envs for e in spec.split(",")):
            check_trainable(env_id, parse_env_kwargs(args.env_kwargs))


@pytest.mark.parametrize("line", RUN, ids=lambda c: c[:60])
def test_cheap_commands_run_as_written(line, tmp_path):
    env = dict(os.environ, COLUMNS="200", PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-m", "stepgym", *shlex.split(line)[1:]]
    res = subprocess.run(argv, input="/quit\n", capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert res.returncode in (0, 130), f"{line}\n{res.stdout[-1500:]}\n{res.stderr[-1500:]}"
    assert "Traceback" not in res.stderr
