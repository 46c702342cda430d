"""The sampler: token-in/token-out log-probs, values, stopping, session caches, speculation."""

from __future__ import annotations

import copy

import pytest
import torch

from stepgym.models import load_model
from steppo.batching import pad_steps
from steppo.policy import Policy
from steppo.sampling import Sampler, speculative
from steppo.sampling.decode import sample_inverse_cdf
from steppo.sampling.kv_cache import prefill_groups
from steppo.sampling.speculative import prompt_lookup_draft


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    lm, tok = load_model("tiny", seed=0)
    return lm, tok


def _prompts(tok):
    texts = ["Task: What is the population of Belxo?", "Task: What is the population of Velora? Use tools.",
             "Task: When was Tesru founded?"]
    return [tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False)
            for t in texts]


@pytest.mark.parametrize("share_prefix", [True, False])
def test_sampler_logprobs_match_teacher_forcing(tiny, share_prefix):
    lm, tok = tiny
    pol = Policy(lm, tok, critic="shared", temperature=0.8)
    sampler = Sampler(pol, stop_strings=("</tool_call>",), share_prefix=share_prefix, min_shared_prefix=2)
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in _prompts(tok)]
    gens = sampler.generate(prompts, max_new_tokens=20, generator=torch.Generator().manual_seed(1), values="token")
    assert all(len(g.response_ids) == len(g.logprobs) == len(g.token_values) for g in gens)
    # exact ids back in, same log-probs out (the trainer never re-tokenises text)
    with torch.no_grad():
        out = pol.score(prompts, [g.response_ids for g in gens], values="token")
    for i, g in enumerate(gens):
        n = len(g.response_ids)
        assert torch.allclose(out.logprobs[i, :n], torch.tensor(g.logprobs), atol=1e-4), i
        assert torch.allclose(out.token_values[i, :n], torch.tensor(g.token_values), atol=1e-4), i
        assert float(out.mask[i].sum()) == n
    # the step value is the value at the last prompt token = the first token value
    with torch.no_grad():
        sv = pol.score(prompts, [g.response_ids for g in gens], values="step").step_values
    assert torch.allclose(sv, torch.tensor([g.token_values[0] for g in gens]), atol=1e-4)
    assert torch.allclose(pol.prompt_values(prompts), sv, atol=1e-4)


def test_sampler_is_seeded_and_respects_limits(tiny):
    lm, tok = tiny
    pol = Policy(lm, tok, critic="none")
    sampler = Sampler(pol)
    prompts = [[5, 6, 7, 8], [5, 6, 9]]
    a = sampler.generate(prompts, max_new_tokens=7, generator=torch.Generator().manual_seed(3))
    b = sampler.generate(prompts, max_new_tokens=7, generator=torch.Generator().manual_seed(3))
    assert [g.response_ids for g in a] == [g.response_ids for g in b]
    assert all(1 <= len(g.response_ids) <= 7 for g in a)
    assert all(g.stop_reason in ("eos", "length", "stop_string") for g in a)
    greedy = sampler.generate(prompts, max_new_tokens=5, greedy=True)
    with torch.no_grad():
        ids, att, pos, rid, rmask = pad_steps([prompts[0]], [greedy[0].response_ids], pol.pad_id)
        logits = lm(input_ids=ids, attention_mask=att).logits[0]
    p = len(prompts[0])
    assert logits[p - 1:p - 1 + len(greedy[0].response_ids)].argmax(-1).tolist() == greedy[0].response_ids


