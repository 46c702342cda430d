"""Wordle-v0: guess a hidden five-letter word in six tries.

The word lists ship with the package (``stepgym/data``, from SCOWL; see
``stepgym/data/WORDLE_LISTS.md``), so the env works offline. Feedback per letter is
``G`` (right letter, right place), ``Y`` (in the word, elsewhere) or ``X`` (not in the word,
or no more copies of it), with Wordle's rule for repeated letters.

The expert follows a decision tree shipped as ``stepgym/data/wordle_tree.txt``, built by
:func:`build_solver_tree` and verified to win every answer within six guesses. When the
agent's own guesses leave the tree, the expert falls back to filtering the consistent
answers and picking the guess that splits them best.

Example:
    >>> import gymnasium as gym, stepgym
    >>> env = gym.make("stepgym/Wordle-v0")
    >>> obs, info = env.reset(seed=0)
    >>> done = False
    >>> while not done:
    ...     obs, reward, terminated, truncated, info = env.step(env.unwrapped.expert_action())
    ...     done = terminated or truncated
    >>> info["success"]
    True
"""

from __future__ import annotations

import sys
from functools import cache
from importlib import resources
from typing import Any, ClassVar

from stepgym.core import StepEnv, StepResult, quote_action
from stepgym.envs._answer import extract_answer
from stepgym.errors import InvalidConfig

__all__ = ["WordleEnv", "feedback", "load_words", "build_solver_tree"]

GREEN, YELLOW, GRAY = "G", "Y", "X"
WORD_LENGTH = 5


@cache
def load_words(name: str) -> tuple[str, ...]:
    """A shipped word list: ``"answers"`` or ``"guesses"``.

    Example:
        >>> len(load_words("answers")) > 2000, "crane" in load_words("guesses")
        (True, True)
    """
    if name not in ("answers", "guesses"):
        raise InvalidConfig("name", name, "'answers' or 'guesses'")
    text = resources.files("stepgym").joinpath("data").joinpath(f"wordle_{name}.txt").read_text("ascii")
    return tuple(text.split())


@cache
def _guess_set() -> frozenset[str]:
    return frozenset(load_words("guesses"))


@cache
def _tree() -> dict[str, str]:
    text = resources.files("stepgym").joinpath("data").joinpath("wordle_tree.txt").read_text("ascii")
    tree: dict[str, str] = {}
    for line in text.splitlines():
        path, _, guess = line.rpartition(" ")
        tree[path] = guess
    return tree


def feedback(guess: str, answer: str) -> str:
    """Wordle feedback for ``guess`` against ``answer``: one of ``G``/``Y``/``X`` per letter.

    Greens are marked first; each remaining copy of a letter in the answer turns at most one
    guessed copy yellow, left to right.

    Example:
        >>> feedback("speed", "abide")
        'XXYXY'
        >>> feedback("crane", "crane")
        'GGGGG'
    """
    if guess == answer:
        return "GGGGG"
    if len(set(guess)) == WORD_LENGTH:
        # Fast path (most guesses): with no repeated letter in the guess, a letter that is not
        # green is yellow exactly when the answer contains it anywhere.
        return "".join([GREEN if g == a else (YELLOW if g in answer else GRAY) for g, a in zip(guess, answer)])
    res = [GRAY] * WORD_LENGTH
    left: dict[str, int] = {}
    for i in range(WORD_LENGTH):
        a = answer[i]
        if guess[i] == a:
            res[i] = GREEN
        else:
            left[a] = left.get(a, 0) + 1
    for i in range(WORD_LENGTH):
        if res[i] is GRAY:
            g = guess[i]
            n = left.get(g, 0)
            if n:
                res[i] = YELLOW
                left[g] = n - 1
    return "".join(res)


def _best_split(candidates: list[str], pool: list[str]) -> str:
    """The guess in ``pool`` whose feedback splits ``candidates`` into the most groups."""
    best, best_key = candidates[0], None
    cand_set = set(candidates)
    for g in pool:
        groups: dict[str, int] = {}
        for a in candidates:
            f = feedback(g, a)
            groups[f] = groups.get(f, 0) + 1
        key = (max(groups.values()), -len(groups), g not in cand_set)
        if best_key is None or key < best_key:
            best, best_key = g, key
    return best


