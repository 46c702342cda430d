"""TextArena-v0: TextArena's games as stepgym envs (single-player) and PettingZoo envs (multi-player).

Needs the optional extra ``textarena``: ``pip install textarena`` (or ``pip install 'stepgym[textarena]'``).

* ``gym.make("stepgym/TextArena-v0", game="Wordle-v0")`` wraps a single-player TextArena
  game as a :class:`~stepgym.core.StepEnv`: the observation is the game's new messages,
  the action is passed to the game as is (TextArena games read ``[guess]`` style moves),
  the reward is TextArena's final reward for the player, and ``success`` means a reward
  of 1 (a win).
* :func:`textarena_aec_env` (``game="TicTacToe-v0"``, ``num_players=2``) wraps a
  multi-player game as a PettingZoo AEC env with text observations and actions.

TextArena seeds Python's global ``random`` module; the adapter runs every TextArena call
on its own saved ``random`` state, drawn from the env's ``np_random``, so episodes are
reproducible and the caller's global RNG is left alone. TextArena's word games call
``nltk.download`` at construction and fail offline: when NLTK's ``words`` corpus or tagger
are not installed, the adapter feeds NLTK a local copy built from the word lists shipped
in stepgym (every word tagged as a noun, which is what the games filter on).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from importlib import resources
from typing import Any, ClassVar

from pettingzoo import AECEnv

from stepgym.core import StepEnv, StepResult
from stepgym.errors import DependencyNotInstalled, InvalidArgument, InvalidConfig
from stepgym.spaces import UnicodeText

# No square brackets ("stepgym[textarena]"): rich markup in the CLI would eat them.
PIP = "pip install textarena"
try:
    import textarena as ta
    from textarena.envs.registration import ENV_REGISTRY
except ImportError as exc:  # the env cannot work without it: say how to get it
    raise DependencyNotInstalled("stepgym/TextArena-v0", PIP) from exc

__all__ = ["TextArenaEnv", "TextArenaAECEnv", "textarena_aec_env", "EXPERTS"]


def _cache_dir() -> str:
    return os.environ.get("STEPGYM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "stepgym")


# -- local NLTK data for TextArena's word games ------------------------------------------
def _have_nltk(resource: str) -> bool:
    import nltk

    try:
        nltk.data.find(resource)
        return True
    except LookupError:
        return False


def _ensure_nltk_data() -> None:
    """Make NLTK's ``words`` corpus and English POS tagger loadable without a download."""
    import nltk

    if _have_nltk("corpora/words") and _have_nltk("taggers/averaged_perceptron_tagger_eng/"):
        return
    root = os.path.join(_cache_dir(), "nltk_data")
    if not os.path.isdir(os.path.join(root, "taggers")):
        data = resources.files("stepgym") / "data"
        answers = (data / "wordle_answers.txt").read_text().split()
        guesses = (data / "wordle_guesses.txt").read_text().split()
        allw = sorted(set(answers) | set(guesses))
        os.makedirs(_cache_dir(), exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".nltk-", dir=_cache_dir())
        try:
            os.makedirs(os.path.join(tmp, "corpora", "words"))
            with open(os.path.join(tmp, "corpora", "words", "en"), "w") as f:
                f.write("\n".join(allw) + "\n")
            with open(os.path.join(tmp, "corpora", "words", "en-basic"), "w") as f:
                f.write("\n".join(answers) + "\n")
            tag = os.path.join(tmp, "taggers", "averaged_perceptron_tagger_eng")
            os.makedirs(tag)
            # A tag dictionary alone answers every known word ("NN"): the games only keep nouns.
            for part, obj in (("weights", {}), ("tagdict", {w: "NN" for w in allw}), ("classes", ["NN"])):
                with open(os.path.join(tag, f"averaged_perceptron_tagger_eng.{part}.json"), "w") as f:
                    json.dump(obj, f)
            try:
                os.rename(tmp, root)
            except OSError:  # another process built it first
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if root not in nltk.data.path:
        # Last in the search path: whatever real NLTK data is installed keeps precedence.
        nltk.data.path.append(root)


