"""Crash safety: killed recorders and trainers leave usable files; bad config says why.

* Recording: processes appending to one JSON Lines file are SIGKILLed at arbitrary
  points; every line left behind parses, and every recorded episode is whole.
* Training: ``stepgym train`` is SIGKILLed mid-iteration and continued with
  ``--resume``; its metrics (minus wall-clock figures) and final weights equal those of
  an uninterrupted run with the same seed, with no metric row lost or duplicated.
* Configuration: every field of every trainer config, given an invalid value, raises a
  one-line error naming the field and the allowed values, from Python and from the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from stepgym.errors import InvalidConfig

ROOT = Path(__file__).resolve().parents[1]

# -- recording -------------------------------------------------------------------------

_RECORDER = textwrap.dedent(
    """
    import sys, gymnasium as gym, numpy as np
    import stepgym
    from stepgym.wrappers import RecordTrajectories

    path, env_id, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    env = RecordTrajectories(gym.make(env_id), path, info_keys="all")
    rng = np.random.default_rng(seed)
    alphabet = ["a", "é", "😀", "\\ud800", "\\x00", "\\n", '"', "\\\\", "{", "<tool_call>"]
    ep = 0
    print("ready", flush=True)
    while True:
        env.reset(seed=seed * 100_000 + ep)
        done = False
        while not done:
            if rng.random() < 0.5:
                action = env.unwrapped.expert_action()
            else:
                n = int(rng.integers(1, 3000))
                action = "".join(rng.choice(alphabet, size=n))
            _, _, te, tr, _ = env.step(action)
            done = te or tr
        ep += 1
    """
)


def _check_jsonl(path: Path, torn_allowed: int = 0, partial_tail: bool = False) -> list[dict]:
    """Every line parses, except at most ``torn_allowed`` lines cut short by a killed writer."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    if not data.endswith(b"\n"):
        assert partial_tail and torn_allowed > 0, "the file ends in a partial line"
        torn_allowed -= 1
    rows, torn = [], 0
    for i, raw in enumerate(lines[:-1]):
        try:
            rows.append(json.loads(raw.decode("utf-8")))
        except ValueError:
            torn += 1
            continue
        assert isinstance(rows[-1], dict), f"line {i} is not an object"
    assert torn <= torn_allowed, f"{torn} lines do not parse"
    return rows


def test_killed_recorders_leave_valid_json_lines(tmp_path):
    from stepgym.wrappers import RecordTrajectories, read_recording

    path = tmp_path / "rec.jsonl"
    procs = []
    for seed, env_id in enumerate(["stepgym/ToolUse-v0", "stepgym/Wordle-v0", "stepgym/ToolUse-v0"]):
        procs.append(subprocess.Popen([sys.executable, "-c", _RECORDER, str(path), env_id, str(seed + 1)],
                                      stdout=subprocess.PIPE, cwd=ROOT, start_new_session=True))
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
    # Kill each writer at a different moment while the others keep appending.
    deadline = time.monotonic() + 20
    for i, p in enumerate(procs):
        target = 150_000 * (i + 1)
        while time.monotonic() < deadline and (not path.exists() or path.stat().st_size < target):
            time.sleep(0.01)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        assert p.returncode == -signal.SIGKILL
    # SIGKILL can cut the one write of an episode short (Linux stops a write page by page):
    # at most one torn line per killed writer, and it never takes another writer's line with it
    rows = _check_jsonl(path, torn_allowed=len(procs), partial_tail=True)
    assert len(rows) > 20, "the writers recorded too little to test anything"
    episodes, skipped = read_recording(path)
    assert skipped <= len(procs)
    last_of_run: dict[str, int] = {}
    for ep in episodes:
        run, num = ep["steps"][0]["run"], ep["steps"][0]["episode"]
        last_of_run[run] = max(last_of_run.get(run, -1), num)
    for ep in episodes:
        steps = [s["step"] for s in ep["steps"]]
        assert steps == list(range(len(steps))), "an episode has missing or interleaved steps"
        last = ep["steps"][-1]
        if not (last["terminated"] or last["truncated"]):
            # only the write a kill cut short can leave an unfinished episode: its run's last one
            assert ep["steps"][0]["episode"] == last_of_run[ep["steps"][0]["run"]], "an unfinished episode"
    # A write cut short (disk full, kill inside write): the next writer repairs the tail.
    with open(path, "ab") as fh:
        fh.write(b'{"run": "torn", "episode": 0, "st')
    import gymnasium as gym

    env = RecordTrajectories(gym.make("stepgym/Countdown-v0"), path)
    env.reset(seed=0)
    done = False
    while not done:
        *_, te, tr, _ = env.step(env.unwrapped.expert_action())
        done = te or tr
    env.close()
    after = _check_jsonl(path, torn_allowed=len(procs))  # the tail is whole again
    assert len(after) > len(rows) and all(r.get("run") != "torn" for r in after)


