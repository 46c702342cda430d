"""The decode step shared by plain and speculative decoding.

* :class:`SamplingParams` turns logits into a :class:`TokenDist` (the tempered policy's
  log-probs, and the distribution tokens are drawn from: top-p filtered, or none for greedy).
* :class:`TokenDist` draws one token per row and reads its log-prob.
* :class:`StopRule` says why a response ends (end-of-turn token, stop string, length).
* :class:`DecodeState` holds one :meth:`~steppo.sampling.Sampler.generate` call in progress:
  every row's output ids, log-probs, values and stop reason, and the batch of rows still
  decoding (their KV cache, attention mask, positions and the token each feeds next).
  :meth:`DecodeState.append` is the one place a token joins a response.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["SamplingParams", "TokenDist", "StopRule", "DecodeState", "top_p_filter", "sample_inverse_cdf"]


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Logits with every token outside the nucleus of mass ``top_p`` set to ``-inf``.

    The token that crosses ``top_p`` is kept, so at least one token always stays.

    Example:
        >>> top_p_filter(torch.tensor([[0.0, 2.0, 1.0]]), 0.5)
        tensor([[-inf, 2., -inf]])
    """
    sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
    probs = torch.softmax(sorted_logits, dim=-1)
    cum = probs.cumsum(-1)
    remove = cum - probs > top_p  # keep the token that crosses top_p
    sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)