@contextlib.contextmanager
def _no_nltk_download() -> Iterator[None]:
    """TextArena calls ``nltk.download`` unconditionally; with local data it has nothing to do."""
    import nltk

    original = nltk.download
    nltk.download = lambda *a, **k: True
    try:
        yield
    finally:
        nltk.download = original


# Built games are kept as prototypes and deep-copied: building TextArena's English
# dictionary takes ~2 s, a copy ~0.3 s.
_PROTOTYPES: dict[tuple, Any] = {}


def _make_game(game: str, game_kwargs: dict[str, Any]) -> Any:
    if game not in ENV_REGISTRY:
        import difflib

        close = difflib.get_close_matches(game, list(ENV_REGISTRY), n=3)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise InvalidConfig("game", game, f"a TextArena game id such as 'Wordle-v0'.{hint}")
    key = (game, json.dumps(game_kwargs, sort_keys=True, default=repr))
    if key not in _PROTOTYPES:
        _ensure_nltk_data()
        saved = random.getstate()
        try:
            with _no_nltk_download():
                # "-raw": no TextArena wrappers; stepgym's wrappers manage history and formats.
                _PROTOTYPES[key] = ta.make(f"{game}-raw" if f"{game}-raw" in ENV_REGISTRY else game, **game_kwargs)
        finally:
            random.setstate(saved)
    return copy.deepcopy(_PROTOTYPES[key])


def _base_name(game: str) -> str:
    return game.split("-v")[0]


#: Experts for single-player games: the optimal move from the game's hidden state.
# Module-level functions, not lambdas: an env holding its expert must pickle.
def _wordle_expert(g: Any) -> str:
    return f"[{g.state.game_state['secret_word']}]"


def _guess_the_number_expert(g: Any) -> str:
    return f"[{g.state.game_state['game_number']}]"


EXPERTS: dict[str, Any] = {
    "Wordle": _wordle_expert,
    "GuessTheNumber": _guess_the_number_expert,
}


class _RandomState:
    """Runs TextArena code on a private state of Python's ``random`` module."""

    def __init__(self) -> None:
        self.state: Any = None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        saved = random.getstate()
        if self.state is not None:
            random.setstate(self.state)
        try:
            yield
        finally:
            self.state = random.getstate()
            random.setstate(saved)


def _format(messages: list) -> str:
    """TextArena messages -> observation text (the player's own moves are not echoed)."""
    parts = []
    for m in messages:
        kind = m[2] if len(m) > 2 else None
        if kind == ta.ObservationType.PLAYER_ACTION:
            continue
        parts.append(str(m[1]).strip())
    return "\n\n".join(p for p in parts if p)


def _invalid(messages: list) -> str | None:
    for m in messages:
        if len(m) > 2 and m[2] == ta.ObservationType.GAME_ADMIN and "invalid move" in str(m[1]).lower():
            return str(m[1])
    return None


