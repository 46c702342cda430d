"""The policy folder: what training saves (``OUT/policy``) and what ``checkpoint:`` agents load.

A policy folder is a Hugging Face model folder (``config.json``, weights, tokenizer files)
that ``AutoModelForCausalLM.from_pretrained`` loads as is, plus:

* ``steppo_config.json`` — the run's configuration (the ``extra`` dict given to
  :func:`write_policy_folder`) and, under ``"prompt"``, the :class:`PolicySettings` the
  policy was trained with: how its prompts were windowed and how its actions were decoded.
* ``value_head.pt`` and ``critic/critic_trunk.pt`` — the critic, when the trainer has one
  (written from the ``state_dicts`` argument; agents ignore them).

The weights of a model trained with frozen layers (``--train-layers K``) are two safetensors
files of one sharded checkpoint (``model.safetensors.index.json`` maps each tensor to its
file, as for any sharded Hugging Face model): :data:`FROZEN_WEIGHTS_FILE` holds the frozen
tensors, :data:`TRAINED_WEIGHTS_FILE` the trained ones. When the folder the model started
from (``base``, e.g. the warm start that ``--init`` names) has a frozen file with the same
tensors, the new folder hard-links it instead of writing the same bytes again: ``stepgym
train`` after a warm start stores the frozen layers once. Each folder stays complete
(``cp -r policy elsewhere`` copies every byte, and deleting the other folder leaves it whole);
where the file system has no hard links the file is written as usual.

The same token ids must become the same action text in training and in evaluation, or the
env sees different actions: :func:`decode_action` is that one decoding, used by the
trainer's sampler and by the model agents. It keeps special tokens (a chat model's
``<tool_call>`` may be one, and the token-in/token-out prompts of
:class:`~stepgym.prompts.ChatPromptBuilder` decode the sampled ids the same way), drops the
end-of-turn token that ends the response and cuts the text right after the first stop string.

Example:
    >>> s = PolicySettings(max_history_turns=2, stop_strings=("</tool_call>",), max_new_tokens=24)
    >>> PolicySettings.from_dict(s.to_dict()) == s
    True
    >>> s.agent_kwargs()
    {'history_turns': 2, 'history_stride': 1, 'stop': ('</tool_call>',), 'max_new_tokens': 24}
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from stepgym.errors import InvalidArgument

__all__ = [
    "CONFIG_FILE",
    "VALUE_HEAD_FILE",
    "CRITIC_TRUNK_FILE",
    "FROZEN_WEIGHTS_FILE",
    "TRAINED_WEIGHTS_FILE",
    "PolicySettings",
    "DecodedAction",
    "write_policy_folder",
    "read_policy_config",
    "read_policy_settings",
    "policy_dir",
    "end_of_turn_ids",
    "decode_response",
    "decode_action",
]

#: The settings file of a policy folder (its name is kept for folders saved by older versions).
CONFIG_FILE = "steppo_config.json"
#: Critic weights, relative to the folder (``torch.save`` of a state dict).
VALUE_HEAD_FILE = "value_head.pt"
CRITIC_TRUNK_FILE = os.path.join("critic", "critic_trunk.pt")
#: The frozen tensors of a model trained with frozen layers (shard 1 of its safetensors checkpoint).
FROZEN_WEIGHTS_FILE = "model-00001-of-00002.safetensors"
#: The trained tensors of a model trained with frozen layers (shard 2).
TRAINED_WEIGHTS_FILE = "model-00002-of-00002.safetensors"
_WEIGHTS_INDEX_FILE = "model.safetensors.index.json"

#: Tokens that end an assistant turn in common chat templates (besides the tokenizer's EOS).
_END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


@dataclass(frozen=True)
class PolicySettings:
    """How a policy's prompts were built and its actions decoded (``None``: not recorded).

    Attributes:
        max_history_turns: the prompt shows the task and at most this many past turns.
        history_stride: old turns leave this many at a time.
        max_prompt_tokens: the token budget of a prompt.
        stop_strings: an action ends right after the first of these.
        max_new_tokens: tokens generated per action at most.
        temperature: the sampling temperature of training rollouts.
    """

    max_history_turns: int | None = None
    history_stride: int = 1
    max_prompt_tokens: int | None = None
    stop_strings: tuple[str, ...] | None = None
    max_new_tokens: int | None = None
    temperature: float | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> PolicySettings:
        """The settings of a training config (any object with these attribute names).

        Example:
            >>> from types import SimpleNamespace
            >>> cfg = SimpleNamespace(max_history_turns=4, history_stride=2, max_prompt_tokens=512,
            ...                       stop_strings=["</tool_call>"], max_new_tokens=64)
            >>> PolicySettings.from_config(cfg).stop_strings
            ('</tool_call>',)
        """
        values = {f.name: getattr(cfg, f.name, None) for f in fields(cls)}
        if values["history_stride"] is None:
            values["history_stride"] = 1
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicySettings:
        """Read the ``"prompt"`` entry of :data:`CONFIG_FILE`; wrong types read as not recorded."""

        def num(key: str, kind: type) -> Any:
            v = data.get(key)
            return v if isinstance(v, kind) and not isinstance(v, bool) else None

        stops = data.get("stop_strings")
        stride = num("history_stride", int)
        temp = data.get("temperature")
        return cls(
            max_history_turns=num("max_history_turns", int),
            history_stride=stride if stride is not None else 1,
            max_prompt_tokens=num("max_prompt_tokens", int),
            stop_strings=tuple(str(s) for s in stops) if isinstance(stops, (list, tuple)) else None,
            max_new_tokens=num("max_new_tokens", int),
            temperature=float(temp) if isinstance(temp, (int, float)) and not isinstance(temp, bool) else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``"prompt"`` entry of :data:`CONFIG_FILE` (recorded settings only)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None:
                out[f.name] = list(v) if f.name == "stop_strings" else v
        return out

    def agent_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~stepgym.agents.TransformersAgent` that reproduce training."""
        out: dict[str, Any] = {}
        if self.max_history_turns is not None:
            out["history_turns"] = self.max_history_turns
            out["history_stride"] = self.history_stride
        if self.stop_strings is not None:
            out["stop"] = tuple(self.stop_strings)
        if self.max_new_tokens is not None:
            out["max_new_tokens"] = self.max_new_tokens
        return out


