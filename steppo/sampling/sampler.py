"""The sampler: batched step generation with a KV cache.

:class:`Sampler` generates one step for a batch of prompts: left padding, a KV cache, a
common-prefix prefill shared by the whole batch, finished rows dropped from the batch as they
stop (EOS or a stop string such as ``</tool_call>``), temperature / top-p. It returns the
exact response token ids with their log-probs and the values seen on the way
(token-in/token-out: nothing is re-tokenised). With ``sessions`` (one key per episode) it keeps
each episode's KV cache between calls (:class:`~steppo.sampling.kv_cache.SessionCache`): the
next step's prompt usually extends the last prompt + response, so only the new tokens (the
observation) are prefilled. With ``speculate`` it drafts tokens by prompt lookup
(:mod:`steppo.sampling.speculative`).

The decode loop is the same with and without drafts: feed each row's last token (and draft),
then :meth:`Sampler._step` keeps the accepted draft tokens and samples one more token per row,
each added by :meth:`~steppo.sampling.decode.DecodeState.append`, which applies the stop rule.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch

from stepgym.policy_folder import decode_action
from steppo.policy import Policy, end_of_turn_ids
from steppo.sampling import speculative
from steppo.sampling.decode import DecodeState, SamplingParams, StopRule
from steppo.sampling.kv_cache import (SessionCache, SessionKV, cache_from_sessions, common_prefix_len, growing_cache,
                                      merge_caches, prefill_groups)
from steppo.sampling.speculative import Drafts
from stepgym.errors import InvalidArgument

__all__ = ["Sampler", "Generation"]


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


class Sampler:
    """Batched step generation with a KV cache (see the module docstring).

    Args:
        policy: the :class:`~steppo.policy.Policy` to sample from (its ``temperature``
            defines the log-probs).
        stop_strings: generation of a row stops once its decoded response contains one.
        eos_ids: token ids that end a turn (default: :func:`~steppo.policy.end_of_turn_ids`).
        share_prefix: prefill the batch's common prompt prefix once (batch 1) and reuse it.
        min_shared_prefix: shortest common prefix (tokens) worth sharing.
        min_reuse: shortest cached prefix (tokens) worth reusing from a session.
        speculate: prompt-lookup speculative decoding: up to this many draft tokens per
            forward pass, copied from what follows the latest earlier occurrence of the
            context's last tokens (tool calls repeat the prompt's names and JSON). Drafts are
            accepted by speculative sampling, so samples follow exactly the same distribution
            (greedy output is identical) and log-probs are the model's; 0 = off.

    Example:
        >>> from stepgym.models import load_model
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
        eos = list(eos_ids) if eos_ids is not None else end_of_turn_ids(policy.tokenizer, policy.lm)
        self._stop = StopRule(eos, tuple(stop_strings), policy.tokenizer)
        self.share_prefix = share_prefix
        self.min_shared_prefix = min_shared_prefix
        self.min_reuse = min_reuse
        self._sessions = SessionCache()
        #: prompt tokens served from session caches / prefilled, since construction
        self.reused_tokens = 0
        self.prefilled_tokens = 0
        self._cache_kw: str | None = None

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """The stop strings in use (empty strings dropped)."""
        return self._stop.stop_strings

    @property
    def eos_ids(self) -> list[int]:
        """Token ids that end a turn."""
        return self._stop.eos_ids

    # -- per-episode KV caches ----------------------------------------------------------
    def end_session(self, key: Any) -> None:
        """Forget the cached states of one session (an episode that ended)."""
        self._sessions.end(key)

    def reset_sessions(self) -> None:
        """Forget every session's cached states."""
        self._sessions.clear()

    @property
    def num_sessions(self) -> int:
        return len(self._sessions)

    # -- generation ---------------------------------------------------------------------
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

        Returns:
            One :class:`Generation` per prompt, in order.
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
        try:
            with pol.compute_context():  # mixed precision: the policy's autocast dtype, if any
                h, st = self._prefill_all(prompts, sessions, max_new_tokens)
                st.params = SamplingParams(T, top_p, greedy, generator)
                st.want_values = values != "none" and pol.critic_kind == "shared"
                if max_new_tokens > 0:
                    self._decode(st, h)
        finally:
            pol.train(was_training)
        return [self._generation(st, i) for i in range(len(prompts))]

    def _generation(self, st: DecodeState, i: int) -> Generation:
        """Row ``i``'s :class:`Generation`: exact ids, and its text without the end-of-turn token."""
        ids, reason = st.ids[i], st.reasons[i]
        # the ids stay exact (the last token may overhang a stop string); the text is what a
        # `checkpoint:` agent decodes from the same ids
        text = decode_action(self.policy.tokenizer, ids, stop_strings=self._stop.stop_strings,
                             eos_ids=self._stop.eos_ids)
        g = Generation(response_ids=ids, logprobs=st.logprobs[i], text=text, stop_reason=reason)
        if st.want_values and st.values[i]:
            g.step_value = st.values[i][0]
            g.token_values = st.values[i]
        return g

    # -- decoding -----------------------------------------------------------------------
    def _decode(self, st: DecodeState, h: torch.Tensor) -> None:
        """Decode from the prefill's last hidden states ``h [A, hidden]`` until every row stops."""
        H, drafts = h[:, None], None
        while True:
            self._step(st, H, drafts)
            if not self._retire(st):
                return
            if self.speculate:
                drafts = speculative.propose(st, self.speculate, self.policy.pad_id)
            H = self._feed(st, drafts)

    def _step(self, st: DecodeState, H: torch.Tensor, drafts: Drafts | None) -> None:
        """Add each row's next tokens, read from ``H [A, D + 1, hidden]`` (column c: after fed column c).

        Without drafts (``D = 0``) that is one sampled token per row. With drafts, the accepted
        ones come first, then one token sampled after them.
        """
        pol = self.policy
        D = drafts.width if drafts is not None else 0
        x = H if D else H[:, 0]
        dist = st.params.dist(pol.lm_head(x))
        vals = pol.value_from_hidden(x).tolist() if st.want_values else None
        n_acc = None
        if D:
            verdict = speculative.verify(dist, drafts, st.params.generator)
            n_acc, dist = verdict.n_acc, verdict.next_dist
            self.drafted_tokens += sum(len(d) for d in drafts.tokens)
            self.accepted_tokens += sum(n_acc)
        tok = dist.draw(st.params.generator)
        tok_l, lp_l = tok.tolist(), dist.logprob(tok).tolist()
        for j in range(len(st.rows)):
            v = vals[j] if vals else None
            if n_acc is not None:
                if speculative.append_accepted(st, j, drafts.tokens[j][:n_acc[j]], verdict.logprobs[j], v, D):
                    continue
                v = v[n_acc[j]] if v else None
            st.append(j, tok_l[j], lp_l[j], v)
        st.feed = tok_l
        if n_acc is not None:
            st.next_pos = st.next_pos + torch.tensor(n_acc, dtype=st.next_pos.dtype, device=st.next_pos.device)

    def _retire(self, st: DecodeState) -> bool:
        """Store the sessions of the rows that stopped and drop them; False once no row is left."""
        if st.finished:
            if st.sessions is not None:
                done = [(j, st.rows[j]) for j in st.finished]
                self._sessions.save_rows(st.cache, st.mask, done, st.sessions, st.prompts, st.ids)
            st.drop_finished()
        return bool(st.rows)

    def _feed(self, st: DecodeState, drafts: Drafts | None) -> torch.Tensor:
        """Run each row's last token (and its draft) through the model; returns ``[A, D + 1, hidden]``."""
        dev = st.mask.device
        A = len(st.rows)
        ids = torch.tensor(st.feed, dtype=torch.long)[:, None]
        new_m = torch.ones((A, 1), dtype=st.mask.dtype)
        pos = st.next_pos[:, None]
        if drafts is not None and drafts.width:
            D = drafts.width
            lens = torch.tensor([len(d) for d in drafts.tokens])
            ids = torch.cat([ids, drafts.padded], dim=1)
            new_m = torch.cat([new_m, (torch.arange(D)[None] < lens[:, None]).to(st.mask.dtype)], dim=1)
            pos = pos + torch.arange(D + 1, device=dev)[None]
        st.mask = torch.cat([st.mask, new_m.to(dev)], dim=1)
        H, st.cache = self._forward(ids.to(dev), st.mask, pos, st.cache)
        st.next_pos = st.next_pos + 1
        return H

    def _forward(self, ids, att, pos, cache):
        """The trunk over ``ids`` with a KV cache: (last hidden states ``[B, S, hidden]``, cache)."""
        trunk = self.policy.trunk
        if self._cache_kw is None:
            params = inspect.signature(trunk.forward).parameters
            # transformers >= 5.2x names the argument `cache`; older releases `past_key_values`
            self._cache_kw = "cache" if "cache" in params else "past_key_values"
        out = trunk(input_ids=ids, attention_mask=att, position_ids=pos, use_cache=True, **{self._cache_kw: cache})
        # the output field is named like the argument (reading `past_key_values` on a release that
        # names it `cache` logs a deprecation line on every step)
        new_cache = out.get(self._cache_kw) if hasattr(out, "get") else getattr(out, self._cache_kw, None)
        return out.last_hidden_state, cache if new_cache is None else new_cache

    # -- prefill ------------------------------------------------------------------------
    def _prefill_all(self, prompts: list[list[int]], sessions: list[Any] | None,
                     max_new_tokens: int) -> tuple[torch.Tensor, DecodeState]:
        """Prefill every prompt: returns the last hidden states and the decode state.

        Each row reuses its session's cached prefix, else the batch shares its common prefix.
        Rows whose rest is much longer than the others' (a new episode among continuing ones)
        are prefilled apart, so the others are not padded to their length; the caches are then
        merged into one batch.
        """
        reuse, saved = [0] * len(prompts), [None] * len(prompts)
        if sessions is not None:
            self._sessions.check_weights(self.policy.lm.parameters())
            reuse, saved = self._sessions.take(sessions, prompts, self.min_reuse)
        groups = prefill_groups([len(p) - c for p, c in zip(prompts, reuse)])
        parts = [self._prefill([prompts[i] for i in g], [saved[i] for i in g], [reuse[i] for i in g],
                               max_new_tokens) for g in groups]
        h, cache, m, next_pos = parts[0] if len(parts) == 1 else merge_caches(parts, max_new_tokens + 1)
        st = DecodeState(prompts, max_new_tokens, self._stop, rows=[i for g in groups for i in g], mask=m,
                         next_pos=next_pos, cache=cache, sessions=sessions)
        return h, st

    def _prefill(self, prompts: list[list[int]], saved: list[SessionKV | None], reuse: list[int],
                 max_new_tokens: int):
        """Prefill one group: returns (last hidden state, cache, attention mask, next positions)."""
        pol = self.policy
        dev = pol.device
        B = len(prompts)
        reuse = list(reuse)
        P = max(reuse)
        if P:
            cache = cache_from_sessions(saved, reuse, max_new_tokens + 1)
        else:
            cache = growing_cache(max_new_tokens + 1)
            P = common_prefix_len(prompts) if (self.share_prefix and B > 1) else 0
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
        return h[:, -1], cache, m, pos_all[:, -1] + 1
