"""Rollouts record the exact token ids fed to and produced by the model."""

from __future__ import annotations

import pytest
import torch

from stepgym.core import StepRecord
from stepgym.models import load_model
from steppo.policy import Policy
from steppo.rollout import (
    ChatPromptBuilder,
    Generator,
    InProcessCollector,
    LocalGenerator,
    SamplingParams,
    make_env_fn,
)
from steppo.sampling import Sampler

ENV_KW = {"difficulty": "easy", "tools": ["lookup"], "compact": True, "max_steps": 3}


@pytest.fixture(scope="module")
def parts():
    lm, tok = load_model("tiny", seed=0)
    pol = Policy(lm, tok, critic="shared")
    return pol, tok


ANSWER = '<tool_call>{"name": "answer", "arguments": {"text": "0"}}</tool_call>'


class ScriptedGenerator(Generator):
    """A backend that always answers "0": swapping backends is a new class, nothing else."""

    def __init__(self, tok):
        self.tokenizer = tok
        self.ids = tok(ANSWER, add_special_tokens=False)["input_ids"]

    def generate(self, prompts, params, sessions=None):
        from steppo.sampling import Generation

        return [Generation(response_ids=list(self.ids), logprobs=[-1.0] * len(self.ids), text=ANSWER,
                           stop_reason="stop_string") for _ in prompts]


def test_records_hold_exact_prompt_and_response_ids(parts):
    pol, tok = parts
    pb = ChatPromptBuilder(tok, max_history_turns=2)
    gen = LocalGenerator(Sampler(pol, stop_strings=("</tool_call>",)), values="step")
    col = InProcessCollector(make_env_fn("stepgym/ToolUse-v0", ENV_KW), gen, pb, num_envs=3)
    batch = col.collect([11, 11, 12, 13], [0, 0, 1, 2], SamplingParams(max_new_tokens=12, seed=5), traj_id_start=100)
    assert len(batch.episodes) == 4
    assert sorted({s.traj_id for s in batch.steps}) == [100, 101, 102, 103]
    prev = {}
    for s in batch.steps:
        assert isinstance(s, StepRecord)
        # prompt ids are the tokenised prompt text, or continue the step before's exact ids
        # (prompt + sampled response) with the tokens of the new text; logprobs align with ids
        p = prev.get(s.traj_id)
        if p is not None and s.prompt_ids[: len(p.prompt_ids) + len(p.response_ids)] == p.prompt_ids + p.response_ids:
            assert tok.decode(s.prompt_ids, skip_special_tokens=False) == s.prompt_text
        else:
            assert s.prompt_ids == tok(s.prompt_text, add_special_tokens=False)["input_ids"]
        prev[s.traj_id] = s
        assert len(s.logprobs) == len(s.response_ids) >= 1
        assert "value" in s.info
    # teacher-forced log-probs of the stored ids equal the stored log-probs (token-in/token-out)
    steps = batch.steps[:6]
    with torch.no_grad():
        out = pol.score([s.prompt_ids for s in steps], [s.response_ids for s in steps])
    for i, s in enumerate(steps):
        assert torch.allclose(out.logprobs[i, : len(s.logprobs)], torch.tensor(s.logprobs), atol=1e-4)
    # episode bookkeeping: steps of an episode are numbered 0..T-1, the last one is done
    for ep in batch.episodes:
        st = [s for s in batch.steps if s.traj_id == ep.traj_id]
        assert [s.step_index for s in st] == list(range(ep.length))
        assert st[-1].done and not any(s.done for s in st[:-1])
        assert st[-1].terminated == ep.terminated and st[-1].truncated == ep.truncated
        assert all(s.group_id == ep.group_id for s in st)
    # the same seed gives the same rollout
    again = col.collect([11, 11, 12, 13], [0, 0, 1, 2], SamplingParams(max_new_tokens=12, seed=5), traj_id_start=100)
    assert [s.response_ids for s in again.steps] == [s.response_ids for s in batch.steps]
    m = batch.metrics()
    assert set(m) == {"charts/success_rate", "charts/episode_return", "charts/episode_length",
                      "charts/invalid_action_rate"}
    col.close()


