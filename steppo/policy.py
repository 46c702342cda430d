"""The policy: a causal LM with a value head, a teacher-forced scorer and a KV-cache sampler.

* :class:`Policy` wraps a Hugging Face causal LM. The default critic is a linear value head
  on the policy's own trunk (``critic="shared"``, cheap on CPU); ``critic="separate"``
  copies the trunk into an independent critic model, as in the StepPO paper.
* :meth:`Policy.score` runs one teacher-forced forward pass over ``prompt + response``
  sequences and returns, for the response tokens only, their log-probs (of the tempered
  policy), optionally entropies, the step value ``V(s_t)`` read at the last prompt token
  and per-token values (for token-level PPO). Logits are computed only at response
  positions, which is what keeps the update close to a bare forward+backward.
* :class:`Sampler` generates one step for a batch of prompts: left padding, a KV cache, a
  common-prefix prefill shared by the whole batch, finished rows dropped from the batch as
  they stop (EOS or a stop string such as ``</tool_call>``), temperature / top-p. It
  returns the exact response token ids with their log-probs and the values seen on the
  way (token-in/token-out: nothing is re-tokenised). With ``sessions`` (one key per
  episode) it keeps each episode's KV cache between calls: the next step's prompt usually
  extends the last prompt + response, so only the new tokens (the observation) are
  prefilled. Cached states are dropped as soon as the weights change.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from stepgym.errors import InvalidArgument

__all__ = ["Policy", "Sampler", "Generation", "ScoreOutput", "pad_steps", "pack_steps", "end_of_turn_ids"]


def _text_config(config: Any) -> Any:
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def _trunk(lm: nn.Module) -> nn.Module:
    """The transformer body of a causal LM (LoRA layers, when present, live inside it)."""
    base = lm
    get_base = getattr(lm, "get_base_model", None)
    if callable(get_base):  # peft
        base = get_base()
    get_dec = getattr(base, "get_decoder", None)
    if callable(get_dec):
        dec = get_dec()
        if dec is not None:
            return dec
    for name in ("model", "transformer", "gpt_neox"):
        if hasattr(base, name):
            return getattr(base, name)
    raise InvalidArgument(f"cannot find the transformer body of {type(base).__name__}; use a standard *ForCausalLM model")


def _blocks(trunk: nn.Module, n_layers: int) -> nn.ModuleList:
    for mod in trunk.modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == n_layers:
            return mod
    raise InvalidArgument("cannot find the list of transformer blocks to apply train_layers")


def end_of_turn_ids(tokenizer: Any, model: nn.Module | None = None) -> list[int]:
    """Token ids that end an assistant turn: EOS, the chat template's end-of-turn token, ...

    Example:
        >>> # end_of_turn_ids(tok) -> e.g. [2] for SmolLM2's '<|im_end|>'
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
    for tok in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>"):
        if tok in vocab:
            ids.add(int(vocab[tok]))
    return sorted(ids)


@dataclass
class ScoreOutput:
    """What :meth:`Policy.score` returns (all ``[N, L]`` over response tokens unless noted)."""

    logprobs: torch.Tensor
    mask: torch.Tensor
    entropy: torch.Tensor | None = None
    step_values: torch.Tensor | None = None  # [N]
    token_values: torch.Tensor | None = None  # [N, L]


def pad_steps(prompts: list[list[int]], responses: list[list[int]], pad_id: int, device: torch.device | str = "cpu"):
    """Right-pad ``prompt + response`` sequences for teacher forcing.

    Returns ``input_ids [N, S]``, ``attention_mask [N, S]``, ``resp_pos [N, L]`` (the position
    whose output predicts each response token), ``resp_ids [N, L]`` and ``resp_mask [N, L]``.
    """
    n = len(prompts)
    lens = [len(p) + len(r) for p, r in zip(prompts, responses)]
    S = max(lens)
    L = max(1, max(len(r) for r in responses))
    ids = torch.full((n, S), pad_id, dtype=torch.long)
    att = torch.zeros((n, S), dtype=torch.long)
    pos = torch.zeros((n, L), dtype=torch.long)
    rid = torch.full((n, L), pad_id, dtype=torch.long)
    rmask = torch.zeros((n, L), dtype=torch.float32)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        seq = list(p) + list(r)
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        att[i, : len(seq)] = 1
        k = len(r)
        if k:
            pos[i, :k] = torch.arange(len(p) - 1, len(p) - 1 + k)
            rid[i, :k] = torch.tensor(r, dtype=torch.long)
            rmask[i, :k] = 1.0
        pos[i, k:] = len(p) - 1  # harmless index for padding rows
    return ids.to(device), att.to(device), pos.to(device), rid.to(device), rmask.to(device)


