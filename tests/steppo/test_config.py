"""Config validation walks every field; the CLI is generated from the fields."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from stepgym.errors import InvalidConfig
from steppo.config import (
    ALGOS,
    GRPOConfig,
    PRESETS,
    SFTConfig,
    StepPOConfig,
    add_config_arguments,
    config_class_for,
    config_from_args,
    make_train_config,
)

CLASSES = (StepPOConfig, GRPOConfig, SFTConfig)


def _bad_values(f: dataclasses.Field) -> list:
    meta = f.metadata
    bad: list = []
    if meta.get("choices"):
        bad.append("not-a-choice")
    if meta.get("min") is not None:
        bad.append(meta["min"] - 1)
    if meta.get("max") is not None:
        bad.append(meta["max"] + 1)
    t = f.type if isinstance(f.type, str) else f.type.__name__
    if t.startswith(("int", "float")):
        bad.append("three")
    if t.startswith("bool"):
        bad.append("yes")
    if t.startswith("dict"):
        bad.append("{not json")
    return bad


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_field_is_documented_and_validated(cls):
    cls()  # defaults are valid
    for f in dataclasses.fields(cls):
        assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"
        for bad in _bad_values(f):
            with pytest.raises(InvalidConfig) as exc:
                cls(**{f.name: bad})
            assert exc.value.field == f.name
            msg = str(exc.value)
            assert repr(f.name) in msg and "expected" in msg and repr(bad) in msg


def test_choices_are_listed_in_the_message():
    with pytest.raises(InvalidConfig, match="'shared', 'separate'"):
        StepPOConfig(critic="both")
    with pytest.raises(InvalidConfig, match="'grpo'"):
        GRPOConfig(algo="steppo")


def test_family_by_algo_and_group_divisibility():
    for algo in ALGOS:
        cfg = make_train_config({"algo": algo})
        assert isinstance(cfg, config_class_for(algo))
    assert make_train_config({"algo": "grpo"}).group_size == 8
    with pytest.raises(InvalidConfig, match="episodes_per_iteration"):
        GRPOConfig(episodes_per_iteration=12, group_size=8)
    with pytest.raises(InvalidConfig, match="lam"):
        make_train_config({"algo": "grpo", "lam": 0.9})
    assert GRPOConfig(algo="gspo").clip_range() == (3e-4, 4e-4)
    assert StepPOConfig().clip_range() == (0.2, 0.2)
    # a stride longer than the window it drops from says which bound to respect
    with pytest.raises(InvalidConfig, match="history_stride.*max_history_turns=2"):
        StepPOConfig(max_history_turns=2, history_stride=3)
    assert StepPOConfig(max_history_turns=4, history_stride=4).history_stride == 4


def _parse(argv, classes=(StepPOConfig, GRPOConfig)):
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default=None)
    add_config_arguments(p, classes)
    return p.parse_args(argv)


def test_cli_is_generated_from_the_fields():
    p = argparse.ArgumentParser()
    add_config_arguments(p, (StepPOConfig, GRPOConfig))
    flags = {a.dest for a in p._actions}
    for cls in (StepPOConfig, GRPOConfig):
        for f in dataclasses.fields(cls):
            assert f.name in flags
    cfg = config_from_args(_parse(["--algo", "ppo", "--gamma", "0.9", "--env-kwargs", '{"difficulty": "medium"}',
                                   "--no-tensorboard", "--stop-strings", "</a>", "</b>"]))
    assert isinstance(cfg, StepPOConfig) and cfg.algo == "ppo" and cfg.gamma == 0.9
    assert cfg.env_kwargs == {"difficulty": "medium"} and cfg.tensorboard is False
    assert cfg.stop_strings == ("</a>", "</b>")
    grpo = config_from_args(_parse(["--algo", "rloo"]))
    assert isinstance(grpo, GRPOConfig) and grpo.group_size == 8
    with pytest.raises(InvalidConfig, match="critic"):
        config_from_args(_parse(["--algo", "grpo", "--critic", "separate"]))
    with pytest.raises(SystemExit):
        _parse(["--iterations", "three"])


def test_presets_build_valid_configs_and_explicit_options_win():
    for name, preset in PRESETS.items():
        cfg = config_from_args(_parse([]), "train", preset)
        assert cfg.model == preset["model"], name
    cfg = config_from_args(_parse(["--iterations", "2"]), "train", PRESETS["demo"])
    assert cfg.iterations == 2 and cfg.model == "smollm2-135m"
    sft = config_from_args(_parse(["--episodes", "3"], (SFTConfig,)), "sft")
    assert isinstance(sft, SFTConfig) and sft.episodes == 3


def test_config_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, steppo.config, stepgym.commands.train, stepgym.commands.sft; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_token_guard_defaults_to_the_algorithms_and_zero_is_the_papers_steppo():
    from steppo.algos import DEFAULT_TOKEN_GUARD
    from steppo.config import make_train_config

    assert make_train_config({"algo": "steppo"}).token_guard_value() == DEFAULT_TOKEN_GUARD > 0
    assert make_train_config({"algo": "steppo", "token_guard": 0.0}).token_guard_value() == 0.0
    assert make_train_config({"algo": "ppo"}).token_guard_value() == 0.0  # token ratio: nothing to guard
    assert make_train_config({"algo": "steppo", "token_guard": 0.3}).token_guard_value() == 0.3
