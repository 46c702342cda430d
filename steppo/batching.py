"""Batching of ``prompt + response`` steps for teacher-forced passes.

* :func:`pad_steps` right-pads steps into one batch.
* :func:`pack_steps` folds steps that continue one another into one sequence.
* :func:`plan_micro_batches` groups episodes or steps into forward/backward chunks of
  similar length under a row and a token budget.
"""

from __future__ import annotations

import torch

__all__ = ["pad_steps", "pack_steps", "plan_micro_batches"]


def pad_steps(prompts: list[list[int]], responses: list[list[int]], pad_id: int, device: torch.device | str = "cpu"):
    """Right-pad ``prompt + response`` sequences for teacher forcing.

    Args:
        prompts: token ids of each step's prompt.
        responses: token ids of each step's response.
        pad_id: the token id written into padding positions.
        device: where the returned tensors live.

    Returns:
        ``input_ids [N, S]``, ``attention_mask [N, S]``, ``resp_pos [N, L]`` (the position
        whose output predicts each response token), ``resp_ids [N, L]`` and ``resp_mask [N, L]``.

    Example:
        >>> ids, att, pos, rid, rmask = pad_steps([[1, 2], [3]], [[4], [5, 6]], pad_id=0)
        >>> ids.tolist(), pos.tolist(), rmask.tolist()
        ([[1, 2, 4], [3, 5, 6]], [[1, 1], [0, 1]], [[1.0, 0.0], [1.0, 1.0]])
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