def pack_steps(prompts: list[list[int]], responses: list[list[int]]) -> tuple[list[list[int]], list[int]]:
    """Pack steps whose ``prompt + response`` is a prefix of another step's prompt.

    In a multi-step episode the prompt of step t+1 usually starts with step t's prompt and
    response; one sequence (the last step's prompt + response) then holds every earlier step,
    and one causal forward pass over it gives each step's log-probs and values, exactly as
    separate passes would. Returns ``(sequences, seq_of)``: ``seq_of[i]`` is the sequence that
    holds step ``i``, whose response starts at position ``len(prompts[i])`` there.

    Example:
        >>> seqs, seq_of = pack_steps([[1, 2], [1, 2, 3, 4, 5], [9]], [[3, 4], [6], [8]])
        >>> seqs, seq_of
        ([[1, 2, 3, 4, 5, 6], [9, 8]], [0, 0, 1])
    """
    n = len(prompts)
    full = [list(p) + list(r) for p, r in zip(prompts, responses)]
    order = sorted(range(n), key=lambda i: len(full[i]), reverse=True)
    seqs: list[list[int]] = []
    seq_of = [0] * n
    for i in order:  # longest first: a step joins the first sequence it is a prefix of
        f = full[i]
        for k, sq in enumerate(seqs):
            if len(sq) >= len(f) and sq[: len(f)] == f:
                seq_of[i] = k
                break
        else:
            seq_of[i] = len(seqs)
            seqs.append(f)
    # number sequences by their first step, so the output does not depend on the sort
    first: dict[int, int] = {}
    for i in range(n):
        first.setdefault(seq_of[i], len(first))
    out = [[] for _ in seqs]
    for k, j in first.items():
        out[j] = seqs[k]
    return out, [first[seq_of[i]] for i in range(n)]


def plan_micro_batches(units: list[tuple[int, list[int]]], max_rows: int, max_tokens: int = 0) -> list[list[int]]:
    """Group units (episodes or single steps) into forward/backward chunks of similar length.

    ``units[u] = (rows, sequence_lengths)``: how many steps unit ``u`` holds and the lengths of
    the sequences its forward pass runs (one per packed sequence). Units are taken shortest
    first (by their longest sequence) and a chunk is closed before it would exceed
    ``max_rows`` steps or ``max_tokens`` padded tokens (sequences x longest sequence; 0 = no
    token limit). A unit over either limit on its own gets a chunk of its own. Sorting by
    length keeps padding low, and a token cap keeps each chunk's activations small (on CPU,
    ~1k-token chunks run faster per token than one large batch). Returns the unit indices of
    each chunk.

    Example:
        >>> plan_micro_batches([(3, [300]), (1, [40]), (2, [290]), (1, [50])], max_rows=8, max_tokens=700)
        [[1, 3], [2, 0]]
    """
    order = sorted(range(len(units)), key=lambda u: max(units[u][1], default=0))
    chunks: list[list[int]] = []
    rows = seqs = longest = 0
    for u in order:
        r, lens = units[u]
        lu = max(lens, default=0)
        n_rows, n_seqs, n_long = rows + r, seqs + len(lens), max(longest, lu)
        if chunks and (n_rows > max_rows or (max_tokens and n_seqs * n_long > max_tokens)):
            chunks.append([])
            n_rows, n_seqs, n_long = r, len(lens), lu
        if not chunks:
            chunks.append([])
        chunks[-1].append(u)
        rows, seqs, longest = n_rows, n_seqs, n_long
    return chunks