def policy_dir(path: str | os.PathLike[str]) -> str:
    """The policy folder of ``path``: ``path/policy`` for a run's output folder, else ``path``.

    Example:
        >>> policy_dir("/nonexistent/run")
        '/nonexistent/run'
    """
    root = os.fspath(path)
    sub = os.path.join(root, "policy")
    if not os.path.isfile(os.path.join(root, "config.json")) and os.path.isfile(os.path.join(sub, "config.json")):
        return sub
    return root


def resolve_checkpoint(path: str | os.PathLike[str]) -> str:
    """The model folder of a training run (``DIR/policy/``) or DIR itself if it is a saved model.

    A local path is never taken for a Hugging Face id: one that does not exist is an error.

    Example:
        >>> resolve_checkpoint("runs/no-such-run")
        Traceback (most recent call last):
        ...
        stepgym.errors.InvalidArgument: checkpoint directory 'runs/no-such-run' does not exist; pass the --out directory of a training run
    """
    root = os.fspath(path)
    for cand in (os.path.join(root, "policy"), root):
        if os.path.isfile(os.path.join(cand, "config.json")):
            return cand
    if not os.path.exists(root):
        raise InvalidArgument(
            f"checkpoint directory {root!r} does not exist; pass the --out directory of a training run"
        )
    raise InvalidArgument(
        f"{root!r} is not a checkpoint: expected {os.path.join(root, 'policy', 'config.json')} "
        f"(a training run directory) or {os.path.join(root, 'config.json')} (a save_pretrained model directory)"
    )