class WordleEnv(StepEnv):
    """Guess the hidden five-letter word; each guess gets per-letter feedback.

    Args:
        max_guesses: guesses allowed (default 6); this is also the step limit unless
            ``max_steps`` is given.
        strict: only words from the shipped guess list count as guesses (default True);
            with ``strict=False`` any five letters are accepted.
        show_letters: add a line listing the letters known to be absent / present (default
            False; the guess lines carry the same information, and the line costs ~2 µs a step).
        max_steps: step limit; invalid actions use steps too (default ``max_guesses + 4``).

    ``reset(options={"answer": "crane"})`` fixes the hidden word (it must be a five-letter
    word).

    Example:
        >>> import gymnasium as gym, stepgym
        >>> env = gym.make("stepgym/Wordle-v0")
        >>> obs, info = env.reset(seed=0, options={"answer": "crane"})
        >>> obs, reward, terminated, truncated, info = env.step("<answer>trace</answer>")
        >>> info["feedback"]
        'XGGYG'
    """

    description: ClassVar[str] = "Guess a hidden five-letter word in six tries from per-letter feedback"
    default_max_steps: ClassVar[int] = 10

    def __init__(self, max_guesses: int = 6, strict: bool = True, show_letters: bool = False, **kwargs: Any) -> None:
        if not isinstance(max_guesses, int) or isinstance(max_guesses, bool) or not 1 <= max_guesses <= 20:
            raise InvalidConfig("max_guesses", max_guesses, "an int from 1 to 20")
        if kwargs.get("max_steps") is None:
            kwargs["max_steps"] = max_guesses + 4
        super().__init__(**kwargs)
        self.max_guesses = max_guesses
        self.strict = bool(strict)
        self.show_letters = bool(show_letters)
        self._left_text = tuple(f"Guesses left: {n}." for n in range(max_guesses + 1))
        self._answers = load_words("answers")
        self._allowed = _guess_set()
        self._answer = ""
        self._history: list[tuple[str, str]] = []
        self._lines = ""
        self._absent: set[str] = set()
        self._present: set[str] = set()
        self._rules = (
            f"Wordle. Guess the hidden five-letter English word in {max_guesses} tries. After each guess you "
            "get one mark per letter: G = right letter in the right place, Y = the letter is in the word "
            "but elsewhere, X = the letter is not in the word (or not that many times). "
            "Answer with one word, e.g. crane or <answer>crane</answer>."
        )

    def _board(self) -> str:
        # Built incrementally (one line per guess, letter sets updated in _step): a step costs
        # the new guess only, not the whole history.
        tail = self._left_text[self.max_guesses - len(self._history)]
        if self.show_letters and self._history:
            absent = self._absent - self._present
            tail = (
                f"Not in the word: {' '.join(sorted(absent)).upper() or '-'}. "
                f"In the word: {' '.join(sorted(self._present)).upper() or '-'}.\n" + tail
            )
        return self._lines + tail

    def _reset(self, options: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        answer = (options or {}).get("answer")
        if answer is not None:
            if not isinstance(answer, str) or len(answer) != WORD_LENGTH or not answer.isalpha():
                raise InvalidConfig("options['answer']", answer, "a five-letter word")
            self._answer = answer.lower()
        else:
            self._answer = self._answers[int(self.np_random.integers(len(self._answers)))]
        self._history = []
        self._lines = ""
        self._absent = set()
        self._present = set()
        return self._rules + "\n" + self._board(), {"guesses_left": self.max_guesses}

    def _step(self, action: str) -> StepResult:
        word = extract_answer(action).lower()
        if len(word) != WORD_LENGTH or not (word.isascii() and word.isalpha()):
            return StepResult(
                observation=f"Invalid guess {quote_action(action)}: answer with exactly one five-letter word "
                "(letters a-z only).\n" + self._board(),
                action_valid=False,
                error="a guess is one five-letter word",
                info={"guesses_left": self.max_guesses - len(self._history)},
            )
        if self.strict and word not in self._allowed:
            return StepResult(
                observation=f"{word.upper()} is not in the word list; this did not use a guess. "
                "Try another English word.\n" + self._board(),
                action_valid=False,
                error=f"{word!r} is not in the word list",
                info={"guesses_left": self.max_guesses - len(self._history)},
            )
        fb = feedback(word, self._answer)
        history = self._history
        history.append((word, fb))
        self._lines += f"{len(history)}. {word.upper()}  {fb}\n"
        if self.show_letters:
            present = {ch for ch, m in zip(word, fb) if m != GRAY}
            self._present |= present
            self._absent |= set(word) - present
        left = self.max_guesses - len(history)
        info: dict[str, Any] = {"guesses_left": left, "feedback": fb}
        if fb != "GGGGG" and left and not self.show_letters:
            # The common step: no summary line, the game goes on.
            return StepResult(observation=self._lines + self._left_text[left], info=info)
        if fb == "GGGGG":
            return StepResult(
                observation=self._board() + f"\nSolved: the word is {self._answer.upper()}.",
                reward=1.0,
                terminated=True,
                success=True,
                info=info,
            )
        if left == 0:
            info["answer"] = self._answer
            return StepResult(
                observation=self._board() + f"\nOut of guesses. The word was {self._answer.upper()}.",
                terminated=True,
                success=False,
                info=info,
            )
        return StepResult(observation=self._board(), info=info)

    def _on_truncate(self) -> dict[str, Any]:
        return {"answer": self._answer}

    def expert_action(self) -> str:
        """The decision tree's guess; off the tree, the best-splitting consistent word."""
        tree = _tree()
        # The tree is keyed by the feedback path, valid only while every guess was the tree's.
        on_tree = True
        path = ""
        for g, f in self._history:
            if tree.get(path) != g:
                on_tree = False
                break
            path = f"{path}.{f}" if path else f
        if on_tree and path in tree:
            return tree[path]
        candidates = [a for a in self._answers if all(feedback(g, a) == f for g, f in self._history)]
        if not candidates:  # a hidden word from options outside the answer list
            allowed = load_words("guesses")
            candidates = [a for a in allowed if all(feedback(g, a) == f for g, f in self._history)]
        if not candidates:
            return self._answer
        if len(candidates) <= 2:
            return candidates[0]
        pool = candidates if len(candidates) <= 60 else candidates[:60]
        return _best_split(candidates[:200], pool)


# -- building the shipped data (run once by maintainers, not at import) ----------------


def build_lists(small_path: str, large_path: str) -> tuple[list[str], list[str]]:
    """Answer and guess lists from two SCOWL word files (see ``stepgym/data/WORDLE_LISTS.md``)."""
    import re

    roman = re.compile(r"^m{0,4}(cm|cd|d?c{0,3})(xc|xl|l?x{0,3})(ix|iv|v?i{0,3})$")

    def five(words: set[str]) -> list[str]:
        return sorted(
            w for w in words if len(w) == 5 and w.isascii() and w.isalpha() and w.islower() and not roman.match(w)
        )

    with open(small_path, encoding="utf-8", errors="replace") as f:
        small_all = set(f.read().split("\n"))
    with open(large_path, encoding="utf-8", errors="replace") as f:
        large_all = set(f.read().split("\n"))

    def base_form(w: str) -> bool:
        if w.endswith("s") and (w[:-1] in small_all or (w.endswith("es") and w[:-2] in small_all)):
            return False
        return not (w.endswith("ed") and (w[:-2] in small_all or w[:-1] in small_all))

    answers = [w for w in five(small_all) if base_form(w)]
    guesses = sorted(set(five(large_all)) | set(answers))
    return answers, guesses


def build_solver_tree(answers: list[str], guesses: list[str], max_depth: int = 6) -> dict[str, str]:
    """A decision tree that finds every answer within ``max_depth`` guesses.

    Greedy by partition entropy over all allowed guesses (numpy feedback matrix), with
    backtracking over the best few guesses where a subtree would exceed the depth. Returns
    ``{feedback path: guess}`` where the path joins per-guess feedbacks with ``.``.

    Example:
        >>> tree = build_solver_tree(["crane", "trace", "react"], ["crane", "trace", "react"])
        >>> sorted(tree)[0], len(tree) >= 1
        ('', True)
    """
    import numpy as np

    ga = np.array([[ord(c) - 97 for c in w] for w in guesses], dtype=np.int8)
    aa = np.array([[ord(c) - 97 for c in w] for w in answers], dtype=np.int8)
    n_g, n_a = len(guesses), len(answers)
    pat = np.zeros((n_g, n_a), dtype=np.int16)
    for gi in range(n_g):
        g = ga[gi]
        green = aa == g[None, :]
        code = np.zeros(n_a, dtype=np.int16)
        left = {}
        for c in set(g.tolist()):
            left[c] = ((aa == c) & ~green).sum(1)
        for i in range(5):
            c = int(g[i])
            yellow = (~green[:, i]) & (left[c] > 0)
            left[c] = left[c] - yellow
            code = code * 3 + np.where(green[:, i], 2, np.where(yellow, 1, 0))
        pat[gi] = code
    win = 242  # "GGGGG"
    guess_index = {w: i for i, w in enumerate(guesses)}

    def decode(code: int) -> str:
        out = []
        for _ in range(5):
            out.append("XYG"[code % 3])
            code //= 3
        return "".join(reversed(out))

    tree: dict[str, str] = {}

    def solve(cands: np.ndarray, depth: int, path: str, out: dict[str, str]) -> bool:
        if depth == 0:
            return False
        if len(cands) == 1:
            out[path] = answers[int(cands[0])]
            return True
        if depth == 1:
            return False
        sub = pat[:, cands]
        flat = sub.astype(np.int64) + 243 * np.arange(n_g)[:, None]
        counts = np.bincount(flat.ravel(), minlength=243 * n_g).reshape(n_g, 243)
        with np.errstate(divide="ignore", invalid="ignore"):
            score = (counts * np.log(np.where(counts > 0, counts, 1))).sum(1)
        # a guess that may win now is worth a little: prefer it among near-equal splits
        cand_guess = np.zeros(n_g, dtype=bool)
        cand_idx = [guess_index[answers[int(a)]] for a in cands] if len(cands) < 50 else None
        if cand_idx is not None:
            cand_guess[cand_idx] = True
        score = score - 0.5 * cand_guess * np.log(len(cands) + 1)
        order = np.argsort(score, kind="stable")
        tries = 3 if len(cands) > 20 else 8
        for gi in order[:tries].tolist():
            row = pat[gi, cands]
            trial: dict[str, str] = {path: guesses[gi]}
            ok = True
            for code in np.unique(row).tolist():
                if code == win:
                    continue
                child = cands[row == code]
                if len(child) == len(cands):
                    ok = False
                    break
                cpath = f"{path}.{decode(code)}" if path else decode(code)
                if not solve(child, depth - 1, cpath, trial):
                    ok = False
                    break
            if ok:
                out.update(trial)
                return True
        return False

    if not solve(np.arange(n_a), max_depth, "", tree):
        raise RuntimeError("no decision tree within the depth limit was found")
    return tree


def _main(argv: list[str]) -> int:
    from pathlib import Path

    data = Path(__file__).resolve().parent.parent / "data"
    if argv[:1] == ["build-lists"] and len(argv) == 3:
        answers, guesses = build_lists(argv[1], argv[2])
        (data / "wordle_answers.txt").write_text("\n".join(answers) + "\n")
        (data / "wordle_guesses.txt").write_text("\n".join(guesses) + "\n")
        print(f"{len(answers)} answers, {len(guesses)} guesses")
        return 0
    if argv[:1] == ["build-tree"]:
        tree = build_solver_tree(list(load_words("answers")), list(load_words("guesses")))
        (data / "wordle_tree.txt").write_text("".join(f"{p} {g}\n" for p, g in sorted(tree.items())))
        print(f"{len(tree)} tree nodes")
        return 0
    print("usage: python -m stepgym.envs.wordle build-lists SMALL LARGE | build-tree", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
