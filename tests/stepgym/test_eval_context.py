"""`stepgym eval` with an OpenAI agent against a real `stepgym serve` whose context is smaller
than an episode's chat: the agent learns the context from the server's 400, drops the oldest
turns and every episode finishes. The server is the `stepgym serve` command in its own
process, serving the tiny model saved with a 512-token context (max_position_embeddings)."""

from __future__ import annotations

import json

import pytest

import stepgym
from stepgym.agents import OpenAIAgent
from stepgym.agents.evaluate import evaluate
from stepgym.cli import main
from tests.stepgym.serve_helpers import Server

pytest.importorskip("torch")
pytest.importorskip("uvicorn")

CONTEXT = 512


@pytest.fixture(scope="module")
def small_context_server(tmp_path_factory):
    """``stepgym serve --model hf:DIR`` where DIR holds the tiny model with a 512-token context."""
    from stepgym.models import load_model

    model, tok = load_model("tiny", seed=0)
    model.config.max_position_embeddings = CONTEXT
    folder = tmp_path_factory.mktemp("tiny512")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    server = Server("--model", f"hf:{folder}", "--name", "tiny", "--max-new-tokens", "8").wait()
    try:
        yield server.url
    finally:
        server.stop()


def test_openai_client_gets_bad_request_for_a_prompt_longer_than_the_context(small_context_server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=small_context_server, api_key="unused", max_retries=0, timeout=30)
    (card,) = client.models.list().data
    assert card.id == "tiny" and card.model_extra["max_model_len"] == CONTEXT
    ok = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert ok.choices[0].message.role == "assistant" and 1 <= ok.usage.completion_tokens <= 3
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "tell me more " * 300}], max_tokens=8
        )
    assert exc.value.status_code == 400 and exc.value.code == "context_length_exceeded"
    assert f"maximum context length is {CONTEXT} tokens" in exc.value.message
    # the agent reads the same body
    from stepgym.agents.openai import context_overflow

    found = context_overflow(400, exc.value.body if "error" in (exc.value.body or {}) else {"error": exc.value.body})
    assert found is not None and found.context == CONTEXT and found.prompt_tokens > CONTEXT


def test_eval_cli_finishes_every_episode_when_chats_outgrow_the_context(small_context_server, tmp_path, capsys):
    out = tmp_path / "eval.json"
    rc = main(
        ["eval", "--env", "stepgym/ToolUse-v0", "--agent", f"openai:tiny@{small_context_server}",
         "--episodes", "3", "--num-envs", "3", "--temperature", "0", "--max-new-tokens", "8",
         "--json", str(out)]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "3 episodes" in text and "agent error" not in text
    (res,) = json.loads(out.read_text())["results"]
    assert res["episodes"] == 3 and res["errors"] == 0
    # the untrained model never answers: every episode runs its 10 steps, far past 512 tokens of chat
    assert [(e["steps"], e["error"]) for e in res["per_episode"]] == [(10, None)] * 3


def test_agent_learns_the_context_drops_old_turns_and_keeps_tools(small_context_server):
    agent = OpenAIAgent("tiny", small_context_server, temperature=0.0, max_tokens=8)
    seen = []
    res = evaluate("stepgym/ToolUse-v0", agent, episodes=2, num_envs=2, on_step=seen.append)
    assert res.errors == 0 and [e.steps for e in res.episodes] == [10, 10]
    # the live progress: one report per step, token counts from the server's usage
    assert len(seen) == 10 and [p.done for p in seen] == [0] * 9 + [2] and seen[-1].steps == 20
    assert not seen[-1].tokens_estimated and seen[-1].tokens_per_s > 0 and len(seen[-1].finished) == 2
    # stepgym serve announces its window in /v1/models (max_model_len, as vLLM does): the agent fits
    # every chat before sending, so no request needs a retry (learning it from a 400 body is covered
    # in tests/stepgym/agents/test_openai_context.py)
    assert agent.context == CONTEXT
    assert agent.context_retries == 0 and agent.turns_dropped > 0
    assert agent.tools_mode == "auto"  # a context-length 400 is not a tools problem
    # once learned, a long chat is fitted before sending: no more 400s
    retries = agent.context_retries
    env = stepgym.make("stepgym/ToolUse-v0")
    obs, info = env.reset(seed=7)
    agent.reset()
    for _ in range(8):
        obs, *_ = env.step(agent.act(obs, info))
    assert agent.context_retries == retries
    # the task stays the first user turn of a fitted chat (12 turns of ~100 tokens each)
    chat = [{"role": "user", "content": "Task: find the city."}]
    for i in range(12):
        chat += [{"role": "assistant", "content": f"step {i} " + "word " * 40},
                 {"role": "user", "content": "observation " * 40}]
    fitted, _ = agent.fit(chat, None, 8)
    assert fitted[0]["content"].startswith("Task:") and "earlier step(s) omitted" in fitted[0]["content"]
    assert len(fitted) < len(chat) and fitted[-1] == chat[-1]


def test_default_max_tokens_shrinks_to_what_the_context_leaves(small_context_server):
    # 512 completion tokens (the default) do not fit next to the task in a 512-token context:
    # the agent asks for what is left instead of failing.
    agent = OpenAIAgent("tiny", small_context_server, temperature=0.0)
    assert agent.max_tokens == 512
    env = stepgym.make("stepgym/ToolUse-v0")
    obs, info = env.reset(seed=0)
    action = agent.act(obs, info)
    assert isinstance(action, str) and agent.context == CONTEXT
    assert 1 <= agent.last_token_counts[0] < CONTEXT - 300