def test_stop_string_ends_the_step(tiny):
    lm, tok = tiny
    pol = Policy(lm, tok, critic="none")
    # a stop string that every non-empty decode contains stops after one token
    sampler = Sampler(pol, stop_strings=("",), eos_ids=[])
    assert sampler.stop_strings == ()
    # stop on a token the model is forced to emit: make the LM head pick token of "</tool_call>"
    stop_id = tok("</tool_call>", add_special_tokens=False)["input_ids"]
    assert len(stop_id) == 1
    sampler = Sampler(pol, stop_strings=("</tool_call>",), eos_ids=[])
    head = pol.lm_head
    saved = head.weight.data.clone()
    try:
        head.weight.data.zero_()
        head.weight.data[stop_id[0]] = 1.0  # every hidden state now prefers the stop token (mostly)
        gens = sampler.generate([[5, 6, 7]], max_new_tokens=30, greedy=True)
    finally:
        head.weight.data.copy_(saved)
    assert gens[0].stop_reason == "stop_string"
    assert gens[0].text.endswith("</tool_call>")


def test_inverse_cdf_sampling_matches_distribution():
    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([[0.1, 0.6, 0.3]]).repeat(4000, 1)
    toks = sample_inverse_cdf(probs, g)
    freq = torch.bincount(toks, minlength=3).float() / len(toks)
    assert torch.allclose(freq, probs[0], atol=0.03)


def _assert_teacher_forced_match(pol, prompts, gens):
    """The sampler's log-probs and step values equal a teacher-forced pass of the same ids."""
    with torch.no_grad():
        ref = pol.score(prompts, [g.response_ids for g in gens], values="step")
    for i, g in enumerate(gens):
        n = len(g.response_ids)
        assert torch.allclose(ref.logprobs[i, :n], torch.tensor(g.logprobs), atol=1e-4), i
        assert abs(float(ref.step_values[i]) - g.step_value) < 1e-4, i


def test_session_cache_reuses_the_previous_step_and_keeps_logprobs_exact(tiny):
    lm, tok = tiny
    pol = Policy(lm, tok, critic="shared", temperature=0.9)
    sampler = Sampler(pol, stop_strings=("</tool_call>",), min_reuse=4)
    first = [tok(t, add_special_tokens=False)["input_ids"] for t in _prompts(tok)]
    keys = ["ep0", "ep1", "ep2"]
    g = torch.Generator().manual_seed(2)
    a = sampler.generate(first, max_new_tokens=10, generator=g, sessions=keys, values="step")
    assert sampler.num_sessions == 3
    # step 2 prompts: previous prompt + response + a new observation; one row diverges early
    obs = tok(" Observation: 42 units.", add_special_tokens=False)["input_ids"]
    second = [first[0] + a[0].response_ids + obs, first[1] + a[1].response_ids[:2] + obs, first[0][:3] + obs]
    before = (sampler.reused_tokens, sampler.prefilled_tokens)
    b = sampler.generate(second, max_new_tokens=10, generator=g, sessions=keys, values="step")
    reused = sampler.reused_tokens - before[0]
    prefilled = sampler.prefilled_tokens - before[1]
    assert reused + prefilled == sum(len(p) for p in second)
    # rows 0 and 1 reuse their whole cached sequence; row 2 has under min_reuse tokens in common
    assert reused >= len(first[0]) + len(first[1])
    assert prefilled <= len(second[2]) + 2 * len(obs) + 2
    _assert_teacher_forced_match(pol, second, b)
    sampler.end_session("ep0")
    assert sampler.num_sessions == 2
    sampler.reset_sessions()
    assert sampler.num_sessions == 0


def test_session_cache_is_dropped_when_the_weights_change(tiny):
    lm, tok = tiny
    pol = Policy(copy_lm(lm), tok, critic="none")
    sampler = Sampler(pol, min_reuse=2)
    prompt = [[5, 6, 7, 8, 9, 10]]
    a = sampler.generate(prompt, max_new_tokens=4, greedy=True, sessions=["k"])
    nxt = [prompt[0] + a[0].response_ids + [11, 12]]
    with torch.no_grad():
        for p in pol.lm.parameters():
            p.mul_(1.01)  # an in-place update, as an optimizer step does
    before = sampler.reused_tokens
    b = sampler.generate(nxt, max_new_tokens=4, greedy=True, sessions=["k"])
    assert sampler.reused_tokens == before  # stale states are not used
    with torch.no_grad():
        out = pol.score(nxt, [b[0].response_ids])
    assert torch.allclose(out.logprobs[0, : len(b[0].logprobs)], torch.tensor(b[0].logprobs), atol=1e-4)