# -- training ----------------------------------------------------------------------------

TRAIN_ARGS = [
    "train", "--model", "tiny", "--env", "stepgym/FrozenLake-v0", "--env-kwargs", '{"max_steps": 3}',
    "--iterations", "6", "--episodes-per-iteration", "2", "--num-envs", "2", "--max-new-tokens", "6",
    "--max-prompt-tokens", "256", "--epochs", "1", "--eval-episodes", "2", "--eval-every", "2",
    "--no-eval-before", "--save-every", "1", "--no-progress", "--no-tensorboard", "--seed", "3", "--threads", "1",
]
#: Metric names that hold wall-clock figures; they legitimately differ between runs.
TIME_PREFIXES = ("perf/", "time/")


def _train(out: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONHASHSEED="0", STEPGYM_CACHE=str(out.parent / "cache"))
    return subprocess.Popen([sys.executable, "-m", "stepgym.cli", *TRAIN_ARGS, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                            start_new_session=True)


def _rows(out: Path) -> list[dict]:
    rows = _check_jsonl(out / "metrics.jsonl")
    return [{k: v for k, v in r.items() if not k.startswith(TIME_PREFIXES)} for r in rows]


@pytest.mark.timeout(240)
def test_killed_training_resumes_to_the_same_result(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    full, crashed = tmp_path / "full", tmp_path / "crashed"
    ref = _train(full)  # the uninterrupted run, side by side with the one we kill
    victim = _train(crashed)
    ckpt2 = crashed / "checkpoints" / "iter_000002.pt"
    deadline = time.monotonic() + 150
    while not ckpt2.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ckpt2.exists(), "the run to kill never wrote its second checkpoint:\n" + (
        victim.communicate()[0].decode(errors="replace")[-2000:] if victim.poll() is not None else "(timeout)")
    time.sleep(0.05)  # into iteration 3 (on a fast machine maybe later: any point before the end will do)
    assert victim.poll() is None, "the run finished before it could be killed; make it longer"
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    # What a kill leaves: only whole checkpoints, and metric rows that all parse.
    for p in (crashed / "checkpoints").glob("iter_*.pt"):
        torch.load(p, map_location="cpu", weights_only=False)
    killed_rows = _rows(crashed)
    done = [r["iteration"] for r in killed_rows]
    assert done == list(range(1, len(done) + 1)) and 2 <= len(done) < 6, done
    resumed = _train(crashed, "--resume")
    out_resumed = resumed.communicate(timeout=150)[0].decode(errors="replace")
    out_ref = ref.communicate(timeout=150)[0].decode(errors="replace")
    assert ref.returncode == 0, out_ref[-3000:]
    assert resumed.returncode == 0, out_resumed[-3000:]
    assert "resumed from" in out_resumed
    a, b = _rows(full), _rows(crashed)
    assert [r["iteration"] for r in b] == [1, 2, 3, 4, 5, 6], "a metric row was lost or duplicated"
    assert a == b, "metrics of the resumed run differ from the uninterrupted run"
    last_a = torch.load(full / "checkpoints" / "iter_000006.pt", map_location="cpu", weights_only=False)
    last_b = torch.load(crashed / "checkpoints" / "iter_000006.pt", map_location="cpu", weights_only=False)
    assert last_a["trainable"].keys() == last_b["trainable"].keys()
    for k in last_a["trainable"]:
        assert torch.equal(last_a["trainable"][k], last_b["trainable"][k]), f"weights differ at {k}"
    assert last_a["env_steps"] == last_b["env_steps"] and last_a["episodes"] == last_b["episodes"]
    assert not list(crashed.rglob("*.tmp")), "a temp file of an atomic write was left behind"


def test_policy_swap_survives_a_leftover_from_a_kill(tmp_path):
    """A kill between the swap's steps must not break the next save (the resumed run)."""
    from stepgym.policy_folder import write_policy_folder

    class FakeModel:  # only the file-writing part of a real model matters here
        def save_pretrained(self, path):
            Path(path, "model.safetensors").write_text(str(time.monotonic()))

    class FakeTokenizer:
        def save_pretrained(self, path):
            Path(path, "tokenizer.json").write_text("{}")

    folder = tmp_path / "policy"
    write_policy_folder(folder, FakeModel(), FakeTokenizer())
    first = (folder / "model.safetensors").read_text()
    # What a SIGKILL inside shutil.rmtree(policy.old) leaves behind, and one inside the write.
    (tmp_path / "policy.old").mkdir()
    (tmp_path / "policy.old" / "model.safetensors").write_text("half-deleted")
    (tmp_path / "policy.tmp").mkdir()
    (tmp_path / "policy.tmp" / "model.safetensors").write_text("half-written")
    write_policy_folder(folder, FakeModel(), FakeTokenizer())
    assert (folder / "model.safetensors").read_text() not in (first, "half-deleted", "half-written")
    assert not (tmp_path / "policy.old").exists() and not (tmp_path / "policy.tmp").exists()


# -- configuration -------------------------------------------------------------------------


def _config_classes():
    from steppo.config import GRPOConfig, SFTConfig, StepPOConfig

    return (StepPOConfig, GRPOConfig, SFTConfig)


def _invalid_values(f: dataclasses.Field) -> list[tuple[object, list[str]]]:
    """(invalid value, words the error must contain) for one config field."""
    from steppo.config import _field_type

    meta, typ = f.metadata, _field_type(f)
    out: list[tuple[object, list[str]]] = []
    if meta.get("choices"):
        out.append(("not-a-choice", [repr(c) for c in meta["choices"]]))
    if typ in (int, float):
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None:
            out.append((typ(lo) - 1 if typ is int else lo - 0.5, [str(lo)]))
        if hi is not None:
            out.append((typ(hi) + 1 if typ is int else hi + 0.5, [str(hi)]))
        out.append(("abc", ["expected"]))
        if typ is float:
            out.append((float("nan"), ["expected"]))
        if typ is int:
            out.append((True, ["expected"]))
    elif typ is bool:
        out.append(("yes", ["true or false"]))
    elif typ is dict:
        out.append(("{not json", ["JSON object"]))
        out.append(([1, 2], ["JSON object"]))
    elif typ is tuple:
        out.append((5, ["list of strings"]))
    elif typ is str and not meta.get("choices"):
        out.append((5, ["expected"]))
    return out


def _cases():
    for cls in _config_classes():
        for f in dataclasses.fields(cls):
            for value, words in _invalid_values(f):
                yield pytest.param(cls, f.name, value, words, id=f"{cls.__name__}.{f.name}={value!r}")


@pytest.mark.parametrize(("cls", "name", "value", "words"), list(_cases()))
def test_every_invalid_config_value_names_field_and_allowed(cls, name, value, words):
    with pytest.raises(InvalidConfig) as err:
        cls(**{name: value})
    msg = str(err.value)
    assert "\n" not in msg, f"error is not one line: {msg!r}"
    assert err.value.field == name and repr(name) in msg, msg
    for w in words:
        assert w in msg, f"{w!r} missing from {msg!r}"


def test_every_config_field_is_walked():
    """Each field of each config gets at least one invalid value (none slips through)."""
    missed = [f"{cls.__name__}.{f.name}" for cls in _config_classes() for f in dataclasses.fields(cls)
              if not _invalid_values(f)]
    assert missed == []


def test_cross_field_and_value_errors():
    from steppo.config import GRPOConfig, StepPOConfig, make_train_config

    cases = [
        (lambda: StepPOConfig(algo="grpo"), "algo", "'steppo'"),
        (lambda: GRPOConfig(algo="steppo"), "algo", "'grpo'"),
        (lambda: GRPOConfig(episodes_per_iteration=10, group_size=4), "episodes_per_iteration", "group_size=4"),
        (lambda: StepPOConfig(device="tpu"), "device", "'cuda:N'"),
        (lambda: StepPOConfig(env=""), "env", "stepgym list"),
        (lambda: make_train_config({"algo": "steppo", "lerning_rate": 1}), "lerning_rate", "allowed:"),
        (lambda: make_train_config({"algo": "nope"}), "algo", "'gigpo'"),
    ]
    for make, field, word in cases:
        with pytest.raises(InvalidConfig) as err:
            make()
        assert err.value.field == field and word in str(err.value) and "\n" not in str(err.value), str(err.value)


def _cli_cases():
    from steppo.config import GRPOConfig, StepPOConfig, _all_fields, _field_type

    for name, f in _all_fields((StepPOConfig, GRPOConfig)).items():
        typ = _field_type(f)
        if typ in (bool, tuple) or not f.metadata.get("cli", True):
            continue  # switches and lists take no single bad value
        if typ is str and not f.metadata.get("choices"):
            continue  # any text is a well-typed path/id on the command line
        for value, words in _invalid_values(f):
            if isinstance(value, (bool, list)) or (isinstance(value, float) and value != value):
                continue
            yield pytest.param(name, str(value), words, id=f"--{name}={value}")


@pytest.mark.parametrize(("name", "value", "words"), list(_cli_cases()))
def test_cli_rejects_invalid_values_with_field_and_allowed(name, value, words, capsys, tmp_path):
    from stepgym.cli import main

    from steppo.config import StepPOConfig

    flag = "--" + name.replace("_", "-")
    # Fields of the critic-free family only apply with one of its algorithms.
    family = [] if name in {f.name for f in dataclasses.fields(StepPOConfig)} else ["--algo", "grpo"]
    try:
        rc = main(["train", *family, "--out", str(tmp_path / "run"), f"{flag}={value}"])
    except SystemExit as exc:  # argparse's own checks (choices, types)
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2, err[-500:]
    assert not (tmp_path / "run").exists(), "a rejected command must not create its output dir"
    last = err.strip().splitlines()[-1] if err.strip() else ""
    # Rich may wrap a long message; judge the message as one paragraph from its "error".
    tail = err[err.rfind("error"):].replace("\n", " ")
    assert name in tail or flag in tail, f"the error does not name {name}: {last!r}"
    if not words == ["expected"]:  # bare type errors only need to say what was expected
        for w in words:
            assert w.strip("'") in tail, f"{w!r} missing from {tail!r}"


def _sft_cli_cases():
    from steppo.config import SFTConfig, _field_type

    for f in dataclasses.fields(SFTConfig):
        typ = _field_type(f)
        if typ in (bool, tuple, str) and not f.metadata.get("choices") or not f.metadata.get("cli", True):
            continue
        for value, words in _invalid_values(f):
            if isinstance(value, (bool, list)) or (isinstance(value, float) and value != value):
                continue
            yield pytest.param(f.name, str(value), words, id=f"sft --{f.name}={value}")


@pytest.mark.parametrize(("name", "value", "words"), list(_sft_cli_cases()))
def test_sft_cli_rejects_invalid_values(name, value, words, capsys, tmp_path):
    from stepgym.cli import main

    flag = "--" + name.replace("_", "-")
    try:
        rc = main(["sft", "--out", str(tmp_path / "run"), f"{flag}={value}"])
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2, err[-500:]
    tail = err[err.rfind("error"):].replace("\n", " ")
    assert name in tail or flag in tail, tail
    if words != ["expected"]:
        for w in words:
            assert w.strip("'") in tail, f"{w!r} missing from {tail!r}"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("argv", "words"), [
    (["check", "stepgym/ToolUse-v9"], ["ToolUse-v9", "ToolUse-v0"]),
    (["eval", "--env", "stepgym/ToolUse-v9", "--episodes", "1"], ["ToolUse-v9", "stepgym list"]),
    (["eval", "--env", "stepgym/ToolUse-v0", "--agent", "nope", "--episodes", "1"], ["nope", "expert"]),
    (["eval", "--env", "stepgym/ToolUse-v0", "--episodes", "-3"], ["episodes", "-3"]),
    (["replay", "/nonexistent/run.jsonl"], ["/nonexistent/run.jsonl"]),
    (["bench", "--env", "nope"], ["nope", "stepgym list"]),
])
def test_other_commands_reject_bad_input_cleanly(argv, words, capsys):
    """Bad input to any command: exit status 2 and a message saying what was wrong, no traceback."""
    from stepgym.cli import main

    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2, err[-800:]
    assert "Traceback" not in err
    flat = " ".join(err.split())
    for w in words:
        assert w in flat, f"{w!r} missing from {flat[-400:]!r}"


@pytest.mark.parametrize("argv", [["train", "--algo", "nope"], ["train", "--env-kwargs", "{not json"],
                                  ["train", "--iterations", "abc"]])
def test_cli_errors_are_exactly_one_line(argv, capsys):
    from stepgym.cli import main

    try:
        main(argv)
    except SystemExit:
        pass
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err[-600:]


def test_a_run_that_failed_at_start_does_not_block_the_out_dir(tmp_path, capsys):
    pytest.importorskip("torch")
    from stepgym.cli import main

    out = str(tmp_path / "run")
    assert main(["train", "--model", str(tmp_path / "no-such-model"), "--out", out, "--iterations", "1"]) == 2
    assert "model spec" in capsys.readouterr().err
    rc = main(["train", "--preset", "tiny", "--out", out, "--iterations", "1", "--eval-episodes", "2",
               "--no-eval-before", "--no-progress", "--no-tensorboard"])
    assert rc == 0, capsys.readouterr().err[-500:]
    assert (tmp_path / "run" / "metrics.jsonl").exists()
