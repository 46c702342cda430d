"""The model loader, re-exported from :mod:`stepgym.models` (where it lives).

``steppo.models.load_model`` and friends keep working; new code imports
:mod:`stepgym.models`.

Example:
    >>> from steppo.models import load_tokenizer
    >>> import stepgym.models
    >>> load_tokenizer is stepgym.models.load_tokenizer
    True
"""

from __future__ import annotations

from stepgym.models import *  # noqa: F403
from stepgym.models import (  # noqa: F401 - private names used by tests and tools
    BUILTIN_SPECS,
    CHAT_TEMPLATE,
    SMOLLM2_GGUF,
    SMOLLM2_PIP,
    TINY_CONFIG,
    TINY_CORPUS_FILE,
    TINY_TOKENIZER_FILE,
    TINY_VOCAB_SIZE,
    __all__,
    _atomic_dir,
    _bad_spec,
    _build_tiny_model,
    _classify,
    _distinct_pad,
    _load_tiny_tokenizer,
    _local_source,
    _materialise_smollm2,
    _resolve_dtype,
    _seeded,
    _smollm2_dir,
    _smollm2_folder,
    apply_lora,
    build_tiny_tokenizer,
    default_cache_dir,
    load_model,
    load_tokenizer,
    tiny_corpus,
)