def test_sessions_must_be_one_distinct_key_per_prompt(tiny):
    from stepgym.errors import InvalidArgument

    lm, tok = tiny
    sampler = Sampler(Policy(lm, tok, critic="none"))
    with pytest.raises(InvalidArgument, match="distinct key"):
        sampler.generate([[1, 2], [3, 4]], max_new_tokens=2, sessions=["a", "a"])
    with pytest.raises(InvalidArgument, match="distinct key"):
        sampler.generate([[1, 2], [3, 4]], max_new_tokens=2, sessions=["a"])


def copy_lm(lm):
    return copy.deepcopy(lm)


def test_a_new_long_prompt_among_cached_rows_is_prefilled_apart_and_stays_exact(tiny):
    lm, tok = tiny
    pol = Policy(lm, tok, critic="shared")
    sampler = Sampler(pol, min_reuse=4)
    g = torch.Generator().manual_seed(4)
    short = [[5 + i, 6, 7, 8, 9, 10, 11, 12] for i in range(3)]
    first = sampler.generate(short, max_new_tokens=5, generator=g, sessions=[0, 1, 2])
    # rows 0-2 continue (a few new tokens each); row 3 is a new episode with a long prompt
    nxt = [p + f.response_ids + [13, 14] for p, f in zip(short, first)]
    nxt.append(list(range(20, 120)))
    assert prefill_groups([2, 2, 2, 100]) == [[0, 1, 2], [3]]
    assert prefill_groups([50, 52, 49, 51]) == [[0, 1, 2, 3]]
    before = sampler.prefilled_tokens
    out = sampler.generate(nxt, max_new_tokens=6, generator=g, sessions=[0, 1, 2, 3], values="step")
    assert sampler.prefilled_tokens - before <= 100 + 3 * 8  # nobody padded to the long row
    _assert_teacher_forced_match(pol, nxt, out)
    # greedy output does not depend on how the rows were grouped
    sampler.reset_sessions()
    plain = Sampler(pol, share_prefix=False).generate(nxt, max_new_tokens=6, greedy=True)
    sampler.generate(short, max_new_tokens=5, generator=torch.Generator().manual_seed(4), sessions=[0, 1, 2])
    grouped = sampler.generate(nxt, max_new_tokens=6, greedy=True, sessions=[0, 1, 2, 3])
    assert [x.response_ids for x in grouped] == [x.response_ids for x in plain]


# -- prompt-lookup speculative decoding ------------------------------------------------------
def test_draft_copies_what_followed_the_latest_match():
    ctx = [1, 2, 3, 4, 9, 1, 2, 3, 5, 6, 7, 2, 3]
    # last 3-gram (7, 2, 3) never occurred before; last 2-gram (2, 3) last occurred at 6..7
    assert prompt_lookup_draft(ctx, 4) == [5, 6, 7, 2]
    assert prompt_lookup_draft(ctx, 2) == [5, 6]
    assert prompt_lookup_draft([1, 2, 3, 4, 1, 2, 3], 3) == [4, 1, 2]  # the 3-gram wins
    assert prompt_lookup_draft([1, 2, 3, 4], 3) == []  # no earlier occurrence
    assert prompt_lookup_draft(ctx, 0) == []