def _logprobs_from_hidden(lm_head: nn.Module, h: torch.Tensor, ids: torch.Tensor, temperature: float,
                          want_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    logits = lm_head(h).float()
    if temperature != 1.0:
        logits = logits / temperature
    lse = torch.logsumexp(logits, dim=-1)
    lp = logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - lse
    ent = None
    if want_entropy:
        p = torch.softmax(logits, dim=-1)
        ent = lse - (p * logits).sum(-1)
    return lp, ent


class Policy(nn.Module):
    """Causal LM + value function.

    Args:
        lm: a Hugging Face ``*ForCausalLM`` model (optionally wrapped by peft).
        tokenizer: its tokenizer.
        critic: ``"shared"`` (value head on the LM trunk), ``"separate"`` (a copy of the
            trunk with its own head) or ``"none"`` (critic-free algorithms).
        temperature: the policy's temperature; log-probs are of ``softmax(logits / T)``.

    Example:
        >>> from steppo.models import load_model
        >>> lm, tok = load_model("tiny")
        >>> pol = Policy(lm, tok)
        >>> out = pol.score([[1, 2, 3]], [[4, 5]], values="step")
        >>> tuple(out.logprobs.shape), tuple(out.step_values.shape)
        ((1, 2), (1,))
    """

    def __init__(self, lm: nn.Module, tokenizer: Any, critic: str = "shared", temperature: float = 1.0):
        super().__init__()
        if critic not in ("shared", "separate", "none"):
            raise InvalidArgument(f"critic must be 'shared', 'separate' or 'none', got {critic!r}")
        self.lm = lm
        self.tokenizer = tokenizer
        self.critic_kind = critic
        self.temperature = float(temperature)
        hidden = int(_text_config(lm.config).hidden_size)
        self.value_head: nn.Linear | None = None
        self.critic_trunk: nn.Module | None = None
        if critic != "none":
            self.value_head = nn.Linear(hidden, 1)
            # small init: values start near 0, the mean return scale of 0/1 rewards.
            nn.init.normal_(self.value_head.weight, std=1.0 / (hidden ** 0.5) * 0.1)
            nn.init.zeros_(self.value_head.bias)
        if critic == "separate":
            self.critic_trunk = copy.deepcopy(_trunk(lm))
            for p in self.critic_trunk.parameters():
                p.requires_grad_(True)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

    # -- structure -----------------------------------------------------------------
    @property
    def trunk(self) -> nn.Module:
        return _trunk(self.lm)

    @property
    def lm_head(self) -> nn.Module:
        return self.lm.get_output_embeddings()

    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    def freeze_all_but_last(self, k: int) -> None:
        """Train only the last ``k`` transformer blocks (+ final norm) of the LM.

        Embeddings (often tied to the output layer) stay frozen, so autograd never walks
        the frozen lower layers: the backward pass costs ~k/n of a full one.
        """
        if k <= 0:
            return
        n = int(_text_config(self.lm.config).num_hidden_layers)
        blocks = _blocks(self.trunk, n)
        for p in self.lm.parameters():
            p.requires_grad_(False)
        for blk in list(blocks)[-k:]:
            for p in blk.parameters():
                p.requires_grad_(True)
        norm = getattr(self.trunk, "norm", None) or getattr(self.trunk, "final_layernorm", None)
        if norm is not None:
            for p in norm.parameters():
                p.requires_grad_(True)

    def policy_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.lm.parameters() if p.requires_grad]

    def critic_parameters(self) -> list[nn.Parameter]:
        ps: list[nn.Parameter] = []
        if self.value_head is not None:
            ps += list(self.value_head.parameters())
        if self.critic_trunk is not None:
            ps += [p for p in self.critic_trunk.parameters() if p.requires_grad]
        return ps

    def value_from_hidden(self, h: torch.Tensor) -> torch.Tensor:
        if self.value_head is None:  # invariant, not user input
            raise RuntimeError('internal error: self.value_head is None')
        return self.value_head(h.float()).squeeze(-1)

    # -- teacher forcing -------------------------------------------------------------
    def score(self, prompts: list[list[int]], responses: list[list[int]], *, values: str = "none",
              entropy: bool = False, logprobs: bool = True, pack: bool = True) -> ScoreOutput:
        """Teacher-forced log-probs (and values) of ``responses`` given ``prompts``.

        Args:
            prompts: token ids of each step's prompt.
            responses: token ids of each step's response.
            values: ``"none"``, ``"step"`` (V at the last prompt token, ``[N]``) or
                ``"token"`` (V before each response token, ``[N, L]``).
            entropy: also return the per-token entropy of the tempered policy.
            logprobs: compute log-probs (False for critic-only passes).
            pack: run steps that continue one another (see :func:`pack_steps`) as one
                sequence; the outputs are the same, the forward pass is shorter.
        """
        dev = self.device
        n = len(prompts)
        if pack and n > 1:
            seqs, seq_of = pack_steps(prompts, responses)
        else:
            seqs, seq_of = [list(p) + list(r) for p, r in zip(prompts, responses)], list(range(n))
        S = max(1, max(len(q) for q in seqs))
        L = max(1, max(len(r) for r in responses))
        ids = torch.full((len(seqs), S), self.pad_id, dtype=torch.long)
        att = torch.zeros((len(seqs), S), dtype=torch.long)
        for k, q in enumerate(seqs):
            ids[k, : len(q)] = torch.tensor(q, dtype=torch.long)
            att[k, : len(q)] = 1
        flat = torch.zeros((n, L), dtype=torch.long)  # row of the flattened [seqs * S] hidden states
        rid = torch.full((n, L), self.pad_id, dtype=torch.long)
        rmask = torch.zeros((n, L), dtype=torch.float32)
        for i, (p, r) in enumerate(zip(prompts, responses)):
            k = len(r)
            base = seq_of[i] * S + len(p) - 1
            flat[i] = base  # padding positions read a harmless real position
            if k:
                flat[i, :k] = torch.arange(base, base + k)
                rid[i, :k] = torch.tensor(r, dtype=torch.long)
                rmask[i, :k] = 1.0
        ids, att, flat, rid, rmask = ids.to(dev), att.to(dev), flat.to(dev), rid.to(dev), rmask.to(dev)
        out = ScoreOutput(logprobs=torch.zeros_like(rmask), mask=rmask)
        need_policy = logprobs or entropy or (values != "none" and self.critic_kind == "shared")
        H = None
        if need_policy:
            hidden = self.trunk(input_ids=ids, attention_mask=att, use_cache=False).last_hidden_state
            H = hidden.reshape(-1, hidden.shape[-1])[flat]
            if logprobs or entropy:
                lp, ent = _logprobs_from_hidden(self.lm_head, H, rid, self.temperature, entropy)
                out.logprobs = lp * rmask
                out.entropy = ent * rmask if ent is not None else None
        if values != "none":
            if self.critic_kind == "none":
                raise InvalidArgument("this policy has no critic (critic='none')")
            if self.critic_kind == "separate":
                if self.critic_trunk is None:  # invariant, not user input
                    raise RuntimeError('internal error: self.critic_trunk is None')
                ch = self.critic_trunk(input_ids=ids, attention_mask=att, use_cache=False).last_hidden_state
                Hc = ch.reshape(-1, ch.shape[-1])[flat]
            else:
                Hc = H
            if Hc is None:  # invariant, not user input
                raise RuntimeError('internal error: Hc is None')
            v = self.value_from_hidden(Hc)
            if values == "step":
                out.step_values = v[:, 0]
            else:
                out.token_values = v * rmask
        return out

    @torch.no_grad()
    def prompt_values(self, prompts: list[list[int]]) -> torch.Tensor:
        """V(s) of bare prompts (bootstrap values of truncated episodes)."""
        if not prompts:
            return torch.zeros(0)
        was = self.training
        self.eval()
        try:
            if self.critic_kind == "separate":
                return self.score(prompts, [[] for _ in prompts], values="step", logprobs=False).step_values.cpu()
            # shared trunk: read the hidden state of the last prompt token
            ids, att, pos, _, _ = pad_steps(prompts, [[] for _ in prompts], self.pad_id, self.device)
            hidden = self.trunk(input_ids=ids, attention_mask=att, use_cache=False).last_hidden_state
            h = hidden.gather(1, pos[:, :1].unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))[:, 0]
            return self.value_from_hidden(h).cpu()
        finally:
            self.train(was)

    # -- persistence -------------------------------------------------------------------
    def save_pretrained(self, path: str, extra: dict[str, Any] | None = None) -> None:
        """Write a Hugging Face-loadable policy folder: LM + tokenizer (+ value head / critic).

        LoRA adapters are merged into a copy first, so ``AutoModelForCausalLM.from_pretrained``
        loads the folder with no peft installed.
        """
        import json

        os.makedirs(path, exist_ok=True)
        lm = self.lm
        if hasattr(lm, "merge_and_unload"):
            lm = copy.deepcopy(lm).merge_and_unload()
        lm.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        if self.value_head is not None:
            torch.save(self.value_head.state_dict(), os.path.join(path, "value_head.pt"))
        if self.critic_trunk is not None:
            cdir = os.path.join(path, "critic")
            os.makedirs(cdir, exist_ok=True)
            torch.save(self.critic_trunk.state_dict(), os.path.join(cdir, "critic_trunk.pt"))
        if extra is not None:
            with open(os.path.join(path, "steppo_config.json"), "w") as fh:
                json.dump(extra, fh, indent=2, default=str)

    def load_critic_from(self, path: str) -> bool:
        """Load ``value_head.pt`` (and ``critic/``) saved by :meth:`save_pretrained`, if present."""
        ok = False
        vh = os.path.join(path, "value_head.pt")
        if self.value_head is not None and os.path.exists(vh):
            self.value_head.load_state_dict(torch.load(vh, map_location="cpu"))
            ok = True
        ct = os.path.join(path, "critic", "critic_trunk.pt")
        if self.critic_trunk is not None and os.path.exists(ct):
            self.critic_trunk.load_state_dict(torch.load(ct, map_location="cpu"))
        return ok