def test_a_new_backend_is_a_new_class(parts):
    _, tok = parts
    col = InProcessCollector(make_env_fn("stepgym/ToolUse-v0", ENV_KW), ScriptedGenerator(tok),
                             ChatPromptBuilder(tok), num_envs=2)
    batch = col.collect([1, 2, 3], [0, 1, 2], SamplingParams(max_new_tokens=8))
    assert [e.length for e in batch.episodes] == [1, 1, 1]
    assert all(e.terminated and not e.success for e in batch.episodes)
    assert all(s.response_ids == tok(ANSWER, add_special_tokens=False)["input_ids"] for s in batch.steps)


LOOKUP = '<tool_call>{"name": "lookup", "arguments": {"entity": "Nobody", "attribute": "age"}}</tool_call>'


class CharByCharGenerator(Generator):
    """Always looks up an unknown entity, with ids the tokenizer would never produce for that text."""

    def __init__(self, tok):
        self.tokenizer = tok
        self.ids = [i for c in LOOKUP for i in tok(c, add_special_tokens=False)["input_ids"]]
        assert tok.decode(self.ids) == LOOKUP and self.ids != tok(LOOKUP, add_special_tokens=False)["input_ids"]

    def generate(self, prompts, params, sessions=None):
        from steppo.sampling import Generation

        return [Generation(response_ids=list(self.ids), logprobs=[-1.0] * len(self.ids), text=LOOKUP,
                           stop_reason="stop_string") for _ in prompts]


@pytest.mark.parametrize("turns", [1, 4])
def test_the_next_prompt_carries_the_sampled_ids_not_a_retokenisation(parts, turns):
    _, tok = parts
    gen = CharByCharGenerator(tok)
    col = InProcessCollector(make_env_fn("stepgym/ToolUse-v0", dict(ENV_KW, max_steps=3)), gen,
                             ChatPromptBuilder(tok, max_history_turns=turns), num_envs=1)
    s0, s1, s2 = col.collect([7], [0], SamplingParams(max_new_tokens=64)).steps
    col.close()
    for a, b in ((s0, s1), (s1, s2)):
        carried = b.prompt_ids[: len(a.prompt_ids) + len(a.response_ids)] == a.prompt_ids + a.response_ids
        fresh = tok(b.prompt_text, add_special_tokens=False)["input_ids"]
        if turns == 1 and b is s2:
            # the 1-turn window slid ("1 earlier step(s) omitted"): the text changed, so it is tokenised afresh
            assert "earlier step(s) omitted" in b.prompt_text and not carried and b.prompt_ids == fresh
        else:
            assert carried and b.prompt_ids != fresh  # the char-by-char ids reached the next prompt as sampled
            assert tok.decode(b.prompt_ids, skip_special_tokens=False) == b.prompt_text
            assert len(b.prompt_ids) > len(fresh)


def test_history_stride_drops_turns_in_blocks_and_keeps_the_prompt_start_for_stride_steps(parts):
    _, tok = parts
    obs = ["Task: find X"] + [f"obs {i}" for i in range(1, 8)]
    acts = [f"act {i}" for i in range(1, 8)]
    for stride, kept in [(1, [0, 1, 2, 3, 3, 3, 3, 3]), (3, [0, 1, 2, 3, 1, 2, 3, 1])]:
        pb = ChatPromptBuilder(tok, max_history_turns=3, max_prompt_tokens=4096, history_stride=stride)
        assert [pb.turns_kept(n) for n in range(8)] == kept
        prev, carried = None, 0
        for n in range(8):
            ids, text = pb.build(obs[: n + 1], acts[:n], prev)
            shown = [a for a in acts[:n] if a + "<|im_end|>" in text]
            assert shown == acts[n - kept[n]:n]  # the newest turns, as many as turns_kept says
            assert len(ids) <= 4096 and text.startswith(pb.build(obs[:1], [])[1][:20])
            if prev is not None and ids[: len(prev[0]) + len(prev[2])] == prev[0] + prev[2]:
                carried += 1
            prev = (ids, text, tok(acts[n] + "<|im_end|>", add_special_tokens=False)["input_ids"]) if n < 7 else None
        # a sliding window breaks the prompt's start at every step once full; stride 3 only every 3rd step
        assert carried == {1: 3, 3: 5}[stride]
    with pytest.raises(Exception, match="history_stride"):
        ChatPromptBuilder(tok, max_history_turns=2, history_stride=3)


