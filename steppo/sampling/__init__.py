"""Inference for the policy: batched step generation with KV caches and speculative decoding.

* :mod:`steppo.sampling.sampler`: :class:`Sampler` (prefill, the decode loop) and
  :class:`Generation` (one generated step).
* :mod:`steppo.sampling.decode`: the decode step shared by plain and speculative decoding
  (token distributions, sampling, the stop rule, the state of a generate call).
* :mod:`steppo.sampling.kv_cache`: the growing decode cache and per-episode session caches.
* :mod:`steppo.sampling.speculative`: prompt-lookup drafts and their acceptance.
"""

from steppo.sampling.sampler import Generation, Sampler

__all__ = ["Sampler", "Generation"]
