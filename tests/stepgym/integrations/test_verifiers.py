"""stepgym envs as verifiers environments, evaluated by verifiers itself against `stepgym serve`.

The model is the tiny model behind a real `stepgym serve` subprocess on 127.0.0.1; verifiers'
own evaluation drives it (its `vf-eval` command and its Python `evaluate_sync`). Each rollout
is then replayed action by action in a fresh stepgym env: the prompt must be the reset
observation, every user message the env's observation after the assistant message before it,
the score the env's return, and the rollout must end where the env ended the episode.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("verifiers")
pytest.importorskip("torch")
pytest.importorskip("uvicorn")

import stepgym  # noqa: E402
from stepgym.errors import InvalidArgument, UnknownEnvError  # noqa: E402
from stepgym.integrations import verifiers_env  # noqa: E402
from stepgym.integrations.verifiers_env import load_environment, message_text  # noqa: E402
from tests.stepgym.serve_helpers import Server  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
DOC_URL = "http://127.0.0.1:8000/v1"  # the server address docs/integrations.md uses


@pytest.fixture(scope="module")
def server():
    srv = Server("--model", "tiny", "--name", "tiny", "--max-new-tokens", "8", "--quiet")
    try:
        yield srv.wait()
    finally:
        srv.stop()


def replay(env_id: str, env_kwargs: dict[str, Any], seed: int, prompt: list[dict], completion: list[dict],
           max_turns: int | None = None) -> dict[str, Any]:
    """Step a fresh env with the rollout's assistant messages; check the user messages are its observations."""
    env = stepgym.make(env_id, **env_kwargs)
    obs, _ = env.reset(seed=seed)
    assert prompt[-1] == {"role": "user", "content": obs}
    roles = [m["role"] for m in completion]
    assert roles == ["assistant", "user"] * (len(roles) // 2), roles
    total, invalid, ended = 0.0, 0, False
    for i in range(0, len(completion), 2):
        assert not ended, "the rollout went on after the env ended the episode"
        obs, reward, terminated, truncated, info = env.step(message_text(completion[i]))
        assert completion[i + 1]["content"] == obs
        total += reward
        invalid += not info["action_valid"]
        ended = terminated or truncated or (max_turns is not None and (i // 2 + 1) >= max_turns)
    env.close()
    assert ended, "the rollout stopped before the episode ended"
    return {"return": total, "steps": len(completion) // 2, "invalid": invalid,
            "success": bool(info.get("success", False))}


def test_vf_eval_command_evaluates_a_stepgym_env(server, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), STEPGYM_KEY="unused")
    out = tmp_path / "out"
    argv = ["vf-eval", "stepgym.integrations.verifiers_env", "-a", '{"env": "stepgym/Countdown-v0", "num_examples": 2}',
            "-b", server.url, "-k", "STEPGYM_KEY", "-m", "tiny", "-n", "2", "-r", "1", "-t", "8",
            "-d", "-s", "-o", str(out), "--disable-env-server"]
    bin_dir = Path(sys.executable).parent
    argv[0] = str(bin_dir / "vf-eval") if (bin_dir / "vf-eval").exists() else "vf-eval"
    res = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    [results] = out.glob("evals/*/*/results.jsonl")
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(rows) == 2
    # the eval split continues after the train split: seeds 2 and 3
    assert sorted(r["info"]["seed"] for r in rows) == [2, 3]
    for row in rows:
        assert row["error"] is None and row["stop_condition"] == "has_final_env_response"
        played = replay("stepgym/Countdown-v0", {}, row["info"]["seed"], row["prompt"], row["completion"])
        assert row["reward"] == pytest.approx(played["return"])
        assert row["metrics"]["env_steps"] == played["steps"] >= 1
        assert row["metrics"]["invalid_actions"] == played["invalid"]
        assert row["metrics"]["success"] == float(played["success"])


def test_python_evaluate_with_env_kwargs_and_a_turn_cap(server):
    from verifiers.types import ClientConfig

    os.environ.setdefault("STEPGYM_KEY", "unused")
    vf_env = load_environment("stepgym/ToolUse-v0", num_examples=1, num_eval_examples=1, seed=7,
                              max_turns=2, difficulty="easy")
    client = ClientConfig(api_base_url=server.url, api_key_var="STEPGYM_KEY", max_retries=0)
    results = vf_env.evaluate_sync(client=client, model="tiny", sampling_args={"max_tokens": 8},
                                   num_examples=1, rollouts_per_example=2)
    outputs = results["outputs"]
    assert len(outputs) == 2
    assert outputs[0]["prompt"] == outputs[1]["prompt"]  # two rollouts of one episode
    for out in outputs:
        assert out["info"]["seed"] == 8 and out["error"] is None
        played = replay("stepgym/ToolUse-v0", {"difficulty": "easy"}, 8, out["prompt"], out["completion"], max_turns=2)
        assert played["steps"] <= 2
        assert out["reward"] == pytest.approx(played["return"])


def test_expert_actions_score_one_and_garbage_gets_an_explanation():
    vf_env = load_environment("stepgym/Countdown-v0", num_examples=1, score="success")

    async def episode(actions: list[str] | None) -> dict[str, Any]:
        state: dict[str, Any] = {"info": {"seed": 0}, "trajectory": []}
        await vf_env.setup_state(state)
        replies = []
        while state.get("final_env_response") is None:
            env = state["stepgym_env"].unwrapped
            action = env.expert_action() if actions is None else actions[len(replies)]
            state["trajectory"].append({"extras": {}, "reward": None})
            replies += await vf_env.env_response([{"role": "assistant", "content": action}], state)
        rewards = [step["reward"] for step in state["trajectory"]]
        scores = {f.__name__: await f(state) for f in (verifiers_env.success, verifiers_env.episode_return,
                                                           verifiers_env.invalid_actions)}
        await vf_env.close_stepgym_env(state)
        assert "stepgym_env" not in state
        return {"replies": replies, "rewards": rewards, **scores}

    good = asyncio.run(episode(None))
    assert good["success"] == 1.0 and good["episode_return"] > 0
    assert good["episode_return"] == pytest.approx(sum(good["rewards"]))
    assert good["invalid_actions"] == 0
    bad = asyncio.run(episode(["<<garbage>> %%"] * 50))
    assert bad["success"] == 0.0 and bad["invalid_actions"] == len(bad["replies"]) >= 1
    assert "Invalid expression '<<garbage>> %%'" in bad["replies"][0].content


def test_bad_arguments_fail_in_one_line():
    with pytest.raises(UnknownEnvError, match="Did you mean 'stepgym/Countdown-v0'"):
        load_environment("stepgym/Countdwn-v0", num_examples=1)
    with pytest.raises(InvalidArgument, match="does not accept the env kwarg 'dificulty'"):
        load_environment("stepgym/ToolUse-v0", num_examples=1, dificulty="easy")
    with pytest.raises(InvalidArgument, match="score must be 'return' or 'success'"):
        load_environment("stepgym/ToolUse-v0", num_examples=1, score="win")


def doc_section() -> str:
    text = (ROOT / "docs" / "integrations.md").read_text()
    return text.split("\n## verifiers\n", 1)[1].split("\n## ", 1)[0]


def test_the_docs_python_example_runs_as_written(server, capsys, monkeypatch):
    [code] = re.findall(r"```python\n(.*?)```", doc_section(), re.DOTALL)
    assert DOC_URL in code
    monkeypatch.setenv("STEPGYM_KEY", "unused")  # the example sets it; monkeypatch restores it afterwards
    exec(compile(code.replace(DOC_URL, server.url), "docs/integrations.md", "exec"), {"__name__": "__main__"})
    lines = capsys.readouterr().out.strip().splitlines()
    lines = [ln for ln in lines if re.match(r"\d+ ", ln)]  # verifiers' progress bar writes to stderr
    assert len(lines) == 4  # 2 episodes x 2 rollouts
    for line in lines:
        seed, reward, steps = line.split()[:3]
        assert int(seed) in (2, 3) and 1 <= float(steps) <= 3  # the eval split's seeds; max_turns=3


@pytest.mark.slow
def test_the_docs_vf_eval_command_runs_as_written(server, tmp_path):
    """As written, verifiers starts its env server processes: slower than the test above."""
    bash = re.findall(r"```bash\n(.*?)```", doc_section(), re.DOTALL)[0]
    from stepgym.cli import build_parser

    [serve] = [ln for ln in bash.splitlines() if ln.startswith("stepgym serve")]
    build_parser().parse_args(shlex.split(serve.rstrip("&"))[1:])
    [line] = [ln for ln in bash.splitlines() if " vf-eval " in ln]
    words = shlex.split(line.replace(DOC_URL, server.url))
    assigned = dict(w.split("=", 1) for w in words[: words.index("vf-eval")])
    argv = words[words.index("vf-eval"):]
    bin_dir = Path(sys.executable).parent
    argv[0] = str(bin_dir / "vf-eval") if (bin_dir / "vf-eval").exists() else "vf-eval"
    env = dict(os.environ, PYTHONPATH=str(ROOT), **assigned)
    res = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert re.search(r"env_steps: avg - [1-4]\.000", res.stdout), res.stdout[-2000:]