def test_plain_prompts_without_a_chat_template_show_the_same_window(parts):
    _, tok = parts
    pb = ChatPromptBuilder(tok, max_history_turns=1, system_prompt="Be brief.")
    pb.has_template = False  # as for a tokenizer without a chat template
    _, text = pb.build(["Task", "o1", "o2"], ["a1", "a2"])
    assert text == "System: Be brief.\nUser: Task\n\n[1 earlier step(s) omitted]\nAssistant: a2\nUser: o2\nAssistant:"


def test_prompt_builder_keeps_the_task_and_recent_turns(parts):
    _, tok = parts
    pb = ChatPromptBuilder(tok, max_history_turns=1, max_prompt_tokens=4096)
    obs = ["Task: find X", "obs one", "obs two", "obs three"]
    acts = ["act one", "act two", "act three"]
    ids, text = pb.build(obs, acts)
    assert "Task: find X" in text and "act three" in text and "obs three" in text
    assert "act one" not in text and "2 earlier step(s) omitted" in text
    assert text.endswith("<|im_start|>assistant\n")
    small = ChatPromptBuilder(tok, max_history_turns=3, max_prompt_tokens=40)
    ids, text = small.build(obs, acts)
    assert len(ids) <= 40
    with pytest.raises(Exception, match="len"):
        pb.build(obs, acts[:1])


@pytest.mark.parametrize("speculate", [0, 4])
def test_kv_reuse_gives_the_same_greedy_rollout_with_less_prefill(parts, speculate):
    pol, tok = parts
    pb = ChatPromptBuilder(tok, max_history_turns=3)
    runs = {}
    for reuse in (False, True):
        # with speculation, rejected drafts leave masked positions in the kept caches
        sampler = Sampler(pol, stop_strings=("</tool_call>",), speculate=speculate if reuse else 0)
        gen = LocalGenerator(sampler, reuse_cache=reuse)
        col = InProcessCollector(make_env_fn("stepgym/ToolUse-v0", ENV_KW), gen, pb, num_envs=2)
        batch = col.collect([3, 4, 5], [0, 1, 2], SamplingParams(max_new_tokens=12, greedy=True))
        runs[reuse] = (batch, sampler.prefilled_tokens, sampler.reused_tokens)
        assert (sampler.accepted_tokens > 0) == bool(sampler.speculate)
        assert sampler.num_sessions == 0  # nothing kept once the collection ends
        col.close()
    (plain, pre0, _), (cached, pre1, reused1) = runs[False], runs[True]
    assert [s.response_ids for s in cached.steps] == [s.response_ids for s in plain.steps]
    assert [s.prompt_ids for s in cached.steps] == [s.prompt_ids for s in plain.steps]
    assert max(e.length for e in cached.episodes) > 1  # later steps exist, so there was something to reuse
    assert reused1 > 0 and pre1 < pre0


@pytest.mark.parametrize("reuse", [True, False])
def test_truncated_episodes_carry_the_bootstrap_value_read_during_the_rollout(parts, reuse):
    pol, tok = parts
    gen = LocalGenerator(Sampler(pol, stop_strings=("</tool_call>",)), values="step", reuse_cache=reuse)
    kw = dict(ENV_KW, max_steps=2)
    col = InProcessCollector(make_env_fn("stepgym/ToolUse-v0", kw), gen, ChatPromptBuilder(tok, 2), num_envs=2)
    batch = col.collect([1, 2, 3], [0, 1, 2], SamplingParams(max_new_tokens=6, seed=0))
    col.close()
    trunc = [s for s in batch.steps if s.truncated]
    assert trunc, "the 2-step limit should cut some episode off"
    expected = pol.prompt_values([s.info["bootstrap_prompt_ids"] for s in trunc])
    got = torch.tensor([s.info["bootstrap_value"] for s in trunc])
    assert torch.allclose(got, expected, atol=1e-4)
    # a generator without a value head leaves it to the trainer
    plain = LocalGenerator(Sampler(pol), values="none")
    assert plain.bootstrap_values([[1, 2, 3]]) is None
