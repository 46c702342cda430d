"""Token-level generation for ``stepgym serve``: prompt token ids in, token ids and log-probs out.

:func:`generate_tokens` decodes a batch of :class:`TokenRequest` on a Hugging Face causal LM
with a KV cache (left padding, finished rows dropped from the batch) and returns one
:class:`TokenCompletion` per request: the sampled token ids, exactly as generated, and the
log-prob of each one. Every request keeps its own settings (temperature, top-p, length,
stop strings, RNG), so requests that arrive together share one forward pass per token.

The log-probs are those of ``softmax(logits / temperature)`` over the whole vocabulary,
computed in float32: the quantity the StepPO trainer stores for its samples and recomputes
with its own forward pass (top-p changes which tokens can be drawn, not the log-probs;
temperature 0 is greedy decoding with the log-probs of temperature 1). Tokens are drawn by
inverse-CDF sampling from one uniform number per token, as the trainer's sampler does.

``on_token(token_id, logprob)`` is called as each token is produced (streaming).

Example:
    >>> from stepgym.models import load_model
    >>> model, tok = load_model("tiny")
    >>> out = generate_tokens(model, tok, [TokenRequest([1, 2, 3], max_tokens=4, temperature=0.0)])
    >>> len(out[0].token_ids) == len(out[0].logprobs) <= 4, out[0].finish_reason in ("stop", "length")
    (True, True)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TokenRequest", "TokenCompletion", "generate_tokens", "top_p_filter"]


@dataclass
class TokenRequest:
    """One completion to generate.

    Attributes:
        prompt_ids: the prompt's token ids (at least one).
        max_tokens: tokens generated at most.
        temperature: ``<= 0`` decodes greedily.
        top_p: nucleus sampling (1 = off).
        stop: generation stops once the decoded response contains one of these.
        stop_token_ids: token ids that end generation (besides the model's end-of-turn ids).
        generator: a CPU ``torch.Generator`` (requests of one HTTP call share one); None uses
            torch's global RNG.
        top_logprobs: also return the log-probs of this many most likely tokens per position.
        skip_special_tokens: decode without special tokens when looking for stop strings.
        on_token: called with ``(token_id, logprob)`` as each token is produced.
    """

    prompt_ids: list[int]
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    generator: Any = None
    top_logprobs: int = 0
    skip_special_tokens: bool = False
    on_token: Callable[[int, float], None] | None = None


@dataclass
class TokenCompletion:
    """A generated completion: exact token ids, their log-probs, and why it ended.

    ``finish_reason`` is ``"stop"`` (an end-of-turn token, a stop token id or a stop string)
    or ``"length"``; ``stop_reason`` is, as in vLLM, the stop string or stop token id that
    ended it (None for the model's own end-of-turn token and for ``"length"``).
    """

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str = "length"
    stop_reason: str | int | None = None
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)


def top_p_filter(logits: Any, top_p: Any) -> Any:
    """Logits with every token outside the nucleus of mass ``top_p`` (per row) set to ``-inf``.

    The token that crosses ``top_p`` is kept, so at least one token always stays.

    Example:
        >>> import torch
        >>> top_p_filter(torch.tensor([[0.0, 2.0, 1.0]]), torch.tensor([0.5]))
        tensor([[-inf, 2., -inf]])
    """
    import torch

    sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
    probs = torch.softmax(sorted_logits, dim=-1)
    remove = probs.cumsum(-1) - probs > top_p[:, None]
    sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)


def _cache_kwarg(model: Any) -> str:
    # transformers >= 5.2x names the argument `cache`; older releases `past_key_values`
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _stop_reason(req: TokenRequest, ids: list[int], eos: set[int], tokenizer: Any, tail: int) -> tuple[bool, Any]:
    """(ended, stop_reason) of a response that just received its last token."""
    last = ids[-1]
    if last in req.stop_token_ids:
        return True, last
    if last in eos:
        return True, None
    if req.stop:
        text = tokenizer.decode(ids[-tail:], skip_special_tokens=req.skip_special_tokens)
        for s in req.stop:
            if s in text:
                return True, s
    return False, None


def generate_tokens(model: Any, tokenizer: Any, requests: Sequence[TokenRequest], *,
                    eos_ids: Sequence[int] = (), pad_id: int | None = None) -> list[TokenCompletion]:
    """Generate one :class:`TokenCompletion` per request, in one batch (see the module docstring).

    Args:
        model: a causal LM (``model(input_ids, attention_mask, position_ids, ...)`` with a KV cache).
        tokenizer: its tokenizer (stop strings are found in the decoded response).
        requests: what to generate.
        eos_ids: token ids that end a turn for every request.
        pad_id: the id left padding uses (default: the tokenizer's pad id, else 0).
    """
    import torch
    from transformers import DynamicCache

    if not requests:
        return []
    dev = next(model.parameters()).device
    pad = pad_id if pad_id is not None else (tokenizer.pad_token_id or 0)
    eos = set(int(i) for i in eos_ids)
    kw = _cache_kwarg(model)
    keep_last = "logits_to_keep" in inspect.signature(model.forward).parameters
    n = len(requests)
    outs = [TokenCompletion([], []) for _ in range(n)]
    tails = [max([len(s) for s in r.stop] + [1]) + 2 for r in requests]
    want_top = max(r.top_logprobs for r in requests)

    L = max(len(r.prompt_ids) for r in requests)
    ids = torch.full((n, L), pad, dtype=torch.long)
    mask = torch.zeros((n, L), dtype=torch.long)
    for i, r in enumerate(requests):
        ids[i, L - len(r.prompt_ids):] = torch.tensor(r.prompt_ids, dtype=torch.long)
        mask[i, L - len(r.prompt_ids):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    ids, mask, pos = ids.to(dev), mask.to(dev), pos.to(dev)
    cache = DynamicCache()
    extra = {"logits_to_keep": 1} if keep_last else {}
    was_training = model.training
    model.eval()
    rows = list(range(n))  # the requests still decoding, in batch order
    try:
        with torch.inference_mode():
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **{kw: cache}, **extra)
            cache = getattr(out, kw, None) or getattr(out, "past_key_values", None) or cache
            next_pos = pos[:, -1] + 1
            logits = out.logits[:, -1]
            while rows:
                reqs = [requests[i] for i in rows]
                greedy = torch.tensor([r.temperature <= 0 for r in reqs], device=dev)
                temps = torch.tensor([r.temperature if r.temperature > 0 else 1.0 for r in reqs],
                                     dtype=torch.float32, device=dev)
                x = logits.float() / temps[:, None]
                logp = torch.log_softmax(x, dim=-1)
                top_p = torch.tensor([r.top_p for r in reqs], dtype=torch.float32, device=dev)
                probs = torch.softmax(x if bool((top_p >= 1).all()) else top_p_filter(x, top_p), dim=-1)
                cdf = probs.double().cumsum(-1)
                argmax = x.argmax(-1)
                toks: list[int] = []
                for j, r in enumerate(reqs):
                    if bool(greedy[j]):
                        toks.append(int(argmax[j]))
                        continue
                    u = torch.rand((1,), generator=r.generator, dtype=torch.float64).to(dev)
                    t = int(torch.searchsorted(cdf[j], u * cdf[j, -1]).clamp(max=cdf.shape[-1] - 1))
                    toks.append(t)
                tok_t = torch.tensor(toks, device=dev)
                lps = logp.gather(-1, tok_t[:, None]).squeeze(-1).tolist()
                tops = torch.topk(logp, want_top, dim=-1) if want_top else None
                keep: list[int] = []
                for j, i in enumerate(rows):
                    r, o = requests[i], outs[i]
                    o.token_ids.append(toks[j])
                    o.logprobs.append(float(lps[j]))
                    if r.top_logprobs and tops is not None:
                        o.top_logprobs.append(list(zip(tops.indices[j, :r.top_logprobs].tolist(),
                                                       tops.values[j, :r.top_logprobs].tolist())))
                    if r.on_token is not None:
                        r.on_token(toks[j], float(lps[j]))
                    ended, why = _stop_reason(r, o.token_ids, eos, tokenizer, tails[i])
                    if ended:
                        o.finish_reason, o.stop_reason = "stop", why
                    elif len(o.token_ids) >= r.max_tokens:
                        o.finish_reason = "length"
                    else:
                        keep.append(j)
                if not keep:
                    break
                if len(keep) < len(rows):
                    sel = torch.tensor(keep, device=dev)
                    cache.batch_select_indices(sel)
                    mask, next_pos, tok_t = mask[sel], next_pos[sel], tok_t[sel]
                    rows = [rows[j] for j in keep]
                mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype, device=dev)], dim=1)
                out = model(input_ids=tok_t[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                            use_cache=True, **{kw: cache}, **extra)
                cache = getattr(out, kw, None) or getattr(out, "past_key_values", None) or cache
                next_pos = next_pos + 1
                logits = out.logits[:, -1]
    finally:
        model.train(was_training)
    return outs
