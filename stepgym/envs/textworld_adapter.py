"""TextWorld-v0: games generated locally with Microsoft TextWorld, as a stepgym env.

Needs the optional extra ``textworld``: ``pip install textworld`` (or
``pip install 'stepgym[textworld]'``); TextWorld ships the Inform 7 compiler it needs for
Linux and macOS. Each episode draws a game seed from the env's RNG,
generates the game with TextWorld's generator (``nb_rooms``, ``nb_objects``,
``quest_length`` from the difficulty), compiles it once into a cache folder, and plays it
through ``textworld.start``. The agent types TextWorld commands (``go east``, ``take key
from chest``, ``unlock door with key``); ``info["admissible_commands"]`` lists them. Reward
is the game's score gain divided by its maximum score, so a won game returns 1.0. The
expert plays TextWorld's own walkthrough (``policy_commands``), recomputed every step.

Pickling and ``copy.deepcopy``: an env whose game is running (after ``reset()``) cannot be
pickled or copied: the game runs in TextWorld's Jericho interpreter, a C library driven
through ``ctypes``, whose state Python cannot serialise. Trying raises a ``TypeError``
saying so. To run TextWorld in worker processes (``spawn`` pools, Ray actors, async vector
envs), send an env factory and build the env in the worker:
``functools.partial(gymnasium.make, "stepgym/TextWorld-v0", difficulty="easy")`` pickles.
An env that has not been reset yet (no game running) pickles.

Importing this module without TextWorld raises :class:`~stepgym.errors.DependencyNotInstalled`
(an ``ImportError``) naming the pip command, so ``gym.make("stepgym/TextWorld-v0")`` and
``stepgym.make`` both fail with that message.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import warnings
from typing import Any, ClassVar

from stepgym.core import StepEnv, StepResult, quote_action
from stepgym.errors import DependencyNotInstalled, InvalidArgument, InvalidConfig

# No square brackets ("stepgym[textworld]"): rich markup in the CLI would eat them.
PIP = "pip install textworld"
try:
    import textworld
    from textworld.generator import GameOptions, compile_game, make_game
except ImportError as exc:  # the env cannot work without it: say how to get it
    raise DependencyNotInstalled("stepgym/TextWorld-v0", PIP) from exc

__all__ = ["TextWorldEnv"]

_DIFFICULTY = {
    # nb_rooms, nb_objects, quest_length
    "easy": (2, 4, 2),
    "medium": (4, 8, 4),
    "hard": (8, 15, 8),
}
_BANNER_RE = re.compile(r"^[\s$|\\/_\-=]*$")


def _cache_dir() -> str:
    root = os.environ.get("STEPGYM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "stepgym")
    return os.path.join(root, "textworld")


def _clean_intro(text: str) -> str:
    """Drop the ASCII-art title TextWorld prints at the start (noise for a language model)."""
    lines = text.splitlines()
    while lines and (_BANNER_RE.match(lines[0]) or sum(c.isalpha() for c in lines[0]) < len(lines[0].strip()) * 0.5):
        lines.pop(0)
    return "\n".join(lines).strip()


_UNSAFE_RE = re.compile(r"[^A-Za-z0-9 ,.'-]")
_STATUS_RE = re.compile(r"^>?\s*(-= .* =-\s*\d+/\d+)?\s*$")


def _clean_feedback(text: str) -> str:
    """Drop the interpreter's prompt and status lines (``>   -= Pantry =-0/1``)."""
    lines = text.rstrip().splitlines()
    while lines and _STATUS_RE.match(lines[-1]):
        lines.pop()
    return "\n".join(lines).strip()


def _sanitize(command: str) -> str:
    """The command line the game receives: words and simple punctuation, one line, bounded.

    Anything else is dropped: the interpreter treats a leading backslash as one of its own
    meta-commands (``\\help``), which an LLM must not be able to reach.
    """
    text = _UNSAFE_RE.sub(" ", command)
    return " ".join(text.split())[:190]  # Jericho truncates input past 198 bytes


