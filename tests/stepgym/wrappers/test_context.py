"""Context wrappers: templates, windows, chat messages, and the token-budget guarantee."""

from __future__ import annotations

import gymnasium as gym
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepgym.errors import InvalidArgument
from stepgym.wrappers import (
    ChatMessages,
    ContextWindow,
    HistoryPrompt,
    HistoryTemplate,
    StepPenalty,
    TokenBudget,
)
from tests.stepgym.wrappers.conftest import CountEnv, PlainTextEnv, ScriptEnv, count_tokens

ADD = '<tool_call>{"name": "add", "arguments": {"n": 1}}</tool_call>'


def run_expert(env, n, seed=0):
    out = [env.reset(seed=seed)]
    for _ in range(n):
        out.append(env.step(env.unwrapped.expert_action()))
        if out[-1][2] or out[-1][3]:
            break
    return out


# -- HistoryPrompt / ContextWindow ------------------------------------------------------
def test_history_prompt_follows_the_documented_template(count_env):
    env = HistoryPrompt(count_env)
    task, info = env.reset(seed=0)
    assert info["context"] == {"truncated": False, "tokens_before": None, "tokens_after": None,
                               "steps_dropped": 0, "steps_kept": 0, "tokens_cut": 0}
    p1, *_ = env.step(ADD)
    p2, *_, info = env.step("oops")
    assert p1 == f"{task}\n\n[Step 1]\nAction:\n{ADD}\nObservation:\ntotal = 1"
    assert p2.startswith(p1 + "\n\n[Step 2]\nAction:\noops\nObservation:\nInvalid action:")
    assert info["context"]["steps_kept"] == 2 and env.observation_space.contains(p2)


def test_custom_template_and_bad_templates(count_env):
    t = HistoryTemplate(task="TASK: {task}", step="\n> {action}\n{observation}", suffix="\nNext:")
    env = HistoryPrompt(count_env, template=t)
    first, _ = env.reset(seed=0)
    task = env.transcript[0]
    assert first == f"TASK: {task}\nNext:"
    p, *_ = env.step(ADD)
    assert p == f"TASK: {task}\n> {ADD}\ntotal = 1\nNext:"
    with pytest.raises(InvalidArgument, match="unknown|not a valid template"):
        HistoryTemplate(step="{act}")
    with pytest.raises(InvalidArgument, match="task"):
        HistoryTemplate(task="no task here")


def test_context_window_keeps_task_and_last_k_steps(count_env):
    env = ContextWindow(count_env, max_steps=2)
    task, _ = env.reset(seed=0)
    for i in range(4):
        prompt, _, _, _, info = env.step(f"step number {i}")
    assert prompt.startswith(task)
    assert "[... 2 earlier step(s) omitted ...]" in prompt
    assert "step number 2" in prompt and "step number 3" in prompt and "step number 1" not in prompt
    assert info["context"]["steps_dropped"] == 2 and info["context"]["truncated"] is True
    with pytest.raises(InvalidArgument):
        ContextWindow(count_env, max_steps=-1)


def test_only_one_context_wrapper_per_stack(count_env):
    with pytest.raises(InvalidArgument, match="one context wrapper"):
        ContextWindow(StepPenalty(HistoryPrompt(count_env)), max_steps=2)


def test_plain_gymnasium_text_env_gets_a_wider_unicode_space():
    inner = PlainTextEnv()
    env = HistoryPrompt(inner)
    obs, _ = env.reset(seed=0)
    prompt, *_ = env.step("héllo 😀 not in the charset")
    assert not inner.observation_space.contains(prompt)
    assert env.observation_space.contains(prompt)
    assert env.observation_space.max_length > inner.observation_space.max_length


def test_context_is_reset(count_env):
    env = HistoryPrompt(count_env)
    env.reset(seed=0)
    env.step("junk")
    env.step("more junk")
    fresh = HistoryPrompt(gym.make("wrapperstest/Count-v0"))
    assert env.reset(seed=1)[0] == fresh.reset(seed=1)[0]
    assert env.step(ADD)[0] == fresh.step(ADD)[0]