def sample_inverse_cdf(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One categorical draw per row from ONE uniform number per row.

    ``torch.multinomial`` on CPU draws vocabulary-sized random streams (over 100 ms per call at
    batch 16 with a 49k vocabulary); inverse-CDF sampling needs a cumsum and a binary search.

    Example:
        >>> sample_inverse_cdf(torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), None).tolist()
        [1, 2]
    """
    cdf = probs.double().cumsum(-1)
    u = torch.rand((probs.shape[0], 1), generator=generator, dtype=torch.float64, device=probs.device)
    tok = torch.searchsorted(cdf, u * cdf[:, -1:])
    return tok.squeeze(-1).clamp_(max=probs.shape[-1] - 1)


@dataclass
class TokenDist:
    """Next-token distributions over the vocabulary (last dimension) for a batch of positions.

    Attributes:
        logits: the tempered logits (``logits / temperature``); greedy takes their argmax.
        logp: log-probs of the tempered policy, the quantity the trainer recomputes.
        probs: the distribution tokens are sampled from (top-p applied); None for greedy.
    """

    logits: torch.Tensor
    logp: torch.Tensor
    probs: torch.Tensor | None

    def draw(self, generator: torch.Generator | None) -> torch.Tensor:
        """One token per row of a ``[A, V]`` distribution: the argmax, or a sample."""
        if self.probs is None:
            return self.logits.argmax(-1)
        return sample_inverse_cdf(self.probs, generator)

    def logprob(self, tokens: torch.Tensor) -> torch.Tensor:
        """The log-prob of ``tokens`` (one per row) under the tempered policy."""
        return self.logp.gather(-1, tokens[..., None]).squeeze(-1)


@dataclass
class SamplingParams:
    """How tokens are chosen.

    Args:
        temperature: log-probs are of ``softmax(logits / temperature)``.
        top_p: nucleus sampling (1 = off); it changes what is drawn, not the log-probs.
        greedy: take the argmax instead of sampling.
        generator: torch RNG for reproducible sampling.

    Example:
        >>> d = SamplingParams(temperature=0.5, greedy=True).dist(torch.tensor([[0.0, 1.0, 0.5]]))
        >>> d.draw(None).tolist(), d.probs is None
        ([1], True)
    """

    temperature: float = 1.0
    top_p: float = 1.0
    greedy: bool = False
    generator: torch.Generator | None = None

    def dist(self, logits: torch.Tensor) -> TokenDist:
        """The :class:`TokenDist` of raw LM-head ``logits`` (any leading shape)."""
        logits = logits.float() / self.temperature
        logp = torch.log_softmax(logits, dim=-1)
        if self.greedy:
            return TokenDist(logits, logp, None)
        samp = logits if self.top_p >= 1.0 else top_p_filter(logits, self.top_p)
        return TokenDist(logits, logp, torch.softmax(samp, dim=-1))


@dataclass
class StopRule:
    """When a response ends: an end-of-turn token, a stop string in its text, or the length limit.

    Args:
        eos_ids: token ids that end a turn.
        stop_strings: a response stops once its decoded text contains one (empty ones are dropped).
        tokenizer: decodes the response tail for the stop-string check.

    Example:
        >>> rule = StopRule(eos_ids=[2], stop_strings=())
        >>> rule.reason([5, 2], max_new_tokens=8), rule.reason([5, 6], 8), rule.reason([5, 6], 2)
        ('eos', None, 'length')
    """

    eos_ids: list[int]
    stop_strings: tuple[str, ...] = ()
    tokenizer: Any = None
    _tail: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.eos_ids = list(self.eos_ids)
        self.stop_strings = tuple(s for s in self.stop_strings if s)
        # Longest stop string in tokens is at most its length in characters (+2 for merges).
        self._tail = max([len(s) for s in self.stop_strings] + [1]) + 2

    def reason(self, ids: list[int], max_new_tokens: int) -> str | None:
        """Why a row whose response is ``ids`` ends now (``eos``, ``stop_string``, ``length``), or None."""
        if ids[-1] in self.eos_ids:
            return "eos"
        if self.stop_strings:
            tail = self.tokenizer.decode(ids[-self._tail:])
            if any(s in tail for s in self.stop_strings):
                return "stop_string"
        return "length" if len(ids) >= max_new_tokens else None


@dataclass
class DecodeState:
    """One generate call in progress.

    Per original row ``i`` (the order of the prompts): ``ids[i]``, ``logprobs[i]``, ``values[i]``
    and ``reasons[i]``. Per batch row ``j`` (the rows still decoding, in cache order):
    ``rows[j]`` is its original row, ``feed[j]`` the token it feeds next, and ``cache``,
    ``mask [A, W]`` and ``next_pos [A]`` are the batch's KV cache, attention mask over cache
    positions and next position ids. ``finished`` lists the batch rows that stopped since the
    last :meth:`drop_finished`. ``sessions`` are the rows' session keys (or None), ``params``
    how tokens are chosen and ``want_values`` whether values are read on the way.

    Example:
        >>> st = DecodeState([[7, 8]], max_new_tokens=2, stop=StopRule(eos_ids=[0]), rows=[0],
        ...                  mask=torch.ones(1, 2), next_pos=torch.tensor([2]))
        >>> st.append(0, 5, -0.1), st.append(0, 6, -0.2), st.ids, st.reasons, st.finished
        (False, True, [[5, 6]], ['length'], [0])
    """

    prompts: list[list[int]]
    max_new_tokens: int
    stop: StopRule
    rows: list[int]
    mask: torch.Tensor
    next_pos: torch.Tensor
    cache: Any = None
    sessions: list[Any] | None = None
    params: SamplingParams = field(default_factory=SamplingParams)
    want_values: bool = False
    ids: list[list[int]] = field(init=False)
    logprobs: list[list[float]] = field(init=False)
    values: list[list[float]] = field(init=False)
    reasons: list[str] = field(init=False)
    feed: list[int] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.prompts)
        self.ids = [[] for _ in range(n)]
        self.logprobs = [[] for _ in range(n)]
        self.values = [[] for _ in range(n)]
        self.reasons = ["length"] * n

    def append(self, j: int, tok: int, lp: float, value: float | None = None) -> bool:
        """Add one token (its log-prob, and its value when read) to batch row ``j``.

        Returns True when the row stops with this token; it is then listed in ``finished``.
        """
        row = self.rows[j]
        ids = self.ids[row]
        ids.append(tok)
        self.logprobs[row].append(lp)
        if value is not None:
            self.values[row].append(value)
        r = self.stop.reason(ids, self.max_new_tokens)
        if r is None:
            return False
        self.reasons[row] = r
        self.finished.append(j)
        return True

    def drop_finished(self) -> None:
        """Remove the finished rows from the batch (cache, mask, positions, feed)."""
        done = set(self.finished)
        self.finished = []
        keep = [j for j in range(len(self.rows)) if j not in done]
        if not keep:
            self.rows, self.feed = [], []
            return
        sel = torch.tensor(keep, device=self.mask.device)
        self.cache.batch_select_indices(sel)
        self.mask, self.next_pos = self.mask[sel], self.next_pos[sel]
        self.rows = [self.rows[j] for j in keep]
        self.feed = [self.feed[j] for j in keep]