def write_policy_folder(
    path: str | os.PathLike[str],
    model: Any,
    tokenizer: Any,
    settings: PolicySettings | None = None,
    *,
    extra: Mapping[str, Any] | None = None,
    state_dicts: Mapping[str, Any] | None = None,
    base: str | os.PathLike[str] | None = None,
) -> str:
    """Write a policy folder at ``path`` atomically: into ``path.tmp``, then swapped in.

    A reader never sees a half-written folder, and a run killed while writing leaves the
    previous folder in place (or at ``path.old`` during the swap, removed by the next write).

    Args:
        path: the folder to (re)write.
        model: a Hugging Face causal LM; a peft model has its adapters merged into a copy
            first, so the folder loads with no peft installed.
        tokenizer: its tokenizer.
        settings: prompt and decoding settings, saved under ``"prompt"`` in :data:`CONFIG_FILE`.
        extra: the rest of :data:`CONFIG_FILE` (e.g. the run's configuration).
        state_dicts: more files, ``{relative path: state dict}``, written with ``torch.save``
            (the trainer's :data:`VALUE_HEAD_FILE` and :data:`CRITIC_TRUNK_FILE`).
        base: the policy folder (or run folder) the model started from: a frozen-weights
            file there holding exactly the model's frozen tensors is hard-linked, not rewritten.

    Returns:
        ``path`` as a string.

    Example:
        >>> import tempfile
        >>> from stepgym.models import load_model
        >>> lm, tok = load_model("tiny")
        >>> folder = write_policy_folder(tempfile.mkdtemp() + "/policy", lm, tok, PolicySettings(max_history_turns=3))
        >>> read_policy_settings(folder).max_history_turns
        3
    """
    final = os.fspath(path)
    tmp, old = final + ".tmp", final + ".old"
    if os.path.isdir(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    if hasattr(model, "merge_and_unload"):
        model = copy.deepcopy(model).merge_and_unload()
    with _quiet_transformers():  # no per-save "Writing model shards" bar in the middle of a run
        model.save_pretrained(tmp)
    if hasattr(model, "named_parameters"):
        _split_frozen_weights(tmp, {n for n, p in model.named_parameters() if p.requires_grad}, base)
    tokenizer.save_pretrained(tmp)
    if state_dicts:
        import torch

        for rel, state in state_dicts.items():
            target = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            torch.save(state, target)
    if extra is not None or settings is not None:
        config = dict(extra or {})
        if settings is not None:
            config["prompt"] = settings.to_dict()
        with open(os.path.join(tmp, CONFIG_FILE), "w") as fh:
            json.dump(config, fh, indent=2, default=str)
    if os.path.isdir(old):
        # left by a write killed inside the rmtree below: the swap needs the name free
        shutil.rmtree(old)
    if os.path.isdir(final):
        os.replace(final, old)
    os.replace(tmp, final)
    if os.path.isdir(old):
        shutil.rmtree(old)
    return final


def _split_frozen_weights(folder: str, trainable: set[str], base: str | os.PathLike[str] | None) -> None:
    """Split ``folder/model.safetensors`` into the frozen and the trained tensors (see the module docstring).

    A model with no frozen or no trained tensor, or one the writer already sharded, is left as it is.
    """
    single = os.path.join(folder, "model.safetensors")
    if not trainable or not os.path.isfile(single):
        return
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(single, framework="pt") as fh:
        metadata = fh.metadata() or {}
        keys = list(fh.keys())
        if all(k in trainable for k in keys) or not any(k in trainable for k in keys):
            return
        shards = {
            FROZEN_WEIGHTS_FILE: {k: fh.get_tensor(k) for k in keys if k not in trainable},
            TRAINED_WEIGHTS_FILE: {k: fh.get_tensor(k) for k in keys if k in trainable},
        }
    frozen_target = os.path.join(folder, FROZEN_WEIGHTS_FILE)
    source = os.path.join(policy_dir(base), FROZEN_WEIGHTS_FILE) if base is not None else None
    if not (source and _same_tensors(source, shards[FROZEN_WEIGHTS_FILE], metadata)
            and _hard_link(source, frozen_target)):
        save_file(shards[FROZEN_WEIGHTS_FILE], frozen_target, metadata=metadata)
    save_file(shards[TRAINED_WEIGHTS_FILE], os.path.join(folder, TRAINED_WEIGHTS_FILE), metadata=metadata)
    total = sum(t.numel() * t.element_size() for shard in shards.values() for t in shard.values())
    index = {"metadata": {"total_size": total},
             "weight_map": {k: name for name, shard in shards.items() for k in sorted(shard)}}
    with open(os.path.join(folder, _WEIGHTS_INDEX_FILE), "w") as fh_index:
        json.dump(index, fh_index, indent=2)
    os.remove(single)


def _same_tensors(path: str, tensors: Mapping[str, Any], metadata: Mapping[str, str]) -> bool:
    """Whether the safetensors file ``path`` holds exactly ``tensors`` (names, dtypes, values) and ``metadata``."""
    import torch
    from safetensors import safe_open

    if not os.path.isfile(path):
        return False
    try:
        with safe_open(path, framework="pt") as fh:
            if set(fh.keys()) != set(tensors) or (fh.metadata() or {}) != dict(metadata):
                return False
            for name, mine in tensors.items():
                theirs = fh.get_tensor(name)
                if theirs.dtype != mine.dtype or theirs.shape != mine.shape or not torch.equal(theirs, mine):
                    return False
    except Exception:  # an unreadable or foreign file is simply not shared  # noqa: BLE001
        return False
    return True


def _hard_link(source: str, target: str) -> bool:
    """Hard-link ``target`` to ``source``; False where the file system cannot (another device, no links)."""
    try:
        os.link(source, target)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # a stand-in model without transformers
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def read_policy_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The whole :data:`CONFIG_FILE` of a policy folder (or run folder); ``{}`` when absent or unreadable.

    Example:
        >>> read_policy_config("/nonexistent")
        {}
    """
    try:
        with open(os.path.join(policy_dir(path), CONFIG_FILE)) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_policy_settings(path: str | os.PathLike[str]) -> PolicySettings:
    """The :class:`PolicySettings` saved in a policy folder (or run folder); all ``None`` when none were.

    Example:
        >>> read_policy_settings("/nonexistent") == PolicySettings()
        True
    """
    prompt = read_policy_config(path).get("prompt")
    return PolicySettings.from_dict(prompt) if isinstance(prompt, Mapping) else PolicySettings()


def end_of_turn_ids(tokenizer: Any, model: Any = None) -> list[int]:
    """Token ids that end an assistant turn: EOS, the model's EOS ids, the chat template's end-of-turn token.

    Example:
        >>> from stepgym.models import load_tokenizer
        >>> tok = load_tokenizer("tiny")
        >>> [tok.convert_ids_to_tokens(i) for i in end_of_turn_ids(tok)]
        ['<|endoftext|>', '<|im_end|>']
    """
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen = getattr(model, "generation_config", None) if model is not None else None
    eos = getattr(gen, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(int(e) for e in eos)
    vocab = tokenizer.get_vocab()
    for tok in _END_OF_TURN_TOKENS:
        if tok in vocab:
            ids.add(int(vocab[tok]))
    return sorted(ids)


@dataclass(frozen=True)
class DecodedAction:
    """An action decoded from generated ids.

    Attributes:
        text: the action text the env receives.
        tokens: how many of the ids belong to the response (up to and including an end-of-turn token).
        stop_reason: ``"eos"`` (an end-of-turn token), ``"stop_string"`` or ``"length"``.
    """

    text: str
    tokens: int
    stop_reason: str


def _cut_at_stop(text: str, stops: Sequence[str]) -> str | None:
    """Text up to and including the earliest stop string, or None if none occurs."""
    best: int | None = None
    for s in stops:
        if not s:
            continue
        i = text.find(s)
        if i >= 0 and (best is None or i + len(s) < best):  # the earliest end wins
            best = i + len(s)
    return None if best is None else text[:best]


def decode_response(tokenizer: Any, ids: Sequence[int], *, stop_strings: Sequence[str] = (),
                    eos_ids: Sequence[int] = ()) -> DecodedAction:
    """Decode generated ids into an action, and say where and why the response ends.

    The response ends at the first id in ``eos_ids`` (that token is not part of the text);
    the text keeps special tokens and is cut right after the earliest stop string.

    Example:
        >>> from stepgym.models import load_tokenizer
        >>> tok = load_tokenizer("tiny")
        >>> ids = tok("<|im_start|>ok</tool_call> more<|im_end|>", add_special_tokens=False)["input_ids"]
        >>> d = decode_response(tok, ids, stop_strings=["</tool_call>"], eos_ids=end_of_turn_ids(tok))
        >>> d.text, d.tokens == len(ids), d.stop_reason
        ('<|im_start|>ok</tool_call>', True, 'eos')
    """
    ids = list(ids)
    end = set(int(i) for i in eos_ids)
    n, reason = len(ids), "length"
    for j, t in enumerate(ids):
        if t in end:
            n, reason = j + 1, "eos"
            break
    body = ids[: n - 1] if reason == "eos" else ids
    text = tokenizer.decode(body, skip_special_tokens=False)
    cut = _cut_at_stop(text, stop_strings)
    if cut is not None:
        text = cut
        if reason == "length":
            reason = "stop_string"
    return DecodedAction(text, n, reason)


def decode_action(tokenizer: Any, ids: Sequence[int], *, stop_strings: Sequence[str] = (),
                  eos_ids: Sequence[int] = ()) -> str:
    """The action text of generated ids (see :func:`decode_response`): the one decoding of actions.

    Example:
        >>> from stepgym.models import load_tokenizer
        >>> tok = load_tokenizer("tiny")
        >>> ids = tok('<tool_call>{"a": 1}</tool_call>\\nmore', add_special_tokens=False)["input_ids"]
        >>> decode_action(tok, ids, stop_strings=["</tool_call>"])
        '<tool_call>{"a": 1}</tool_call>'
    """
    return decode_response(tokenizer, ids, stop_strings=stop_strings, eos_ids=eos_ids).text