class TextArenaEnv(StepEnv):
    """A single-player TextArena game as a stepgym env.

    Args:
        game: a TextArena game id (``"Wordle-v0"``, ``"GuessTheNumber-v0"``, ``"Hangman-v0"``,
            ``"Minesweeper-v0"``, ...). Multi-player games go through
            :func:`textarena_aec_env` instead.
        game_kwargs: keyword arguments for the TextArena game (its own difficulty knobs,
            e.g. ``{"word_length": 7, "num_guesses": 9}`` for Wordle).
        max_steps: step limit (default 30).

    The expert exists for games listed in :data:`EXPERTS` (Wordle, GuessTheNumber): it
    reads the hidden answer and wins in one move; other games have none.

    Example:
        >>> import gymnasium as gym, stepgym
        >>> env = gym.make("stepgym/TextArena-v0", game="Wordle-v0")    # doctest: +SKIP
        >>> obs, info = env.reset(seed=0)                               # doctest: +SKIP
        >>> env.step("[crane]")[0].splitlines()[0]                       # doctest: +SKIP
        'You submitted [crane].'
    """

    description: ClassVar[str] = "Single-player TextArena games (Wordle-v0 by default; optional extra)"
    default_max_steps: ClassVar[int] = 30
    reward_range = (-1.0, 1.0)

    def __init__(self, game: str = "Wordle-v0", *, game_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(game, str):
            raise InvalidConfig("game", game, "a TextArena game id string such as 'Wordle-v0'")
        self.game = game
        self.game_kwargs = dict(game_kwargs or {})
        self._ta = _make_game(game, self.game_kwargs)
        self._rng = _RandomState()
        with self._rng.active():
            try:
                self._ta.reset(num_players=1, seed=0)
            except (AssertionError, ValueError, TypeError) as exc:
                raise InvalidConfig(
                    "game", game,
                    "a single-player TextArena game; for multi-player games use "
                    "stepgym.envs.textarena_adapter.textarena_aec_env(game, num_players=N) (a PettingZoo env)",
                ) from exc
        self._expert = EXPERTS.get(_base_name(game))

    def _reset(self, options: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        seed = int(self.np_random.integers(2**31 - 1))
        self._rng.state = None
        with self._rng.active():
            self._ta.reset(num_players=1, seed=seed)
            _, messages = self._ta.get_observation()
        return _format(messages), {"game": self.game, "game_seed": seed}

    def _step(self, action: str) -> StepResult:
        with self._rng.active():
            done, step_info = self._ta.step(action)
            info: dict[str, Any] = {}
            if done:
                rewards, game_info = self._ta.close()
                reward = float((rewards or {}).get(0, 0.0))
                gi = (game_info or {}).get(0, {})
                text = str(gi.get("reason", "The game is over."))
                info["textarena"] = {"reason": gi.get("reason"), "invalid_move": bool(gi.get("invalid_move"))}
                invalid = text if gi.get("invalid_move") else None
                return StepResult(text, reward=reward, terminated=True, success=reward >= 1.0,
                                  action_valid=invalid is None, error=invalid, info=info)
            _, messages = self._ta.get_observation()
        invalid = _invalid(messages)
        return StepResult(_format(messages) or "(no new message)", action_valid=invalid is None, error=invalid,
                          info=info)

    def expert_action(self) -> str:
        """The winning move for games with an expert (see :data:`EXPERTS`)."""
        if self._expert is None:
            raise NotImplementedError(f"TextArena game {self.game!r} has no expert; experts exist for {sorted(EXPERTS)}")
        return self._expert(self._ta)


class TextArenaAECEnv(AECEnv):
    """A multi-player TextArena game as a PettingZoo AEC env (text observations and actions).

    Agents are ``"player_0"``, ``"player_1"``, ...; ``observe(agent)`` returns the game's
    messages to that agent since its last move. Rewards (TextArena's, e.g. +1/-1) arrive
    when the game ends; ``infos`` carry ``action_valid``/``error`` like stepgym's envs.

    Args:
        game: a multi-player TextArena game id (``"TicTacToe-v0"``, ``"ConnectFour-v0"``, ...).
        num_players: players in the game.
        game_kwargs: keyword arguments for the TextArena game.
        max_chars: bound of the text spaces.

    Example:
        >>> env = textarena_aec_env("TicTacToe-v0")                     # doctest: +SKIP
        >>> env.reset(seed=0)                                           # doctest: +SKIP
        >>> for agent in env.agent_iter():                              # doctest: +SKIP
        ...     obs, reward, term, trunc, info = env.last()
        ...     env.step(None if term or trunc else "[4]")
    """

    metadata: ClassVar[dict[str, Any]] = {"name": "textarena_aec_v0", "render_modes": ["ansi"],
                                          "is_parallelizable": False}

    def __init__(self, game: str = "TicTacToe-v0", *, num_players: int = 2,
                 game_kwargs: dict[str, Any] | None = None, max_chars: int = 32_768) -> None:
        super().__init__()
        if not isinstance(num_players, int) or num_players < 2:
            raise InvalidConfig("num_players", num_players, "an int >= 2 (single-player games: stepgym/TextArena-v0)")
        self.game = game
        self.num_players = num_players
        self.render_mode = None
        self._ta = _make_game(game, dict(game_kwargs or {}))
        self._rng = _RandomState()
        self.possible_agents = [f"player_{i}" for i in range(num_players)]
        self.observation_spaces = {a: UnicodeText(max_chars) for a in self.possible_agents}
        self.action_spaces = {a: UnicodeText(max_chars) for a in self.possible_agents}
        self._max_chars = max_chars
        self._seeder = random.Random(0)
        self._buf: dict[str, list] = {}

    def observation_space(self, agent: str) -> UnicodeText:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> UnicodeText:
        return self.action_spaces[agent]

    def _collect(self) -> None:
        # Move every player's pending TextArena messages into our per-agent buffers.
        for pid, msgs in self._ta.state.observations.items():
            if pid >= 0 and msgs:
                self._buf[f"player_{pid}"].extend(msgs)
                self._ta.state.observations[pid] = []

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> None:
        if seed is not None:
            self._seeder = random.Random(seed)
        game_seed = self._seeder.randrange(2**31 - 1)
        self.agents = list(self.possible_agents)
        self.rewards = {a: 0.0 for a in self.agents}
        self._cumulative_rewards = {a: 0.0 for a in self.agents}
        self.terminations = {a: False for a in self.agents}
        self.truncations = {a: False for a in self.agents}
        self.infos = {a: {"action_valid": True, "error": None} for a in self.agents}
        self._buf = {a: [] for a in self.agents}
        self._rng.state = None
        with self._rng.active():
            try:
                self._ta.reset(num_players=self.num_players, seed=game_seed)
            except AssertionError as exc:
                raise InvalidConfig("num_players", self.num_players, f"a player count {self.game!r} supports") from exc
            self._collect()
            self.agent_selection = f"player_{self._ta.state.current_player_id}"

    def observe(self, agent: str) -> str:
        return _format(self._buf.get(agent, []))[-self._max_chars :]

    def step(self, action: str | None) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        if not isinstance(action, str):
            raise InvalidArgument(f"actions are text: expected str, got {type(action).__name__}")
        self._cumulative_rewards[agent] = 0.0
        self._buf[agent] = []  # it has read them
        with self._rng.active():
            done, _ = self._ta.step(action[: self._max_chars])
            self._collect()
            if done:
                rewards, game_info = self._ta.close()
                for a in self.agents:
                    pid = int(a.split("_")[1])
                    self.rewards[a] = float((rewards or {}).get(pid, 0.0))
                    self.terminations[a] = True
                    gi = (game_info or {}).get(pid, {})
                    self.infos[a] = {"action_valid": not gi.get("invalid_move", False), "error": None,
                                     "reason": gi.get("reason"), "success": self.rewards[a] >= 1.0}
            else:
                self.rewards = {a: 0.0 for a in self.agents}
                err = _invalid(self._buf[agent])
                self.infos[agent] = {"action_valid": err is None, "error": err}
                self.agent_selection = f"player_{self._ta.state.current_player_id}"
        self._accumulate_rewards()

    def render(self) -> str:
        return self.observe(self.agent_selection)

    def close(self) -> None:
        pass


def textarena_aec_env(game: str = "TicTacToe-v0", **kwargs: Any) -> TextArenaAECEnv:
    """Build the PettingZoo AEC view of a multi-player TextArena game (see :class:`TextArenaAECEnv`)."""
    return TextArenaAECEnv(game, **kwargs)