def _repetitive_prompts(tok):
    texts = ["Task: population of Belxo? Belxo population Belxo population Belxo",
             "abc abc abc abc abc abc", "lookup Tesru founded lookup Tesru founded lookup"]
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_speculation_keeps_greedy_output_and_log_probs(tiny):
    lm, tok = tiny
    pol = Policy(lm, tok, critic="shared", temperature=0.8)
    prompts = _repetitive_prompts(tok)
    plain = Sampler(pol, stop_strings=("</tool_call>",)).generate(prompts, max_new_tokens=24, greedy=True,
                                                                   values="token")
    spec = Sampler(pol, stop_strings=("</tool_call>",), speculate=4)
    fast = spec.generate(prompts, max_new_tokens=24, greedy=True, values="token")
    assert spec.accepted_tokens > 0  # drafts were proposed and some were right
    for a, b in zip(plain, fast):
        assert a.response_ids == b.response_ids and a.stop_reason == b.stop_reason
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
        assert a.token_values == pytest.approx(b.token_values, abs=1e-4)


def test_speculative_samples_have_exact_log_probs_and_values(tiny, monkeypatch):
    lm, tok = tiny
    pol = Policy(lm, tok, critic="shared", temperature=0.7)
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in _prompts(tok)]
    sampler = Sampler(pol, speculate=3)
    # always draft the same token, so the accept / reject / bonus paths all run
    monkeypatch.setattr(speculative, "prompt_lookup_draft", lambda ctx, k, **kw: [ctx[-1]] * k)
    gens = sampler.generate(prompts, max_new_tokens=12, generator=torch.Generator().manual_seed(2), values="token")
    assert sampler.drafted_tokens > 0
    with torch.no_grad():
        out = pol.score(prompts, [g.response_ids for g in gens], values="token")
    for i, g in enumerate(gens):
        n = len(g.response_ids)
        assert n == 12 or g.stop_reason != "length"
        assert torch.allclose(out.logprobs[i, :n], torch.tensor(g.logprobs), atol=1e-4), i
        assert torch.allclose(out.token_values[i, :n], torch.tensor(g.token_values), atol=1e-4), i


def test_speculative_sampling_keeps_the_distribution(tiny, monkeypatch):
    """With a fixed draft token X, P(token 2 = X) and P(token 3 = X) match plain sampling.

    Keeping a draft with probability p(X) is only exact if a rejection then samples from p
    with X removed; without that, X would come out with probability p + (1 - p) p.
    """
    lm, tok = tiny
    # a low temperature makes the random tiny model's next token likely but not certain
    pol = Policy(lm, tok, critic="none", temperature=0.1)
    prompt = tok("Task: What is the population of Belxo?", add_special_tokens=False)["input_ids"]
    N = 1500
    plain = Sampler(pol, share_prefix=True, eos_ids=[]).generate([prompt] * N, max_new_tokens=3,
                                                                 generator=torch.Generator().manual_seed(0))
    second = [g.response_ids[1] for g in plain]
    X = max(set(second), key=second.count)
    assert 0.15 < second.count(X) / N < 0.85  # else the check below could not tell the difference
    monkeypatch.setattr(speculative, "prompt_lookup_draft", lambda ctx, k, **kw: [X] * k)
    spec = Sampler(pol, share_prefix=True, eos_ids=[], speculate=2)
    fast = spec.generate([prompt] * N, max_new_tokens=3, generator=torch.Generator().manual_seed(1))
    assert spec.accepted_tokens > 0 and spec.accepted_tokens < spec.drafted_tokens
    for pos in (1, 2):
        f_plain = sum(g.response_ids[pos] == X for g in plain) / N
        f_spec = sum(g.response_ids[pos] == X for g in fast) / N
        sd = (max(f_plain * (1 - f_plain), 0.01) * 2 / N) ** 0.5
        assert abs(f_spec - f_plain) < 4.5 * sd, (pos, f_plain, f_spec)
    first = [g.response_ids[0] for g in plain]
    assert abs(first.count(X) - [g.response_ids[0] for g in fast].count(X)) / N < 0.06


def test_speculation_is_refused_below_zero(tiny):
    lm, tok = tiny
    with pytest.raises(Exception, match="speculate"):
        Sampler(Policy(lm, tok, critic="none"), speculate=-1)
