"""Prompt-lookup speculative decoding.

A draft is what followed the latest earlier occurrence of the context's last tokens (tool
calls repeat the prompt's names and JSON). Each forward pass feeds every row's last token
plus its draft. Draft token i is kept with probability p(d_i) under the sampling
distribution (greedy: when it is the argmax); at the first rejection the row's next token is
drawn from p with d_i removed, and after a fully accepted draft from the distribution that
follows it. This is speculative sampling with a deterministic draft, so every token has
exactly the distribution of plain decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from steppo.sampling.decode import DecodeState, TokenDist

__all__ = ["Drafts", "Verdict", "prompt_lookup_draft", "propose", "verify", "accept", "after_drafts",
           "append_accepted"]


def prompt_lookup_draft(ctx: list[int], k: int, min_ngram: int = 2, max_ngram: int = 3) -> list[int]:
    """Up to ``k`` tokens that followed the latest earlier occurrence of ``ctx``'s last n-gram.

    The longest n-gram (``max_ngram`` down to ``min_ngram``) with an earlier occurrence wins.

    Example:
        >>> prompt_lookup_draft([1, 2, 3, 4, 9, 1, 2, 3, 5, 6, 7, 2, 3], 4)
        [5, 6, 7, 2]
        >>> prompt_lookup_draft([1, 2, 3, 4], 3)
        []
    """
    L = len(ctx)
    if k <= 0:
        return []
    for n in range(min(max_ngram, L - 1), min_ngram - 1, -1):
        tail = ctx[L - n:]
        first = tail[0]
        for s0 in range(L - n - 1, -1, -1):
            if ctx[s0] == first and ctx[s0:s0 + n] == tail:
                return ctx[s0 + n:s0 + n + k]
    return []


@dataclass
class Drafts:
    """The draft of each batch row, and the same padded into ``padded [A, D]``."""

    tokens: list[list[int]]
    padded: torch.Tensor

    @property
    def width(self) -> int:
        """``D``: the longest draft (0 when no row has one)."""
        return self.padded.shape[1]


def propose(st: DecodeState, k: int, pad_id: int) -> Drafts:
    """A draft of up to ``k`` tokens for each row of the batch, never past its token limit."""
    tokens = [prompt_lookup_draft(st.prompts[row] + st.ids[row], min(k, st.max_new_tokens - len(st.ids[row]) - 1))
              for row in st.rows]
    D = max(len(d) for d in tokens)
    padded = torch.full((len(tokens), D), pad_id, dtype=torch.long)
    for j, d in enumerate(tokens):
        if d:
            padded[j, :len(d)] = torch.tensor(d, dtype=torch.long)
    return Drafts(tokens, padded)


def accept(dist: TokenDist, drafts: Drafts, generator: torch.Generator | None) -> list[int]:
    """How many leading draft tokens each row keeps.

    Args:
        dist: ``[A, D + 1, V]``; column ``c`` is the distribution after fed column ``c``
            (the row's last token, then its draft).
        drafts: the drafts that were fed.
        generator: RNG of the acceptance draws (sampling only).
    """
    A, D = drafts.padded.shape
    dr = drafts.padded.to(dist.logp.device)
    if dist.probs is None:
        ok = dist.logits[:, :D].argmax(-1) == dr
    else:
        p_d = dist.probs[:, :D].gather(-1, dr[..., None]).squeeze(-1).double()
        u = torch.rand((A, D), generator=generator, dtype=torch.float64, device=dr.device)
        ok = u < p_d
    ok_l = ok.tolist()
    n_acc = [0] * A
    for j, d in enumerate(drafts.tokens):
        while n_acc[j] < len(d) and ok_l[j][n_acc[j]]:
            n_acc[j] += 1
    return n_acc


def after_drafts(dist: TokenDist, drafts: Drafts, n_acc: list[int]) -> TokenDist:
    """Each row's ``[A, V]`` distribution of the token after its accepted drafts.

    A rejected draft token is removed from the sampling distribution (which is why the
    samples keep plain decoding's distribution); the log-probs stay the policy's.
    """
    dev = dist.logp.device
    rows = torch.arange(len(n_acc), device=dev)
    cols = torch.tensor(n_acc, device=dev)
    probs = None
    if dist.probs is not None:
        probs = dist.probs[rows, cols]  # advanced indexing copies
        for j, d in enumerate(drafts.tokens):
            if n_acc[j] < len(d):
                probs[j, d[n_acc[j]]] = 0.0
    return TokenDist(dist.logits[rows, cols], dist.logp[rows, cols], probs)


@dataclass
class Verdict:
    """The outcome of one speculative pass.

    Attributes:
        n_acc: how many leading draft tokens each row keeps.
        logprobs: ``[A][D]`` log-prob of each fed draft token (the first ``n_acc[j]`` count).
        next_dist: each row's ``[A, V]`` distribution of the token after its accepted drafts.
    """

    n_acc: list[int]
    logprobs: list[list[float]]
    next_dist: TokenDist


def verify(dist: TokenDist, drafts: Drafts, generator: torch.Generator | None) -> Verdict:
    """Accept draft prefixes (:func:`accept`) and give what the next token is drawn from."""
    n_acc = accept(dist, drafts, generator)
    D = drafts.width
    lps = dist.logp[:, :D].gather(-1, drafts.padded.to(dist.logp.device)[..., None]).squeeze(-1).tolist()
    return Verdict(n_acc, lps, after_drafts(dist, drafts, n_acc))


def append_accepted(st: DecodeState, j: int, kept: list[int], lps: list[float], vals: list[float] | None,
                    D: int) -> bool:
    """Add batch row ``j``'s accepted draft tokens ``kept``; True when one of them ends the row.

    ``vals`` are the row's values after each fed column (or None). The cache positions of the
    draft tokens not kept (rejected, or after the one that ended the row) are masked out; they
    stay in the cache.
    """
    W = st.mask.shape[1]
    for i, t in enumerate(kept):
        if st.append(j, t, lps[i], vals[i] if vals is not None else None):
            st.mask[j, W - D + i + 1:] = 0
            return True
    st.mask[j, W - D + len(kept):] = 0
    return False