# ----------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------


@dataclass
class Generation:
    """One generated step: exact token ids, their log-probs, and the values seen on the way."""

    response_ids: list[int]
    logprobs: list[float]
    text: str
    stop_reason: str  # "eos" | "stop_string" | "length"
    step_value: float | None = None
    token_values: list[float] | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _common_prefix_len(seqs: list[list[int]]) -> int:
    if not seqs:
        return 0
    first = seqs[0]
    n = min(len(s) for s in seqs)
    k = 0
    while k < n and all(s[k] == first[k] for s in seqs):
        k += 1
    return k


@dataclass
class _SessionKV:
    """The KV cache of one episode's last sequence: ``ids`` and per-layer ``[H, n, D]`` keys/values."""

    ids: list[int]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
    probs = torch.softmax(sorted_logits, dim=-1)
    cum = probs.cumsum(-1)
    remove = cum - probs > top_p  # keep the token that crosses top_p
    sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)


def _sample_inverse_cdf(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One categorical draw per row from ONE uniform number per row.

    ``torch.multinomial`` on CPU draws vocabulary-sized random streams (over 100 ms per call at
    batch 16 with a 49k vocabulary); inverse-CDF sampling needs a cumsum and a binary search.
    """
    cdf = probs.double().cumsum(-1)
    u = torch.rand((probs.shape[0], 1), generator=generator, dtype=torch.float64, device=probs.device)
    tok = torch.searchsorted(cdf, u * cdf[:, -1:])
    return tok.squeeze(-1).clamp_(max=probs.shape[-1] - 1)


def _push(out_ids: list, out_lp: list, out_v: list, row: int, tok: int, lp: float, v: float | None) -> None:
    """Append one generated token (its log-prob, and its value when read) to row ``row``."""
    out_ids[row].append(tok)
    out_lp[row].append(lp)
    if v is not None:
        out_v[row].append(v)


def _growing_cache(reserve: int):
    """A ``DynamicCache`` whose layers write into preallocated buffers instead of ``torch.cat``.

    ``DynamicLayer`` concatenates the whole cache at every decoded token (quadratic copying);
    here each layer keeps a buffer with room for ``reserve`` more tokens and exposes a view.
    Falls back to a plain ``DynamicCache`` on transformers versions without cache layers.
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


class Sampler:
    """Batched step generation with a KV cache (see the module docstring).

    Args:
        policy: the :class:`Policy` to sample from (its ``temperature`` defines the log-probs).
        stop_strings: generation of a row stops once its decoded response contains one.
        eos_ids: token ids that end a turn (default: :func:`end_of_turn_ids`).
        share_prefix: prefill the batch's common prompt prefix once (batch 1) and reuse it.
        min_shared_prefix: shortest common prefix (tokens) worth sharing.
        min_reuse: shortest cached prefix (tokens) worth reusing from a session.
        speculate: prompt-lookup speculative decoding: up to this many draft tokens per
            forward pass, copied from what follows the latest earlier occurrence of the
            context's last tokens (tool calls repeat the prompt's names and JSON). Drafts are
            accepted by speculative sampling, so samples follow exactly the same distribution
            (greedy output is identical) and log-probs are the model's; 0 = off.

    Example:
        >>> from steppo.models import load_model
        >>> lm, tok = load_model("tiny")
        >>> s = Sampler(Policy(lm, tok, critic="none"))
        >>> g = s.generate([[1, 2, 3], [1, 2, 4, 5]], max_new_tokens=4, generator=torch.Generator().manual_seed(0))
        >>> len(g), len(g[0].response_ids) == len(g[0].logprobs)
        (2, True)
    """

    def __init__(self, policy: Policy, stop_strings: tuple[str, ...] | list[str] = (), eos_ids: list[int] | None = None,
                 share_prefix: bool = True, min_shared_prefix: int = 8, min_reuse: int = 8, speculate: int = 0):
        if speculate < 0:
            raise InvalidArgument(f"speculate must be >= 0 (draft tokens per step; 0 = off), got {speculate!r}")
        self.policy = policy
        self.speculate = int(speculate)
        #: draft tokens proposed / accepted by prompt-lookup speculation, since construction
        self.drafted_tokens = 0
        self.accepted_tokens = 0
        self.stop_strings = tuple(s for s in stop_strings if s)
        self.eos_ids = list(eos_ids) if eos_ids is not None else end_of_turn_ids(policy.tokenizer, policy.lm)
        self.share_prefix = share_prefix
        self.min_shared_prefix = min_shared_prefix
        self.min_reuse = min_reuse
        self._sessions: dict[Any, _SessionKV] = {}
        self._weights_version: tuple[int, ...] | None = None
        #: prompt tokens served from session caches / prefilled, since construction
        self.reused_tokens = 0
        self.prefilled_tokens = 0
        # Longest stop string in tokens is at most its length in characters (+2 for merges).
        self._tail = max([len(s) for s in self.stop_strings] + [1]) + 2
        self._cache_kw: str | None = None

    # -- per-episode KV caches ----------------------------------------------------------
    def end_session(self, key: Any) -> None:
        """Forget the cached states of one session (an episode that ended)."""
        self._sessions.pop(key, None)

    def reset_sessions(self) -> None:
        """Forget every session's cached states."""
        self._sessions.clear()

    @property
    def num_sessions(self) -> int:
        return len(self._sessions)

    def _check_weights(self) -> None:
        # in-place updates (optimizer steps, load_state_dict) bump each tensor's version counter
        v = tuple(p._version for p in self.policy.lm.parameters())
        if v != self._weights_version:
            self._sessions.clear()
            self._weights_version = v

    def _save_rows(self, cache: Any, m: torch.Tensor, rows_js: list[tuple[int, int]], sessions: list[Any],
                   prompts: list[list[int]], out_ids: list[list[int]]) -> None:
        """Store the KV of cache rows ``j`` (original rows ``row``): prompt + the tokens fed back.

        The number of fed tokens is read from the row's mask.
        """
        for j, row in rows_js:
            keep = m[j].bool()
            fed = int(keep.sum()) - len(prompts[row])
            ids = list(prompts[row]) + out_ids[row][:fed]
            ks = [layer.keys[j][:, keep, :] for layer in cache.layers]
            vs = [layer.values[j][:, keep, :] for layer in cache.layers]
            if ks and ks[0].shape[-2] == len(ids):
                self._sessions[sessions[row]] = _SessionKV(ids, ks, vs)

    def _forward(self, ids, att, pos, cache, all_positions: bool = False):
        trunk = self.policy.trunk
        if self._cache_kw is None:
            import inspect

            params = inspect.signature(trunk.forward).parameters
            # transformers >= 5.2x names the argument `cache`; older releases `past_key_values`
            self._cache_kw = "cache" if "cache" in params else "past_key_values"
        out = trunk(input_ids=ids, attention_mask=att, position_ids=pos, use_cache=True, **{self._cache_kw: cache})
        new_cache = getattr(out, "past_key_values", None)
        if new_cache is None:
            new_cache = getattr(out, "cache", cache)
        return (out.last_hidden_state if all_positions else out.last_hidden_state[:, -1]), new_cache

    def _prefill_groups(self, rest: list[int]) -> list[list[int]]:
        """Rows in one prefill batch, or two when padding to the longest rest would waste a lot."""
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

    def _prefill(self, prompts: list[list[int]], saved: list[_SessionKV | None], reuse: list[int],
                 max_new_tokens: int):
        """Prefill one group: returns (last hidden state, cache, attention mask, next positions)."""
        pol = self.policy
        dev = pol.device
        B = len(prompts)
        cache = _growing_cache(max_new_tokens + 1)
        reuse = list(reuse)
        P = max(reuse)
        if P:
            # row i: [pad (P - c_i) | its cached c_i positions]; pads are masked out
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
        else:
            P = _common_prefix_len(prompts) if (self.share_prefix and B > 1) else 0
            P = min(P, min(len(p) for p in prompts) - 1)
            if P < self.min_shared_prefix:
                P = 0
            if P:  # prefilled once and repeated over the batch
                pre = torch.tensor([prompts[0][:P]], dtype=torch.long, device=dev)
                _, cache = self._forward(pre, torch.ones_like(pre), torch.arange(P, device=dev)[None], cache)
                cache.batch_repeat_interleave(B)
                reuse = [P] * B
        # the rest of each prompt, left-padded after the cached part
        rest = [p[c:] for p, c in zip(prompts, reuse)]
        prefilled = sum(len(r) for r in rest) + (P if all(sv is None for sv in saved) else 0)
        self.prefilled_tokens += prefilled
        self.reused_tokens += sum(len(p) for p in prompts) - prefilled
        R = max(len(r) for r in rest)
        ids = torch.full((B, R), pol.pad_id, dtype=torch.long)
        m = torch.zeros((B, P + R), dtype=torch.long)
        for i, r in enumerate(rest):
            m[i, P - reuse[i]:P] = 1
            ids[i, R - len(r):] = torch.tensor(r, dtype=torch.long)
            m[i, P + R - len(r):] = 1
        ids, m = ids.to(dev), m.to(dev)
        pos_all = (m.cumsum(-1) - 1).clamp(min=0)
        h, cache = self._forward(ids, m, pos_all[:, P:], cache)
        return h, cache, m, pos_all[:, -1] + 1

    def _merge(self, parts: list[tuple], max_new_tokens: int):
        """One batch from separately prefilled groups: caches and masks left-padded to one width."""
        W = max(m.shape[1] for _, _, m, _ in parts)
        cache = _growing_cache(max_new_tokens + 1)
        for layer in range(len(parts[0][1].layers)):
            ks = [nn.functional.pad(c.layers[layer].keys, (0, 0, W - m.shape[1], 0)) for _, c, m, _ in parts]
            vs = [nn.functional.pad(c.layers[layer].values, (0, 0, W - m.shape[1], 0)) for _, c, m, _ in parts]
            cache.update(torch.cat(ks), torch.cat(vs), layer)
        m = torch.cat([nn.functional.pad(m, (W - m.shape[1], 0)) for _, _, m, _ in parts])
        h = torch.cat([p[0] for p in parts])
        next_pos = torch.cat([p[3] for p in parts])
        return h, cache, m, next_pos

    # -- prompt-lookup speculative decoding ----------------------------------------------
    @staticmethod
    def _draft(ctx: list[int], k: int, min_ngram: int = 2, max_ngram: int = 3) -> list[int]:
        """Up to ``k`` tokens that followed the latest earlier occurrence of ``ctx``'s last n-gram."""
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

    def _stop_reason(self, ids: list[int], max_new_tokens: int) -> str | None:
        """Why a row whose response is ``ids`` ends now, or None while it goes on."""
        if ids[-1] in self.eos_ids:
            return "eos"
        if self.stop_strings:
            tail = self.policy.tokenizer.decode(ids[-self._tail:])
            if any(s in tail for s in self.stop_strings):
                return "stop_string"
        return "length" if len(ids) >= max_new_tokens else None

    def _decode_speculative(self, h, cache, m, next_pos, active, prompts, sessions, max_new_tokens, T, top_p,
                            greedy, generator, want_v, out_ids, out_lp, out_v, reason) -> None:
        """The decode loop with prompt-lookup drafts (``speculate`` > 0); fills the ``out_*`` lists.

        Each pass feeds every row's last token plus its draft. Draft token i is kept with
        probability p(d_i) under the sampling distribution (greedy: when it is the argmax); at
        the first rejection the row's next token is drawn from p with d_i removed, and after a
        fully accepted draft from the distribution that follows it. This is speculative
        sampling with a deterministic draft, so every token has exactly the distribution of
        plain decoding. Cache positions of rejected drafts stay in the cache, masked out.
        """
        pol = self.policy
        dev = pol.device
        lm_head = pol.lm_head
        pad = pol.pad_id

        def dists(hs):
            logits = lm_head(hs).float() / T
            logp = torch.log_softmax(logits, dim=-1)
            if greedy:
                return logp, None
            samp = logits if top_p >= 1.0 else _top_p_filter(logits, top_p)
            return logp, torch.softmax(samp, dim=-1)

        def draw(logp_rows, probs_rows):
            return logp_rows.argmax(-1) if greedy else _sample_inverse_cdf(probs_rows, generator)

        logp, probs = dists(h)
        tok = draw(logp, probs)
        vals = pol.value_from_hidden(h).tolist() if want_v else None
        lp0 = logp.gather(-1, tok[:, None]).squeeze(-1).tolist()
        feed = tok.tolist()
        finished: list[int] = []
        for j, row in enumerate(active):
            _push(out_ids, out_lp, out_v, row, feed[j], lp0[j], vals[j] if want_v else None)
            r = self._stop_reason(out_ids[row], max_new_tokens)
            if r is not None:
                reason[row] = r
                finished.append(j)
        while True:
            if finished:
                done = set(finished)
                if sessions is not None:
                    self._save_rows(cache, m, [(j, active[j]) for j in finished], sessions, prompts, out_ids)
                keep = [j for j in range(len(active)) if j not in done]
                if not keep:
                    return
                sel = torch.tensor(keep, device=dev)
                cache.batch_select_indices(sel)
                m, next_pos = m[sel], next_pos[sel]
                active = [active[j] for j in keep]
                feed = [feed[j] for j in keep]
                finished = []
            A = len(active)
            drafts = [self._draft(prompts[row] + out_ids[row], min(self.speculate, max_new_tokens - len(out_ids[row]) - 1))
                      for row in active]
            D = max(len(d) for d in drafts)
            ids = torch.full((A, D + 1), pad, dtype=torch.long)
            new_m = torch.zeros((A, D + 1), dtype=m.dtype)
            ids[:, 0] = torch.tensor(feed, dtype=torch.long)
            new_m[:, 0] = 1
            for j, d in enumerate(drafts):
                if d:
                    ids[j, 1:1 + len(d)] = torch.tensor(d, dtype=torch.long)
                    new_m[j, 1:1 + len(d)] = 1
            m = torch.cat([m, new_m.to(dev)], dim=1)
            pos = next_pos[:, None] + torch.arange(D + 1, device=dev)[None]
            H, cache = self._forward(ids.to(dev), m, pos, cache, all_positions=True)
            logp, probs = dists(H)  # [A, D + 1, V]: column c predicts the token after fed column c
            vals = pol.value_from_hidden(H).tolist() if want_v else None
            n_acc = [0] * A
            if D:
                dr = ids[:, 1:].to(dev)
                if greedy:
                    ok = logp[:, :D].argmax(-1) == dr
                else:
                    p_d = probs[:, :D].gather(-1, dr[..., None]).squeeze(-1).double()
                    u = torch.rand((A, D), generator=generator, dtype=torch.float64, device=dev)
                    ok = u < p_d
                ok_l = ok.tolist()
                for j, d in enumerate(drafts):
                    while n_acc[j] < len(d) and ok_l[j][n_acc[j]]:
                        n_acc[j] += 1
            self.drafted_tokens += sum(len(d) for d in drafts)
            self.accepted_tokens += sum(n_acc)
            # the next token of every row: after its accepted drafts, with a rejected draft removed
            rows = torch.arange(A, device=dev)
            cols = torch.tensor(n_acc, device=dev)
            lp_next = logp[rows, cols]
            pr_next = None
            if not greedy:
                pr_next = probs[rows, cols].clone()
                for j, d in enumerate(drafts):
                    if n_acc[j] < len(d):
                        pr_next[j, d[n_acc[j]]] = 0.0
            nxt = draw(lp_next, pr_next).tolist()
            acc_lp = logp[:, :D].gather(-1, ids[:, 1:].to(dev)[..., None]).squeeze(-1).tolist() if D else None
            nxt_lp = lp_next.gather(-1, torch.tensor(nxt, device=dev)[:, None]).squeeze(-1).tolist()
            step = torch.zeros(A, dtype=next_pos.dtype, device=dev)
            W = m.shape[1]
            for j, row in enumerate(active):
                stopped = False
                for i in range(n_acc[j]):
                    _push(out_ids, out_lp, out_v, row, drafts[j][i], acc_lp[j][i], vals[j][i] if want_v else None)
                    r = self._stop_reason(out_ids[row], max_new_tokens)
                    if r is not None:
                        reason[row] = r
                        m[j, W - D + i + 1:] = 0  # drafts after the one that ended the row
                        finished.append(j)
                        stopped = True
                        break
                if stopped:
                    continue
                m[j, W - D + n_acc[j]:] = 0  # rejected (and padding) draft positions
                step[j] = n_acc[j] + 1
                _push(out_ids, out_lp, out_v, row, nxt[j], nxt_lp[j], vals[j][n_acc[j]] if want_v else None)
                feed[j] = nxt[j]
                r = self._stop_reason(out_ids[row], max_new_tokens)
                if r is not None:
                    reason[row] = r
                    finished.append(j)
            next_pos = next_pos + step

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], *, max_new_tokens: int = 64, temperature: float | None = None,
                 top_p: float = 1.0, generator: torch.Generator | None = None, values: str = "none",
                 greedy: bool = False, sessions: list[Any] | None = None) -> list[Generation]:
        """Generate one step for each prompt.

        Args:
            prompts: prompt token ids (unpadded).
            max_new_tokens: token limit per row.
            temperature: sampling temperature (default: the policy's); log-probs are of
                ``softmax(logits / temperature)``.
            top_p: nucleus sampling (1 = off). Log-probs stay those of the full tempered
                distribution, the same quantity the trainer recomputes.
            generator: torch RNG for reproducible sampling.
            values: ``"step"`` / ``"token"`` to also read the shared value head on the way
                (free: it reuses the hidden states); ``"none"`` otherwise.
            greedy: take the argmax instead of sampling.
            sessions: one hashable key per prompt (e.g. an episode id). The KV cache of each
                row's prompt + response is kept under its key, and a later call whose prompt
                starts with the same tokens prefills only the rest. Keys must be distinct
                within a call; call :meth:`end_session` when an episode ends.
        """
        if not prompts:
            return []
        if any(len(p) == 0 for p in prompts):
            raise InvalidArgument("every prompt needs at least one token")
        if sessions is not None and (len(sessions) != len(prompts) or len(set(sessions)) != len(sessions)):
            raise InvalidArgument("sessions needs one distinct key per prompt")
        pol = self.policy
        T = pol.temperature if temperature is None else float(temperature)
        if T <= 0:
            greedy, T = True, 1.0
        was_training = pol.training
        pol.eval()
        dev = pol.device
        want_v = values != "none" and pol.critic_kind == "shared"
        B = len(prompts)
        try:
            # 1) cached prefixes: each row's session states, else the batch's common prefix
            reuse = [0] * B
            saved: list[_SessionKV | None] = [None] * B
            if sessions is not None:
                self._check_weights()
                for i, key in enumerate(sessions):
                    sv = self._sessions.pop(key, None)
                    if sv is not None:
                        c = min(_common_prefix_len([sv.ids, prompts[i]]), len(prompts[i]) - 1)
                        if c >= self.min_reuse:
                            reuse[i], saved[i] = c, sv
            # 2) the rest of each prompt. Rows whose rest is much longer than the others' (a new
            # episode among continuing ones) are prefilled apart, so the others are not padded
            # to their length; the two caches are then merged into one batch.
            groups = self._prefill_groups([len(p) - c for p, c in zip(prompts, reuse)])
            parts = [self._prefill([prompts[i] for i in g], [saved[i] for i in g], [reuse[i] for i in g],
                                   max_new_tokens) for g in groups]
            active = [i for g in groups for i in g]  # original row index of each cache row
            if len(parts) == 1:
                h, cache, m, next_pos = parts[0]
            else:
                h, cache, m, next_pos = self._merge(parts, max_new_tokens)

            out_ids: list[list[int]] = [[] for _ in range(B)]
            out_lp: list[list[float]] = [[] for _ in range(B)]
            out_v: list[list[float]] = [[] for _ in range(B)]
            reason = ["length"] * B
            if self.speculate:
                self._decode_speculative(h, cache, m, next_pos, active, prompts, sessions, max_new_tokens, T, top_p,
                                         greedy, generator, want_v, out_ids, out_lp, out_v, reason)
            lm_head = pol.lm_head
            for t in range(0 if self.speculate else max_new_tokens):
                logits = lm_head(h).float()
                if want_v:
                    v = pol.value_from_hidden(h).tolist()
                logits = logits / T
                logp_all = torch.log_softmax(logits, dim=-1)
                if greedy:
                    tok = logits.argmax(-1)
                else:
                    samp = logits if top_p >= 1.0 else _top_p_filter(logits, top_p)
                    probs = torch.softmax(samp, dim=-1)
                    tok = _sample_inverse_cdf(probs, generator)
                lp = logp_all.gather(-1, tok[:, None]).squeeze(-1)
                tok_l, lp_l = tok.tolist(), lp.tolist()
                keep: list[int] = []
                for j, row in enumerate(active):
                    _push(out_ids, out_lp, out_v, row, tok_l[j], lp_l[j], v[j] if want_v else None)
                    r = self._stop_reason(out_ids[row], max_new_tokens)
                    if r is not None and r != "length":  # the loop itself ends at the length limit
                        reason[row] = r
                        continue
                    keep.append(j)
                if not keep or t == max_new_tokens - 1:
                    if sessions is not None:
                        self._save_rows(cache, m, list(enumerate(active)), sessions, prompts, out_ids)
                    break
                if len(keep) < len(active):
                    if sessions is not None:
                        kept = set(keep)
                        done = [(j, row) for j, row in enumerate(active) if j not in kept]
                        self._save_rows(cache, m, done, sessions, prompts, out_ids)
                    sel = torch.tensor(keep, device=dev)
                    cache.batch_select_indices(sel)
                    tok, m, next_pos = tok[sel], m[sel], next_pos[sel]
                    active = [active[j] for j in keep]
                m = torch.cat([m, torch.ones((m.shape[0], 1), dtype=m.dtype, device=dev)], dim=1)
                h, cache = self._forward(tok[:, None], m, next_pos[:, None], cache)
                next_pos = next_pos + 1
        finally:
            pol.train(was_training)
        gens = []
        for i in range(B):
            ids_i = out_ids[i]
            if ids_i and reason[i] == "eos":
                ids_i = ids_i[:-1]  # the end-of-turn token is not part of the action text
            # keep special tokens: chat models may have `<tool_call>` as one
            text = pol.tokenizer.decode(ids_i, skip_special_tokens=False)
            if reason[i] == "stop_string":
                # cut text after the first stop string (the ids stay exact: the last token may overhang)
                cut = min((text.find(s) + len(s) for s in self.stop_strings if s in text), default=len(text))
                text = text[:cut]
            g = Generation(response_ids=out_ids[i], logprobs=out_lp[i], text=text, stop_reason=reason[i])
            if want_v and out_v[i]:
                g.step_value = out_v[i][0]
                g.token_values = out_v[i]
            gens.append(g)
        return gens


def adamw(params: Any, **kwargs: Any) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` with the fused kernel where this build has it for the parameters.

    The fused step does the same arithmetic in one kernel; on CPU it is ~5x faster than the
    default multi-tensor step (0.08 s against 0.4 s for SmolLM2-135M on 2 cores), which
    matters when an update is one or two optimizer steps.
    """
    try:
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, ValueError, TypeError):  # a device or dtype without the fused kernel
        return torch.optim.AdamW(params, **kwargs)


def set_threads(n: int) -> None:
    """Set torch's CPU thread count (0 leaves torch's default)."""
    if n > 0:
        torch.set_num_threads(n)


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    tot = sum(p.numel() for p in module.parameters())
    tr = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return tr, tot