# -- ChatMessages -----------------------------------------------------------------------
def test_chat_messages_without_tokenizer(count_env):
    env = ChatMessages(count_env, system="Be brief.", max_steps=1)
    task, info = env.reset(seed=0)
    assert info["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": task}]
    env.step(ADD)
    _, _, _, _, info = env.step("x")
    roles = [m["role"] for m in info["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert "1 earlier step(s) omitted" in info["messages"][1]["content"]
    assert info["messages"][2]["content"] == "x"


def test_chat_messages_through_the_real_chat_template(count_env, smollm2_tokenizer):
    env = ChatMessages(count_env, smollm2_tokenizer)
    env.reset(seed=0)
    prompt, _, _, _, info = env.step(ADD)
    expected = smollm2_tokenizer.apply_chat_template(info["messages"], tokenize=False, add_generation_prompt=True)
    assert prompt == expected
    assert prompt.endswith("<|im_start|>assistant\n")
    assert f"<|im_start|>assistant\n{ADD}<|im_end|>" in prompt


def test_chat_needs_a_chat_template(count_env, tiny_tokenizer):
    import copy

    plain = copy.deepcopy(tiny_tokenizer)
    plain.chat_template = None
    with pytest.raises(InvalidArgument, match="chat template"):
        ChatMessages(count_env, plain)
    with pytest.raises(InvalidArgument, match="chat template"):
        TokenBudget(count_env, plain, 100, chat=True)


# -- TokenBudget ------------------------------------------------------------------------
def test_token_budget_reports_and_fits(count_env, smollm2_tokenizer):
    env = TokenBudget(count_env, smollm2_tokenizer, max_tokens=60)
    task, info = env.reset(seed=0)
    base = count_tokens(smollm2_tokenizer, task)
    assert info["context"]["tokens_after"] == base
    for _ in range(5):
        prompt, _, _, _, info = env.step(ADD)
    ctx = info["context"]
    assert count_tokens(smollm2_tokenizer, prompt) == ctx["tokens_after"] <= 60
    assert prompt.startswith(task)
    assert ctx["truncated"] and ctx["steps_dropped"] > 0
    assert ctx["tokens_before"] > 60


def test_token_budget_rejects_a_budget_smaller_than_the_task(count_env, smollm2_tokenizer):
    env = TokenBudget(count_env, smollm2_tokenizer, max_tokens=5)
    with pytest.raises(InvalidArgument, match="task alone takes"):
        env.reset(seed=0)


def test_oversized_observation_is_cut_in_the_middle(smollm2_tokenizer):
    big = "HEAD " + " ".join(f"w{i}" for i in range(3000)) + " TAIL"
    env = TokenBudget(ScriptEnv("Find the tail.", [big]), smollm2_tokenizer, max_tokens=200)
    env.reset(seed=0)
    prompt, _, _, _, info = env.step("look")
    assert count_tokens(smollm2_tokenizer, prompt) <= 200
    assert "HEAD" in prompt and "TAIL" in prompt and "tokens cut ...]" in prompt
    assert info["context"]["tokens_cut"] > 0
    # close to the budget, not far below it: the cut keeps what fits
    assert count_tokens(smollm2_tokenizer, prompt) >= 180


def test_token_budget_chat_mode_counts_the_template(count_env, smollm2_tokenizer):
    env = TokenBudget(count_env, smollm2_tokenizer, max_tokens=140, chat=True, system="You count.")
    env.reset(seed=0)
    for _ in range(4):
        prompt, _, _, _, info = env.step(ADD)
    assert count_tokens(smollm2_tokenizer, prompt) == info["context"]["tokens_after"] <= 140
    assert prompt == smollm2_tokenizer.apply_chat_template(info["messages"], tokenize=False, add_generation_prompt=True)
    assert info["messages"][0] == {"role": "system", "content": "You count."}


def test_summarize_hook_replaces_the_omitted_line(count_env, smollm2_tokenizer):
    seen = []

    def summarize(steps):
        seen.append(len(steps))
        return f"\n\n(summary of {len(steps)} steps)"

    env = TokenBudget(count_env, smollm2_tokenizer, max_tokens=60, summarize=summarize)
    env.reset(seed=0)
    for _ in range(5):
        prompt, _, _, _, info = env.step(ADD)
    assert f"(summary of {info['context']['steps_dropped']} steps)" in prompt and seen


texts = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs")),
        st.sampled_from(list(" \n\t<>{}[]😀中文é\u200b")),
    ),
    max_size=400,
)


