"""Agents over local Hugging Face causal LMs (torch and transformers are imported lazily)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stepgym.agents.base import BaseAgent, chat_messages
from stepgym.errors import DependencyNotInstalled, InvalidArgument, InvalidConfig
from stepgym.policy_folder import _cut_at_stop  # noqa: F401 - kept importable from here
from stepgym.policy_folder import decode_response, end_of_turn_ids, read_policy_settings, resolve_checkpoint
from stepgym.prompts import episode_chat

__all__ = ["TransformersAgent", "CheckpointAgent", "Generation", "load_causal_lm", "resolve_checkpoint"]

_TRAIN_EXTRA = 'pip install "stepgym[train]"'


@dataclass(slots=True)
class Generation:
    """One generated completion: its text and token counts, and why it stopped (``stop``/``length``)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


def _require_torch() -> Any:
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise DependencyNotInstalled("model agents (hf:, checkpoint:)", _TRAIN_EXTRA) from exc
    return torch


def load_causal_lm(spec: str, *, dtype: Any = None) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` for a spec: ``tiny``/``smollm2-135m`` (see :mod:`stepgym.models`), an HF id or a path.

    Example:
        >>> model, tok = load_causal_lm("path/to/hf_model_dir")  # doctest: +SKIP
    """
    _require_torch()
    from stepgym.models import load_model

    return load_model(spec, dtype=dtype) if dtype is not None else load_model(spec)


_DTYPES = ("float32", "bfloat16", "float16")


def place_model(model: Any, device: str | None = None, dtype: str | None = None) -> Any:
    """Move ``model`` to ``device`` (``"auto"``: cuda when available) and cast it to ``dtype`` (a name).

    ``None`` leaves either as it is. A CUDA device on a machine without one is a clear error.

    Example:
        >>> import torch
        >>> m = place_model(torch.nn.Linear(2, 2), "cpu", "bfloat16")
        >>> m.weight.dtype, m.weight.device.type
        (torch.bfloat16, 'cpu')
    """
    torch = _require_torch()
    if dtype is not None and dtype not in _DTYPES:
        raise InvalidConfig("dtype", dtype, "one of " + ", ".join(repr(d) for d in _DTYPES))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device is not None and device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidConfig("device", device, "'cpu' or 'auto' (no CUDA device is available here)")
    if device is not None or dtype is not None:
        model.to(device=device, dtype=None if dtype is None else getattr(torch, dtype))
    return model


class TransformersAgent(BaseAgent):
    """A local causal LM as an agent: chat template, sampling settings, batched generation.

    The agent keeps the chat of each episode (``history=True``): the first observation
    and each later one are user turns, its own actions assistant turns. When a wrapper
    already renders the chat (``info["messages"]``), that chat is used instead. Prompts
    longer than ``max_prompt_tokens`` keep their most recent tokens.

    Args:
        model: a ``PreTrainedModel``, or a spec for :func:`load_causal_lm`
            (``tiny``, ``smollm2-135m``, an HF id or a local directory).
        tokenizer: the tokenizer (loaded with the model when ``model`` is a spec).
        max_new_tokens: tokens generated per action at most.
        temperature: sampling temperature; ``0`` means greedy decoding.
        top_p / top_k: nucleus and top-k sampling (``top_k=0`` disables it).
        batch_size: observations generated together in one ``generate`` call.
        system_prompt: optional system message put first in every chat.
        history: keep the chat of each episode (else each prompt is the latest observation only).
        history_turns: show only the task and the last this many (action, observation) turns,
            as :func:`~stepgym.prompts.windowed_chat` renders them (``None``: the whole chat).
        history_stride: with ``history_turns``, old turns leave this many at a time.
        stop: strings that end an action (cut right after them), e.g. ``"</tool_call>"``.
        max_prompt_tokens: prompt tokens kept at most (default: context size minus
            ``max_new_tokens``).
        seed: seeds torch's RNG once, for reproducible sampling.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` (cuda when available)...; default: where the
            model already is.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``: cast the weights (inference only);
            default: as loaded (float32).
        name: label in tables (default ``hf:<name of the model>``).

    Example:
        >>> agent = TransformersAgent("tiny", max_new_tokens=16)  # doctest: +SKIP
        >>> agent.act("What is 2+2?", {})  # doctest: +SKIP
    """

    counts_tokens = True

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.7,
        top_p: float = 1.0,
        top_k: int = 0,
        batch_size: int = 8,
        system_prompt: str | None = None,
        history: bool = True,
        history_turns: int | None = None,
        history_stride: int = 1,
        stop: Sequence[str] = ("</tool_call>",),
        max_prompt_tokens: int | None = None,
        seed: int | None = None,
        device: str | None = None,
        dtype: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        torch = _require_torch()
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise InvalidConfig("max_new_tokens", max_new_tokens, "a positive int")
        if not 0.0 <= float(temperature) <= 10.0:
            raise InvalidConfig("temperature", temperature, "a float in [0, 10] (0 = greedy)")
        if not 0.0 < float(top_p) <= 1.0:
            raise InvalidConfig("top_p", top_p, "a float in (0, 1]")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidConfig("batch_size", batch_size, "a positive int")
        if history_turns is not None and (not isinstance(history_turns, int) or history_turns < 0):
            raise InvalidConfig("history_turns", history_turns, "None (the whole chat) or an int >= 0")
        if not isinstance(history_stride, int) or history_stride < 1 or (
            history_turns is not None and history_stride > max(1, history_turns)
        ):
            raise InvalidConfig("history_stride", history_stride, f"an int from 1 to history_turns={history_turns}")
        label = None
        if isinstance(model, (str, os.PathLike)):
            label = f"hf:{os.fspath(model)}"
            model, loaded_tok = load_causal_lm(os.fspath(model))
            tokenizer = tokenizer if tokenizer is not None else loaded_tok
        if tokenizer is None:
            raise InvalidArgument("TransformersAgent needs the tokenizer when given a model object")
        self.model = model
        self.tokenizer = tokenizer
        place_model(self.model, device, dtype)
        self.model.eval()
        self.max_new_tokens = max_new_tokens
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.top_k = int(top_k)
        self.batch_size = batch_size
        self.system_prompt = system_prompt
        self.history = history
        self.history_turns = history_turns
        self.history_stride = history_stride
        self.stop = tuple(stop)
        ctx = getattr(getattr(model, "config", None), "max_position_embeddings", None) or 2048
        self.max_prompt_tokens = max_prompt_tokens or max(16, int(ctx) - max_new_tokens)
        self.name = (
            name or label or f"hf:{getattr(getattr(model, 'config', None), 'name_or_path', '') or type(model).__name__}"
        )
        if self.tokenizer.pad_token_id is None:
            # Batched generation pads on the left; a missing pad token reuses EOS (common for causal LMs).
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if seed is not None:
            torch.manual_seed(seed)

    # -- prompts ------------------------------------------------------------------------------
    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        """The prompt text for a chat: the tokenizer's chat template, or plain turns if it has none."""
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": True}
            if tools:
                try:
                    return tok.apply_chat_template(messages, tools=tools, **kwargs)
                except Exception:  # templates without tool support: tools are in the text anyway
                    pass
            return tok.apply_chat_template(messages, **kwargs)
        parts = [f"{m.get('role', 'user')}: {m.get('content', '')}" for m in messages]
        return "\n".join(parts) + "\nassistant:"

    # -- generation ---------------------------------------------------------------------------
    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: Sequence[str] | None = None,
        num_return_sequences: int = 1,
    ) -> list[Generation]:
        """Generate one completion per prompt text (``num_return_sequences`` per prompt, in order)."""
        torch = _require_torch()
        tok = self.tokenizer
        max_new = int(max_new_tokens or self.max_new_tokens)
        temp = self.temperature if temperature is None else float(temperature)
        tp = self.top_p if top_p is None else float(top_p)
        stops = self.stop if stop is None else tuple(stop)
        out: list[Generation] = []
        device = next(self.model.parameters()).device
        eos_ids = end_of_turn_ids(tok, self.model)
        for start in range(0, len(prompts), self.batch_size):
            chunk = list(prompts[start : start + self.batch_size])
            old_side, old_trunc = tok.padding_side, getattr(tok, "truncation_side", "right")
            tok.padding_side = "left"
            tok.truncation_side = "left"  # keep the latest turns when a prompt is too long
            try:
                enc = tok(
                    chunk,
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=self.max_prompt_tokens,
                    add_special_tokens=False,
                )
            finally:
                tok.padding_side, tok.truncation_side = old_side, old_trunc
            enc = {k: v.to(device) for k, v in enc.items()}
            gen_kwargs: dict[str, Any] = {
                "max_new_tokens": max_new,
                "pad_token_id": tok.pad_token_id,
                "num_return_sequences": num_return_sequences,
            }
            if temp > 0:
                gen_kwargs.update(do_sample=True, temperature=temp, top_p=tp, top_k=self.top_k or None)
            else:
                gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            if eos_ids:
                gen_kwargs["eos_token_id"] = eos_ids
            with torch.inference_mode():
                seqs = self.model.generate(**enc, **gen_kwargs)
            plen = enc["input_ids"].shape[1]
            prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
            for row in range(seqs.shape[0]):
                # the trainer's decoding: the env sees the text the policy was trained on
                d = decode_response(tok, seqs[row, plen:].tolist(), stop_strings=stops, eos_ids=eos_ids)
                finish = "length" if d.stop_reason == "length" else "stop"
                out.append(Generation(d.text, int(prompt_lens[row // num_return_sequences]), d.tokens, finish))
        return out

    def _act_batch(self, observations: list[str], infos: list[dict[str, Any]], slots: list[int]) -> list[str]:
        chats = []
        for obs, info, slot in zip(observations, infos, slots, strict=True):
            memory = self.memory.setdefault(slot, []) if self.history else []
            chat = chat_messages(memory, obs, info, self.system_prompt)
            if self.history and self.history_turns is not None and "messages" not in info:
                # the window a trained policy saw: task + the last turns
                users = [m["content"] for m in memory if m["role"] == "user"]
                actions = [m["content"] for m in memory if m["role"] == "assistant"]
                chat = episode_chat(users, actions, self.history_turns, self.history_stride, self.system_prompt)
            chats.append(chat)
        gens = self.generate([self.render(c) for c in chats])
        self.last_token_counts = [g.completion_tokens for g in gens]
        actions = [g.text for g in gens]
        if self.history:
            for slot, info, action in zip(slots, infos, actions, strict=True):
                if "messages" not in info:
                    self.memory[slot].append({"role": "assistant", "content": action})
        return actions


class CheckpointAgent(TransformersAgent):
    """The policy of a training run (``DIR/policy/``, see :mod:`stepgym.policy_folder`), or any ``save_pretrained`` directory.

    Args:
        path: the ``--out`` directory of ``stepgym train`` (its ``policy/`` subdirectory is
            loaded) or a model directory with ``config.json``.
        **kwargs: generation settings, as for :class:`TransformersAgent`.

    Example:
        >>> agent = CheckpointAgent("runs/tooluse", temperature=0.0)  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str], **kwargs: Any) -> None:
        _require_torch()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model_dir = resolve_checkpoint(path)
        # prompt and generation settings the policy was trained with (explicit arguments win)
        for k, v in _trained_prompt_settings(model_dir).items():
            kwargs.setdefault(k, v)
        tok = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        kwargs.setdefault("name", f"checkpoint:{os.fspath(path)}")
        super().__init__(model, tok, **kwargs)
        self.model_dir = model_dir


def _trained_prompt_settings(model_dir: str) -> dict[str, Any]:
    """``history_turns``, ``history_stride``, ``stop`` and ``max_new_tokens`` saved in a policy folder."""
    return read_policy_settings(model_dir).agent_kwargs()