class TextWorldEnv(StepEnv):
    """A TextWorld game per episode, generated from the env's seed.

    Args:
        difficulty: ``"easy"`` (2 rooms, 4 objects, quest of 2 actions), ``"medium"``
            (4, 8, 4) or ``"hard"`` (8, 15, 8).
        nb_rooms / nb_objects / quest_length: override the difficulty's generator options.
        num_games: draw from a fixed pool of this many games (``None``: a new game per
            seed). A pool keeps resets fast once its games are compiled.
        game_file: play this compiled game (``.z8``/``.ulx``, with its ``.json``) instead
            of generating games.
        show_admissible: list the admissible commands in each observation.
        cache_dir: where compiled games are kept (default ``$STEPGYM_CACHE/textworld``
            or ``~/.cache/stepgym/textworld``).
        max_steps: step limit (default 50).

    Generating and compiling a new game takes 1-3 s; a cached game starts in ~0.2 s.

    Once reset, the env cannot be pickled or deep-copied (the game runs in a ctypes C
    library; a ``TypeError`` says so): give workers
    ``functools.partial(gymnasium.make, "stepgym/TextWorld-v0", **kwargs)`` and build it there.

    Example:
        >>> import gymnasium as gym, stepgym
        >>> env = gym.make("stepgym/TextWorld-v0", difficulty="easy")   # doctest: +SKIP
        >>> obs, info = env.reset(seed=0)                                # doctest: +SKIP
        >>> env.step(env.unwrapped.expert_action())[1]                   # doctest: +SKIP
        0.0
    """

    description: ClassVar[str] = "Text adventures generated with Microsoft TextWorld (optional extra)"
    default_max_steps: ClassVar[int] = 50

    def __init__(
        self,
        difficulty: str = "easy",
        *,
        nb_rooms: int | None = None,
        nb_objects: int | None = None,
        quest_length: int | None = None,
        num_games: int | None = None,
        game_file: str | None = None,
        show_admissible: bool = False,
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if difficulty not in _DIFFICULTY:
            raise InvalidConfig("difficulty", difficulty, f"one of {sorted(_DIFFICULTY)}")
        rooms, objects, length = _DIFFICULTY[difficulty]
        self.nb_rooms = rooms if nb_rooms is None else nb_rooms
        self.nb_objects = objects if nb_objects is None else nb_objects
        self.quest_length = length if quest_length is None else quest_length
        for name, v, lo in (("nb_rooms", self.nb_rooms, 1), ("nb_objects", self.nb_objects, 0),
                            ("quest_length", self.quest_length, 1)):
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= 50:
                raise InvalidConfig(name, v, f"an int in [{lo}, 50]")
        if num_games is not None and (not isinstance(num_games, int) or num_games < 1):
            raise InvalidConfig("num_games", num_games, "a positive int or None")
        if game_file is not None and not os.path.isfile(game_file):
            raise InvalidArgument(f"game_file {game_file!r} does not exist; pass a compiled TextWorld game (.z8 or .ulx)")
        self.difficulty = difficulty
        self.num_games = num_games
        self.game_file = game_file
        self.show_admissible = bool(show_admissible)
        self.cache_dir = cache_dir or _cache_dir()
        self._infos = textworld.EnvInfos(
            admissible_commands=True, policy_commands=True, max_score=True, score=True, won=True, lost=True,
            objective=True,
        )
        self._game = None
        self._gs = None
        self._score = 0.0
        self._max_score = 1.0
        self.game_path = ""

    # -- games ---------------------------------------------------------------------------
    def _game_path(self, seed: int) -> str:
        key = f"tw1|{self.nb_rooms}|{self.nb_objects}|{self.quest_length}|{seed}"
        name = "g" + hashlib.sha1(key.encode()).hexdigest()[:16]
        path = os.path.join(self.cache_dir, name + ".z8")
        if os.path.isfile(path) and os.path.isfile(path[:-3] + ".json"):
            return path
        os.makedirs(self.cache_dir, exist_ok=True)
        opts = GameOptions()
        opts.seeds = seed
        opts.nb_rooms, opts.nb_objects, opts.quest_length = self.nb_rooms, self.nb_objects, self.quest_length
        tmp = tempfile.mkdtemp(prefix=".tw-", dir=self.cache_dir)
        try:
            opts.path = os.path.join(tmp, name + ".z8")
            game = make_game(opts)
            built = compile_game(game, opts)
            # JSON first, then the game file: a present .z8 means a complete pair (parallel
            # workers may build the same game; os.replace keeps each file whole).
            os.replace(built[:-3] + ".json", path[:-3] + ".json")
            os.replace(built, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return path

    def _reset(self, options: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        if self.game_file is not None:
            path = self.game_file
        elif self.num_games is not None:
            index = int(self.np_random.integers(self.num_games))
            path = self._game_path(1_000_003 * (index + 1))
        else:
            path = self._game_path(int(self.np_random.integers(2**31 - 1)))
        if self._game is not None:
            self._game.close()
        self.game_path = path
        with warnings.catch_warnings():
            # Jericho warns that it cannot track TextWorld games' score; TextWorld tracks it itself.
            warnings.simplefilter("ignore")
            self._game = textworld.start(path, request_infos=self._infos)
            gs = self._game.reset()
        self._gs = gs
        self._score = float(gs.score or 0)
        self._max_score = float(gs.max_score or 1) or 1.0
        text = _clean_feedback(_clean_intro(gs.feedback))
        obs = (f"{text}\n\nType one command per step (for example: look, inventory, go east, "
               "take X, take X from Y, open X, unlock X with Y, put X on Y, insert X into Y, eat X).")
        info = {"admissible_commands": list(gs.admissible_commands or []), "objective": gs.objective,
                "max_score": self._max_score, "game_file": path,
                "optimal_steps": len(gs.policy_commands or [])}
        return self._with_admissible(obs), info

    def _with_admissible(self, text: str) -> str:
        if self.show_admissible and self._gs is not None:
            text += "\nAdmissible commands: " + ", ".join(self._gs.admissible_commands or [])
        return text

    def _step(self, action: str) -> StepResult:
        raw = action
        m = re.findall(r"<answer>(.*?)</answer>", raw, re.S | re.I)
        if m:
            raw = m[-1]
        lines = [ln for ln in raw.strip().splitlines() if ln.strip()]
        cmd = _sanitize(lines[-1] if lines else "")
        cmd = re.sub(r"^(action|command|>)\s*:?\s*", "", cmd, flags=re.I)
        admissible = list(self._gs.admissible_commands or [])
        if not cmd:
            err = "the action is empty; type one command, e.g. " + (admissible[0] if admissible else "look")
            return StepResult(self._with_admissible("Nothing happens: " + err), action_valid=False, error=err,
                              info={"admissible_commands": admissible})
        valid = cmd.lower() in {a.lower() for a in admissible}
        gs, score, done = self._game.step(cmd)
        self._gs = gs
        score = float(score or 0)
        reward = (score - self._score) / self._max_score
        self._score = score
        info: dict[str, Any] = {"admissible_commands": list(gs.admissible_commands or []), "score": score,
                                "max_score": self._max_score}
        err = None if valid else f"{quote_action(cmd, 60)} is not an admissible command here"
        obs = self._with_admissible(_clean_feedback(gs.feedback) or "Nothing happens.")
        won = bool(gs.won)
        return StepResult(obs, reward=reward, terminated=bool(done), success=won if done else None,
                          action_valid=valid, error=err, info=info)

    def expert_action(self) -> str:
        """The next command of TextWorld's walkthrough from the current state."""
        if self._gs is None:
            raise InvalidArgument("call reset() before expert_action()")
        policy = self._gs.policy_commands or []
        return policy[0] if policy else "look"

    def __getstate__(self) -> dict[str, Any]:
        if self._game is not None:
            raise TypeError(
                "a TextWorldEnv with a running game cannot be pickled or deep-copied: the game runs in "
                "TextWorld's Jericho interpreter (a C library used through ctypes) whose state Python cannot "
                "serialise. To use it in another process, send an env factory instead, e.g. "
                "functools.partial(gymnasium.make, 'stepgym/TextWorld-v0', **env_kwargs), and build the env there."
            )
        return self.__dict__.copy()

    def close(self) -> None:
        if self._game is not None:
            self._game.close()
            self._game = None
        super().close()
