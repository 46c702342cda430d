"""KV caches of the sampler: a growing decode cache and per-episode session caches.

* :func:`growing_cache` is a ``DynamicCache`` that writes decoded tokens into preallocated
  buffers instead of concatenating the whole cache at every token.
* :class:`SessionCache` keeps the KV states of each episode's last ``prompt + response``
  between generate calls, so the next step prefills only its new tokens. Everything is
  dropped as soon as the weights change.
* :func:`cache_from_sessions` lays the reused session states of a batch out as one cache.
* :func:`prefill_groups` and :func:`merge_caches` prefill rows with very different prompt
  lengths apart and join the results into one batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["SessionKV", "SessionCache", "growing_cache", "cache_from_sessions", "merge_caches", "prefill_groups",
           "common_prefix_len"]


def common_prefix_len(seqs: list[list[int]]) -> int:
    """Length of the longest prefix all ``seqs`` share.

    Example:
        >>> common_prefix_len([[1, 2, 3], [1, 2, 4], [1, 2]])
        2
    """
    if not seqs:
        return 0
    first = seqs[0]
    n = min(len(s) for s in seqs)
    k = 0
    while k < n and all(s[k] == first[k] for s in seqs):
        k += 1
    return k


@dataclass
class SessionKV:
    """The KV cache of one episode's last sequence: ``ids`` and per-layer ``[H, n, D]`` keys/values."""

    ids: list[int]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]


class SessionCache:
    """Per-session (episode) KV states kept between generate calls.

    Example:
        >>> sc = SessionCache()
        >>> sc.put("ep0", SessionKV([1, 2, 3], [torch.zeros(1, 3, 4)], [torch.zeros(1, 3, 4)]))
        >>> sc.take(["ep0", "ep1"], [[1, 2, 9, 9], [5, 6]], min_reuse=2)[0], len(sc)
        ([2, 0], 0)
    """

    def __init__(self) -> None:
        self._kv: dict[Any, SessionKV] = {}
        self._weights_version: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self._kv)

    def put(self, key: Any, kv: SessionKV) -> None:
        self._kv[key] = kv

    def end(self, key: Any) -> None:
        """Forget one session's states."""
        self._kv.pop(key, None)

    def clear(self) -> None:
        """Forget every session's states."""
        self._kv.clear()

    def check_weights(self, params: Any) -> None:
        """Drop every state when the parameters changed since the last call.

        In-place updates (optimizer steps, ``load_state_dict``) bump each tensor's version counter.
        """
        v = tuple(p._version for p in params)
        if v != self._weights_version:
            self._kv.clear()
            self._weights_version = v

    def take(self, keys: list[Any], prompts: list[list[int]],
             min_reuse: int) -> tuple[list[int], list[SessionKV | None]]:
        """Pop each key's states; returns how many leading tokens of each prompt they cover.

        A row reuses at most ``len(prompt) - 1`` tokens (the last one is fed to read the next
        token's distribution), and nothing when under ``min_reuse`` tokens are in common.
        """
        reuse = [0] * len(prompts)
        saved: list[SessionKV | None] = [None] * len(prompts)
        for i, key in enumerate(keys):
            sv = self._kv.pop(key, None)
            if sv is not None:
                c = min(common_prefix_len([sv.ids, prompts[i]]), len(prompts[i]) - 1)
                if c >= min_reuse:
                    reuse[i], saved[i] = c, sv
        return reuse, saved

    def save_rows(self, cache: Any, mask: torch.Tensor, rows_js: list[tuple[int, int]], keys: list[Any],
                  prompts: list[list[int]], out_ids: list[list[int]]) -> None:
        """Store the KV of cache rows ``j`` (original rows ``row``): prompt + the tokens fed back.

        The number of fed tokens is read from the row's attention ``mask``.
        """
        for j, row in rows_js:
            keep = mask[j].bool()
            fed = int(keep.sum()) - len(prompts[row])
            ids = list(prompts[row]) + out_ids[row][:fed]
            ks = [layer.keys[j][:, keep, :] for layer in cache.layers]
            vs = [layer.values[j][:, keep, :] for layer in cache.layers]
            if ks and ks[0].shape[-2] == len(ids):
                self._kv[keys[row]] = SessionKV(ids, ks, vs)


