"""The unicode text space used for every stepgym observation and action.

Gymnasium's :class:`~gymnasium.spaces.Text` only admits strings over a finite charset,
but LLM output is arbitrary unicode (emoji, CJK, even lone surrogates). ``UnicodeText``
keeps the ``Text`` interface (so vector envs, ``batch_space`` and ``check_env`` work)
while ``contains`` accepts any ``str`` within the length bounds. ``sample`` still draws
from a printable charset so sampled actions are readable.
"""

from __future__ import annotations

import string
from typing import Any

from gymnasium.spaces import Text

__all__ = ["UnicodeText", "DEFAULT_OBS_CHARS", "DEFAULT_ACTION_CHARS", "SAMPLE_CHARSET"]

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
