"""`stepgym eval --agent checkpoint:RUN` shows a policy the prompts it was trained on."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from stepgym.agents import CheckpointAgent, Generation  # noqa: E402
from steppo.config import SFTConfig  # noqa: E402
from steppo.rollout import ChatPromptBuilder  # noqa: E402
from steppo.sft import run_sft  # noqa: E402


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sft"))
    run_sft(SFTConfig(model="tiny", env="stepgym/ToolUse-v0", env_kwargs={"difficulty": "easy", "compact": True},
                      episodes=1, epochs=1, out=out, progress=False, threads=1, max_history_turns=2,
                      history_stride=2, max_new_tokens=24, stop_strings=("</tool_call>",)))
    return out


def test_checkpoint_agent_renders_the_trainers_windowed_prompts(sft_run):
    agent = CheckpointAgent(sft_run, temperature=0.0)
    # the settings saved with the policy are the agent's defaults...
    assert (agent.history_turns, agent.history_stride, agent.stop, agent.max_new_tokens) == (2, 2, ("</tool_call>",), 24)
    # ...and explicit arguments still win
    assert CheckpointAgent(sft_run, max_new_tokens=5, history_turns=None).max_new_tokens == 5
    seen: list[str] = []

    def spy(prompts, **kw):
        seen.extend(prompts)
        return [Generation(f"act {len(seen)}", 1, 1, "stop") for _ in prompts]

    agent.generate = spy
    observations = ["Task: what is X?"] + [f"observation {i}" for i in range(1, 6)]
    for obs in observations:
        agent.act_batch([obs], [{}], slots=[3])
    actions = [f"act {i}" for i in range(1, 6)]
    pb = ChatPromptBuilder(agent.tokenizer, max_history_turns=2, history_stride=2)
    for n, prompt in enumerate(seen):
        assert prompt == pb.build(observations[: n + 1], actions[:n])[1]
    assert "[2 earlier step(s) omitted]" in seen[3] and "act 1" not in seen[3]  # the window moved by 2
    whole = CheckpointAgent(sft_run, temperature=0.0, history_turns=None)
    whole.generate = spy
    seen.clear()
    for obs in observations[:4]:
        whole.act_batch([obs], [{}], slots=[0])
    assert "act 1" in seen[3] and "omitted" not in seen[3]  # history_turns=None: the whole chat
