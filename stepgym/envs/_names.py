"""Seeded synthetic names for the generated worlds (people, places, organisations, papers).

Names are built from syllables so that a model cannot answer from memorised facts: every
fact about "Velora Tarsk" lives only in the episode's generated documents. All draws go
through the ``numpy.random.Generator`` the env passes in (its ``self.np_random``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["NameMaker"]

_ONSETS = ["b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "r", "s", "sh",
           "st", "t", "th", "tr", "v", "z"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "io", "ou"]
_CODAS = ["", "", "", "n", "r", "l", "s", "th", "nd", "rk", "x"]


class NameMaker:
    """Draws unique pronounceable names from a generator.

    Args:
        rng: the env's ``np_random``.

    Example:
        >>> import numpy as np
        >>> names = NameMaker(np.random.default_rng(0))
        >>> a, b = names.word(), names.word()
        >>> a != b and a[0].isupper()
        True
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.used: set[str] = set()
        self._buf: list[int] = []

    def randint(self, n: int) -> int:
        """A uniform int in [0, n) (n small). Draws come from the generator in batches:
        one ``integers`` call per draw dominated the reset time of the envs."""
        if not self._buf:
            self._buf = self.rng.integers(0, 1 << 30, size=256).tolist()
        return self._buf.pop() % n

    def _syllable(self) -> str:
        return _ONSETS[self.randint(len(_ONSETS))] + _VOWELS[self.randint(len(_VOWELS))] + _CODAS[self.randint(len(_CODAS))]

    def word(self, syllables: tuple[int, int] = (2, 3)) -> str:
        """A new capitalised word, unique within this maker (also across :meth:`person`)."""
        for _ in range(1000):
            n = syllables[0] + self.randint(syllables[1] - syllables[0] + 1)
            w = "".join(self._syllable() for _ in range(n)).capitalize()
            if 4 <= len(w) <= 12 and w.lower() not in self.used:
                self.used.add(w.lower())
                return w
        raise RuntimeError("name space exhausted")  # pragma: no cover - 24*9*11 syllables ** 2

    def person(self) -> str:
        """A new ``"First Last"`` name; its last name is unique too (documents use it alone)."""
        return f"{self.word((2, 2))} {self.word((2, 3))}"

    def choice(self, items: list | tuple):
        """One item drawn uniformly."""
        return items[self.randint(len(items))]