def growing_cache(reserve: int):
    """A ``DynamicCache`` whose layers write into preallocated buffers instead of ``torch.cat``.

    ``DynamicLayer`` concatenates the whole cache at every decoded token (quadratic copying);
    here each layer keeps a buffer with room for ``reserve`` more tokens and exposes a view.
    Falls back to a plain ``DynamicCache`` on transformers versions without cache layers.

    Example:
        >>> c = growing_cache(reserve=8)
        >>> k, v = c.update(torch.zeros(2, 1, 3, 4), torch.zeros(2, 1, 3, 4), 0)
        >>> k, v = c.update(torch.ones(2, 1, 1, 4), torch.ones(2, 1, 1, 4), 0)
        >>> tuple(k.shape), float(k[0, 0, -1, 0])
        ((2, 1, 4, 4), 1.0)
    """
    from transformers import DynamicCache

    cache = DynamicCache()
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:  # pragma: no cover - transformers < 4.56
        return cache
    if not hasattr(cache, "layer_class_to_replicate"):  # pragma: no cover
        return cache

    class _GrowLayer(DynamicLayer):
        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self._kb = self._vb = None
                self._n = 0
            k = key_states.shape[-2]
            if self._kb is None or self._n + k > self._kb.shape[-2] or self._kb.shape[0] != key_states.shape[0]:
                cap = self._n + k + reserve
                kb = key_states.new_empty(key_states.shape[:-2] + (cap, key_states.shape[-1]))
                vb = value_states.new_empty(value_states.shape[:-2] + (cap, value_states.shape[-1]))
                if self._n:
                    kb[..., : self._n, :] = self.keys
                    vb[..., : self._n, :] = self.values
                self._kb, self._vb = kb, vb
            self._kb[..., self._n:self._n + k, :] = key_states
            self._vb[..., self._n:self._n + k, :] = value_states
            self._n += k
            self.keys = self._kb[..., : self._n, :]
            self.values = self._vb[..., : self._n, :]
            return self.keys, self.values

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.is_initialized and self._n:
                self._kb = self._kb.repeat_interleave(repeats, dim=0)
                self._vb = self._vb.repeat_interleave(repeats, dim=0)
                self.keys = self._kb[..., : self._n, :]
                self.values = self._vb[..., : self._n, :]

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self.is_initialized and self._n:
                self._kb = self._kb[indices]
                self._vb = self._vb[indices]
                self.keys = self._kb[..., : self._n, :]
                self.values = self._vb[..., : self._n, :]

    cache.layer_class_to_replicate = _GrowLayer
    cache.layers = []
    return cache


def cache_from_sessions(saved: list[SessionKV | None], reuse: list[int], reserve: int):
    """A :func:`growing_cache` holding the first ``reuse[i]`` cached positions of each row's session.

    Rows are left-padded to the longest reuse ``P``: row ``i`` is ``[pad (P - c_i) | its c_i
    positions]`` (rows without a session are all padding); the caller masks the pads out.

    Example:
        >>> kv = SessionKV([1, 2, 3], [torch.ones(1, 3, 4)], [torch.ones(1, 3, 4)])
        >>> c = cache_from_sessions([kv, None], [2, 0], reserve=4)
        >>> c.layers[0].keys[:, 0, :, 0].tolist()
        [[1.0, 1.0], [0.0, 0.0]]
    """
    cache = growing_cache(reserve)
    B, P = len(saved), max(reuse)
    ref = next(sv for sv in saved if sv is not None)
    for layer in range(len(ref.keys)):
        H, _, D = ref.keys[layer].shape
        K = ref.keys[layer].new_zeros((B, H, P, D))
        V = ref.values[layer].new_zeros((B, H, P, D))
        for i, sv in enumerate(saved):
            if sv is not None:
                K[i, :, P - reuse[i]:] = sv.keys[layer][:, : reuse[i]]
                V[i, :, P - reuse[i]:] = sv.values[layer][:, : reuse[i]]
        cache.update(K, V, layer)
    return cache


def prefill_groups(rest: list[int]) -> list[list[int]]:
    """Rows in one prefill batch, or two when padding to the longest rest would waste a lot.

    ``rest[i]`` is how many prompt tokens row ``i`` still has to prefill.

    Example:
        >>> prefill_groups([2, 2, 2, 100]), prefill_groups([50, 52, 49, 51])
        ([[0, 1, 2], [3]], [[0, 1, 2, 3]])
    """
    B = len(rest)
    if B < 2:
        return [list(range(B))]
    order = sorted(range(B), key=lambda i: rest[i])
    lens = [rest[i] for i in order]
    single = B * lens[-1]
    cost, k = min((j * lens[j - 1] + (B - j) * lens[-1], j) for j in range(1, B))
    if cost > 0.6 * single:
        return [list(range(B))]
    return [order[:k], order[k:]]


def merge_caches(parts: list[tuple], reserve: int):
    """One batch from separately prefilled groups: caches and masks left-padded to one width.

    Each part is ``(last hidden state, cache, attention mask, next positions)``; so is the result.
    """
    W = max(m.shape[1] for _, _, m, _ in parts)
    cache = growing_cache(reserve)
    for layer in range(len(parts[0][1].layers)):
        ks = [nn.functional.pad(c.layers[layer].keys, (0, 0, W - m.shape[1], 0)) for _, c, m, _ in parts]
        vs = [nn.functional.pad(c.layers[layer].values, (0, 0, W - m.shape[1], 0)) for _, c, m, _ in parts]
        cache.update(torch.cat(ks), torch.cat(vs), layer)
    m = torch.cat([nn.functional.pad(m, (W - m.shape[1], 0)) for _, _, m, _ in parts])
    h = torch.cat([p[0] for p in parts])
    next_pos = torch.cat([p[3] for p in parts])
    return h, cache, m, next_pos