def _check_budget(tokenizer, task, observations, actions, budget, chat, window):
    env = TokenBudget(ScriptEnv(task, observations), tokenizer, max_tokens=budget, chat=chat, max_steps=window)
    full = HistoryPrompt(ScriptEnv(task, observations))
    task_tokens = count_tokens(tokenizer, task)
    try:
        prompt, info = env.reset(seed=0)
    except InvalidArgument:
        assert task_tokens > budget or chat  # chat mode also counts the template around the task
        return
    full.reset(seed=0)
    for a in actions:
        prompt, _, _, _, info = env.step(a)
        full_prompt, *_ = full.step(a)
        ctx = info["context"]
        n = count_tokens(tokenizer, prompt)
        assert n <= budget, (n, budget)  # never exceed the budget
        assert ctx["tokens_after"] == n
        if chat:
            assert info["messages"][0]["content"].startswith(task)  # never drop the task
        else:
            assert prompt.startswith(task)
            if not ctx["truncated"]:
                assert prompt == full_prompt  # nothing cut: exactly the full history
        assert ctx["steps_kept"] + ctx["steps_dropped"] == len(env.transcript[1])
        if window is not None:
            assert ctx["steps_kept"] <= window


@pytest.mark.parametrize("tok_name", ["smollm2_tokenizer", "tiny_tokenizer", "bert_tokenizer"])
def test_token_budget_property(tok_name, request):
    tokenizer = request.getfixturevalue(tok_name)

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(
        task=texts.filter(lambda s: s.strip() != ""),
        observations=st.lists(st.one_of(texts, texts.map(lambda s: s * 20)), min_size=1, max_size=4),
        actions=st.lists(texts, min_size=1, max_size=6),
        budget=st.integers(min_value=1, max_value=700),
        window=st.one_of(st.none(), st.integers(min_value=0, max_value=3)),
    )
    def check(task, observations, actions, budget, window):
        _check_budget(tokenizer, task, observations, actions, budget, chat=False, window=window)

    check()


def test_token_budget_property_chat(smollm2_tokenizer):
    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(
        task=texts.filter(lambda s: s.strip() != ""),
        observations=st.lists(st.one_of(texts, texts.map(lambda s: s * 20)), min_size=1, max_size=3),
        actions=st.lists(texts, min_size=1, max_size=5),
        budget=st.integers(min_value=20, max_value=600),
    )
    def check(task, observations, actions, budget):
        _check_budget(smollm2_tokenizer, task, observations, actions, budget, chat=True, window=None)

    check()


def test_lone_surrogates_do_not_crash_the_budget(smollm2_tokenizer):
    env = TokenBudget(ScriptEnv("task \udc80", ["obs \ud800 end"]), smollm2_tokenizer, max_tokens=100)
    prompt, _ = env.reset(seed=0)
    prompt, *_ = env.step("act \udfff")
    assert "\ufffd" in prompt and count_tokens(smollm2_tokenizer, prompt) <= 100


def test_expert_still_solves_through_a_tight_budget(smollm2_tokenizer):
    env = TokenBudget(CountEnv(), smollm2_tokenizer, max_tokens=48)
    steps = run_expert(env, 10)
    assert steps[-1][1] == 1.0 and steps[-1][4]["success"] is True


def test_counts_ignore_truncation_left_on_the_tokenizer(tiny_tokenizer):
    import copy

    from stepgym.wrappers import TokenCounter

    tok = copy.deepcopy(tiny_tokenizer)
    text = "word " * 300
    full = count_tokens(tok, text)
    tok(text, truncation=True, max_length=16)  # leaves truncation set on the fast backend
    assert tok.backend_tokenizer.truncation is not None
    assert TokenCounter(tok).count(text) == full
