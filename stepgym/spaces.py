"""The unicode text space used for every stepgym observation and action.

Gymnasium's :class:`~gymnasium.spaces.Text` only admits strings over a finite charset,
but LLM output is arbitrary unicode (emoji, CJK, even lone surrogates). ``UnicodeText``
keeps the ``Text`` interface (so vector envs, ``batch_space`` and ``check_env`` work)
while ``contains`` accepts any ``str`` within the length bounds. ``sample`` still draws
from a printable charset so sampled actions are readable.

Gymnasium's shared-memory hooks for ``Text`` (``AsyncVectorEnv(shared_memory=True)``, the
default of ``gymnasium.make_vec(..., vectorization_mode="async")``) only round-trip strings
over the space's charset and decode the buffer once, when the vector env is built, so every
later observation would read back the same stale string. This module registers
``UnicodeText`` hooks that store each string as its length followed by its code points (any
unicode, lone surrogates included, up to ``max_length``) and read the buffer afresh on
every access.
"""

from __future__ import annotations

import operator
import string
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

import numpy as np
from gymnasium.spaces import Text
from gymnasium.vector.utils import shared_memory as _shm

__all__ = ["UnicodeText", "SharedTextBatch", "DEFAULT_OBS_CHARS", "DEFAULT_ACTION_CHARS", "SAMPLE_CHARSET"]

#: Default upper bound for observations, in characters.
DEFAULT_OBS_CHARS = 32_768
#: Default upper bound for actions (one LLM generation), in characters.
DEFAULT_ACTION_CHARS = 16_384

#: Characters ``sample`` draws from: printable ASCII plus a few non-ASCII letters.
SAMPLE_CHARSET = string.ascii_letters + string.digits + string.punctuation + " \n" + "éüßøλжЖ中文😀"


class UnicodeText(Text):
    """A text space that contains any Python ``str`` whose length lies in the bounds.

    Args:
        max_length: Largest length in characters (inclusive).
        min_length: Smallest length (inclusive); ``0`` lets the empty string in.
        charset: Characters ``sample`` draws from (membership ignores it).
        seed: Seed for ``sample``.

    Example:
        >>> from stepgym.spaces import UnicodeText
        >>> space = UnicodeText(10, min_length=0)
        >>> space.contains("héllo 😀"), space.contains(""), space.contains("x" * 11)
        (True, True, False)
    """

    def __init__(
        self,
        max_length: int = DEFAULT_ACTION_CHARS,
        *,
        min_length: int = 0,
        charset: str = SAMPLE_CHARSET,
        seed: Any = None,
    ) -> None:
        super().__init__(max_length, min_length=min_length, charset=charset, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        if mask is None and probability is None:
            # Short samples: a random action is a stand-in for an LLM step, not a novel.
            hi = min(self.max_length, max(self.min_length, 64))
            n = int(self.np_random.integers(self.min_length, hi + 1))
            idx = self.np_random.integers(0, len(self.character_list), size=n)
            chars = self.character_list
            return "".join(chars[i] for i in idx)
        return super().sample(mask=mask, probability=probability)

    def __repr__(self) -> str:
        return f"UnicodeText({self.min_length}, {self.max_length})"

    def __eq__(self, other: object, /) -> bool:
        return (
            isinstance(other, UnicodeText)
            and self.min_length == other.min_length
            and self.max_length == other.max_length
        )

    def __hash__(self) -> int:
        return hash(("UnicodeText", self.min_length, self.max_length))


# -- shared memory for AsyncVectorEnv ------------------------------------------------------
# Layout of the buffer of ``n`` envs: ``n`` slots of ``max_length + 1`` int32 each; a slot
# holds the string's length, then its code points (UTF-32).


class SharedTextBatch(Sequence[str]):
    """The observations of an ``AsyncVectorEnv`` with shared memory, decoded on access.

    A live view: it always shows what the workers last wrote (as a ``Box`` space's numpy
    view does). ``copy.copy``/``copy.deepcopy`` and pickling give a plain ``tuple`` of
    ``str``, so with the vector env's default ``copy=True`` callers get the same type as
    from a sync vector env.
    """

    __slots__ = ("_buf", "_n", "_stride")

    def __init__(self, buffer: np.ndarray, n: int, stride: int) -> None:
        self._buf = buffer
        self._n = n
        self._stride = stride

    def __len__(self) -> int:
        return self._n

    def _get(self, i: int) -> str:
        start = i * self._stride
        length = int(self._buf[start])
        if not 0 <= length < self._stride:
            raise ValueError(f"corrupt shared text buffer for env {i}: length {length}")
        return self._buf[start + 1 : start + 1 + length].tobytes().decode("utf-32-le", "surrogatepass")

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return tuple(self._get(i) for i in range(*index.indices(self._n)))
        i = operator.index(index)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"index {index} out of range for {self._n} envs")
        return self._get(i)

    def __iter__(self) -> Iterator[str]:
        return (self._get(i) for i in range(self._n))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (tuple, SharedTextBatch)):
            return tuple(self) == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # the contents change under it

    def __copy__(self) -> tuple[str, ...]:
        return tuple(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> tuple[str, ...]:
        return tuple(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (tuple, (tuple(self),))

    def __repr__(self) -> str:
        return f"SharedTextBatch({tuple(self)!r})"


def _slots(shared_memory: Any) -> np.ndarray:
    return np.frombuffer(shared_memory.get_obj(), dtype=np.int32)


@_shm.create_shared_memory.register(UnicodeText)
def _create_unicode_shared_memory(space: UnicodeText, n: int = 1, ctx: ModuleType | Any = None) -> Any:
    if ctx is None:
        import multiprocessing as ctx
    return ctx.Array(np.dtype(np.int32).char, n * (space.max_length + 1))


@_shm.read_from_shared_memory.register(UnicodeText)
def _read_unicode_from_shared_memory(space: UnicodeText, shared_memory: Any, n: int = 1) -> SharedTextBatch:
    return SharedTextBatch(_slots(shared_memory), n, space.max_length + 1)


@_shm.write_to_shared_memory.register(UnicodeText)
def _write_unicode_to_shared_memory(space: UnicodeText, index: int, value: Any, shared_memory: Any) -> None:
    if not isinstance(value, str):
        raise TypeError(f"a UnicodeText observation must be a str, got {type(value).__name__}")
    if len(value) > space.max_length:
        raise ValueError(
            f"observation of {len(value)} characters exceeds its space's bound of {space.max_length} "
            "and does not fit in the shared-memory buffer"
        )
    stride = space.max_length + 1
    codes = np.frombuffer(value.encode("utf-32-le", "surrogatepass"), dtype=np.int32)
    slots = _slots(shared_memory)
    start = index * stride
    slots[start + 1 : start + 1 + len(codes)] = codes
    slots[start] = len(codes)
