"""Turn-based board games as text: tic-tac-toe and connect-four.

Two ways to play each game:

* **Single-agent Gymnasium views** (``stepgym/TicTacToe-v0``, ``stepgym/ConnectFour-v0``): the
  agent plays one side against a built-in opponent (minimax for tic-tac-toe, a one-ply
  heuristic for connect-four), so any single-agent trainer can train on them.
* **PettingZoo AEC envs** (:func:`tictactoe_aec`, :func:`connect_four_aec`): two agents,
  ``player_0`` (X, moves first) and ``player_1`` (O), text observations and text actions.
  PettingZoo is imported only when one of these is built.

Actions are a cell (tic-tac-toe, 1-9) or a column (connect-four, 1-7), bare (``5``), with a
verb (``place 5``, ``drop 4``) or inside ``<answer>...</answer>``.

Example:
    >>> import gymnasium as gym, stepgym
    >>> env = gym.make("stepgym/TicTacToe-v0")
    >>> obs, info = env.reset(seed=0)
    >>> done = False
    >>> while not done:
    ...     obs, reward, terminated, truncated, info = env.step(env.unwrapped.expert_action())
    ...     done = terminated or truncated
    >>> info["outcome"] in ("win", "draw"), info["success"]
    (True, True)
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any, ClassVar

from stepgym.core import StepEnv, StepResult, quote_action
from stepgym.envs._answer import normalize_command
from stepgym.errors import InvalidConfig

__all__ = [
    "TicTacToe",
    "ConnectFour",
    "TicTacToeEnv",
    "ConnectFourEnv",
    "tictactoe_aec",
    "connect_four_aec",
    "minimax_moves",
    "connect_four_heuristic",
]

MARKS = ("X", "O")
_VERBS = ("", "place ", "play ", "move ", "mark ", "cell ", "put ", "square ", "drop ", "column ", "col ")
_MOVE_RE = re.compile(r"^(?:[a-z]+\s+)*?(?:at\s+|on\s+|in\s+)?(\d+)$")


_TTT_LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
_TTT_LINES_BY_CELL = tuple(tuple(line for line in _TTT_LINES if c in line) for c in range(9))


# -- games (pure logic, shared by the Gymnasium views and the AEC envs) ---------------------


class TicTacToe:
    """Tic-tac-toe state: cells ``0..8`` (shown as 1-9), X moves first.

    Example:
        >>> g = TicTacToe()
        >>> for m in (0, 3, 1, 4, 2):
        ...     g.play(m)
        >>> g.winner
        0
    """

    name = "tic-tac-toe"
    n_moves = 9
    _LINES = _TTT_LINES
    _LINES_BY_CELL = _TTT_LINES_BY_CELL
    move_word = "cell"

    def __init__(self) -> None:
        self.cells = [" "] * 9
        self.to_move = 0
        self.winner: int | None = None
        self.done = False
        self.n_played = 0

    def legal(self) -> list[int]:
        return [i for i in range(9) if self.cells[i] == " "]

    def is_legal(self, m: int) -> bool:
        return 0 <= m < 9 and self.cells[m] == " "

    def play(self, m: int) -> None:
        mark = MARKS[self.to_move]
        cells = self.cells
        cells[m] = mark
        self.n_played += 1
        for a, b, c in self._LINES_BY_CELL[m]:
            if cells[a] == cells[b] == cells[c]:
                self.winner = self.to_move
                self.done = True
                break
        else:
            if self.n_played == 9:
                self.done = True
        self.to_move ^= 1

    def key(self) -> str:
        return "".join(self.cells)

    def board(self) -> str:
        c = [ch if ch != " " else str(i + 1) for i, ch in enumerate(self.cells)]
        sep = "\n---+---+---\n"
        return f" {c[0]} | {c[1]} | {c[2]}{sep} {c[3]} | {c[4]} | {c[5]}{sep} {c[6]} | {c[7]} | {c[8]}"

    @staticmethod
    def label(m: int) -> str:
        return str(m + 1)

    def parse(self, text: str) -> int | str:
        """The move index of ``text``, or an error message."""
        return _parse_number(text, 9, "a free cell number from 1 to 9", self)


class ConnectFour:
    """Connect-four state on a 6x7 bitboard; columns ``0..6`` (shown as 1-7), X moves first.

    Bit ``7*c + r`` is row ``r`` (0 = bottom) of column ``c``; the 7th bit of each column stays
    empty so that shifts never wrap across columns.

    Example:
        >>> g = ConnectFour()
        >>> for m in (0, 1, 0, 1, 0, 1, 0):
        ...     g.play(m)
        >>> g.winner
        0
    """

    name = "connect-four"
    n_moves = 7
    ROWS, COLS = 6, 7
    move_word = "column"

    def __init__(self) -> None:
        self.bits = [0, 0]
        self.heights = [7 * c for c in range(7)]
        self.to_move = 0
        self.winner: int | None = None
        self.done = False
        self.n_played = 0
        self.rows = [["."] * 7 for _ in range(6)]
        self._board: str | None = None

    def legal(self) -> list[int]:
        return [c for c in range(7) if self.heights[c] < 7 * c + 6]

    def is_legal(self, m: int) -> bool:
        return 0 <= m < 7 and self.heights[m] < 7 * m + 6

    def play(self, m: int) -> None:
        h = self.heights[m]
        self.rows[5 - (h - 7 * m)][m] = MARKS[self.to_move]
        self._board = None
        b = self.bits[self.to_move] | (1 << h)
        self.bits[self.to_move] = b
        self.heights[m] = h + 1
        self.n_played += 1
        if _won(b):
            self.winner = self.to_move
            self.done = True
        elif self.n_played == 42:
            self.done = True
        self.to_move ^= 1

    def key(self) -> tuple[int, int]:
        return (self.bits[0], self.bits[1])

    def board(self) -> str:
        # Cached between moves: observe() renders the same board for both players.
        if self._board is None:
            self._board = " 1 2 3 4 5 6 7\n" + "\n".join(" " + " ".join(r) for r in self.rows)
        return self._board

    @staticmethod
    def label(m: int) -> str:
        return str(m + 1)

    def parse(self, text: str) -> int | str:
        return _parse_number(text, 7, "a column number from 1 to 7 that is not full", self)


# Every accepted spelling of a move, looked up in one dict access per step.
_FORMS: dict[str, int] = {}
for _v in _VERBS:
    for _n in range(1, 10):
        _FORMS[f"{_v}{_n}"] = _n


def _parse_number(text: str, n: int, expected: str, game: TicTacToe | ConnectFour) -> int | str:
    cmd = normalize_command(text)
    k = _FORMS.get(cmd)
    if k is None:
        m = _MOVE_RE.match(cmd)
        if m is None:
            return f"expected {expected}, like '{n // 2 + 1}' or 'place {n // 2 + 1}'"
        k = int(m.group(1)) if len(m.group(1)) < 4 else 0
    if not 1 <= k <= n:
        return f"expected {expected}; {k} is out of range"
    if not game.is_legal(k - 1):
        return f"{game.move_word} {k} is {'taken' if isinstance(game, TicTacToe) else 'full'}; choose another"
    return k - 1


def _won(b: int) -> bool:
    for s in (1, 7, 6, 8):
        m = b & (b >> s)
        if m & (m >> (2 * s)):
            return True
    return False


# -- opponents and experts ----------------------------------------------------------------------

_TTT_CACHE: dict[str, tuple[int, tuple[int, ...]]] = {}


def _ttt_negamax(cells: list[str], player: int, empties: int) -> tuple[int, tuple[int, ...]]:
    """(score for the player to move, its best moves); faster wins score higher."""
    # The player is part of the key: with invalid_action="pass" it is not implied by the cells.
    key = "".join(cells) + "XO"[player]
    hit = _TTT_CACHE.get(key)
    if hit is not None:
        return hit
    mark = MARKS[player]
    best, moves = -100, []
    for m in range(9):
        if cells[m] != " ":
            continue
        cells[m] = mark
        if any(cells[a] == cells[b] == cells[c] for a, b, c in TicTacToe._LINES_BY_CELL[m]):
            score = 1 + empties
        elif empties == 1:
            score = 0
        else:
            score = -_ttt_negamax(cells, player ^ 1, empties - 1)[0]
        cells[m] = " "
        if score > best:
            best, moves = score, [m]
        elif score == best:
            moves.append(m)
    res = (best, tuple(moves))
    _TTT_CACHE[key] = res
    return res


def minimax_moves(game: TicTacToe) -> tuple[int, ...]:
    """Every optimal move for the player to move (perfect play; faster wins preferred).

    Example:
        >>> g = TicTacToe()
        >>> for m in (0, 4, 1):
        ...     g.play(m)
        >>> minimax_moves(g)   # O must block at cell 3 (index 2)
        (2,)
    """
    return _ttt_negamax(list(game.cells), game.to_move, 9 - game.n_played)[1]


_FULL_BOARD = sum(((1 << 6) - 1) << (7 * c) for c in range(7))
_CENTER_ORDER = (3, 2, 4, 1, 5, 0, 6)


def _winning_cells(pos: int, mask: int) -> int:
    """Empty cells where one more disc of ``pos`` makes four (bit trick after Pascal Pons)."""
    r = (pos << 1) & (pos << 2) & (pos << 3)
    for s in (7, 6, 8):
        p = (pos << s) & (pos << (2 * s))
        r |= p & (pos << (3 * s))
        r |= p & (pos >> s)
        p = (pos >> s) & (pos >> (2 * s))
        r |= p & (pos << s)
        r |= p & (pos >> (3 * s))
    return r & (_FULL_BOARD ^ mask)


def connect_four_heuristic(me: int, opp: int, heights: list[int], order: tuple[int, ...] = _CENTER_ORDER) -> int:
    """The built-in connect-four opponent: win, else block, else the first safe column in ``order``.

    A column is unsafe when playing it lets the other side win on the cell just above.

    Example:
        >>> g = ConnectFour()
        >>> for m in (0, 6, 0, 6, 0):
        ...     g.play(m)
        >>> connect_four_heuristic(g.bits[1], g.bits[0], g.heights)   # O blocks column 1
        0
    """
    legal = [c for c in order if heights[c] < 7 * c + 6]
    for c in legal:
        if _won(me | (1 << heights[c])):
            return c
    for c in legal:
        if _won(opp | (1 << heights[c])):
            return c
    for c in legal:
        above = heights[c] + 1
        if above < 7 * c + 6 and _won(opp | (1 << above)):
            continue
        return c
    return legal[0]


def _c4_plan(me: int, opp: int, heights: list[int], order: tuple[int, ...], depth: int) -> list[int] | None:
    """Expert moves that beat the (deterministic) heuristic within ``depth`` moves, or None."""
    for c in _CENTER_ORDER:
        h = heights[c]
        if h >= 7 * c + 6:
            continue
        m2 = me | (1 << h)
        if _won(m2):
            return [c]
        if depth == 1:
            continue
        heights[c] = h + 1
        try:
            if all(heights[k] >= 7 * k + 6 for k in range(7)):
                continue
            r = connect_four_heuristic(opp, m2, heights, order)
            rh = heights[r]
            o2 = opp | (1 << rh)
            if _won(o2):
                continue
            heights[r] = rh + 1
            try:
                rest = _c4_plan(m2, o2, heights, order, depth - 1)
            finally:
                heights[r] = rh
            if rest is not None:
                return [c, *rest]
        finally:
            heights[c] = h
    return None


def _popcount(x: int) -> int:
    return x.bit_count()


def _c4_eval(me: int, opp: int) -> int:
    mask = me | opp
    centre = sum((4 - abs(3 - c)) * _popcount((me >> (7 * c)) & 63) for c in range(7))
    return 4 * _popcount(_winning_cells(me, mask)) - 4 * _popcount(_winning_cells(opp, mask)) + centre


def _c4_fallback(me: int, opp: int, heights: list[int], order: tuple[int, ...]) -> int:
    """Best move by a two-ply look-ahead against the heuristic, when no forced win is in reach."""
    best, best_score = -1, None
    for c in _CENTER_ORDER:
        h = heights[c]
        if h >= 7 * c + 6:
            continue
        m2 = me | (1 << h)
        heights[c] = h + 1
        if all(heights[k] >= 7 * k + 6 for k in range(7)):
            score = 0
        else:
            r = connect_four_heuristic(opp, m2, heights, order)
            o2 = opp | (1 << heights[r])
            score = -10_000 if _won(o2) else _c4_eval(m2, o2)
        heights[c] = h
        if best_score is None or score > best_score:
            best, best_score = c, score
    return best


# -- single-agent views ---------------------------------------------------------------------


class _VersusEnv(StepEnv):
    """Shared logic of the single-agent views: the agent plays one side against a bot."""

    game_cls: ClassVar[type] = TicTacToe
    #: whether a draw counts as success (it does where perfect play forces draws).
    success_on_draw: ClassVar[bool] = True
    default_max_steps: ClassVar[int] = 12
    draw_reward: ClassVar[float] = 0.5

    def __init__(self, agent_first: bool | None = None, mistake_prob: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if agent_first is not None and not isinstance(agent_first, bool):
            raise InvalidConfig("agent_first", agent_first, "True, False or None (random each episode)")
        if not isinstance(mistake_prob, (int, float)) or not 0.0 <= mistake_prob <= 1.0:
            raise InvalidConfig("mistake_prob", mistake_prob, "a probability from 0 to 1")
        self.agent_first = agent_first
        self.mistake_prob = float(mistake_prob)
        self.game = self.game_cls()
        self.side = 0
        self._rules = ""

    # subclass hooks
    def _opponent_move(self) -> int:
        raise NotImplementedError

    def _prompt(self) -> str:
        legal = ", ".join(self.game.label(m) for m in self.game.legal())
        return f"You are {MARKS[self.side]}. Legal {self.game.move_word}s: {legal}."

    def _bot_move(self) -> int:
        if self.mistake_prob and self.np_random.random() < self.mistake_prob:
            legal = self.game.legal()
            return legal[int(self.np_random.integers(len(legal)))]
        return self._opponent_move()

    def _reset(self, options: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        self.game = self.game_cls()
        first = self.agent_first if self.agent_first is not None else bool(self.np_random.integers(2))
        self.side = 0 if first else 1
        self._on_new_game()
        opening = ""
        if not first:
            m = self._bot_move()
            self.game.play(m)
            opening = f"The opponent ({MARKS[0]}) played {self.game.label(m)}.\n"
        obs = self._rules + "\n\n" + opening + self.game.board() + "\n" + self._prompt()
        return obs, {"side": MARKS[self.side]}

    def _on_new_game(self) -> None:
        pass

    def _outcome(self) -> tuple[str, float, bool]:
        g = self.game
        if g.winner is None:
            return "draw", self.draw_reward, self.success_on_draw
        if g.winner == self.side:
            return "win", 1.0, True
        return "loss", 0.0, False

    def _step(self, action: str) -> StepResult:
        g = self.game
        m = g.parse(action)
        if isinstance(m, str):
            return StepResult(
                observation=f"Invalid move {quote_action(action)}: {m}.\n{g.board()}\n{self._prompt()}",
                action_valid=False,
                error=m,
            )
        g.play(m)
        text = ""
        if not g.done:
            r = self._bot_move()
            g.play(r)
            text = f"The opponent played {g.label(r)}.\n"
        if g.done:
            outcome, reward, success = self._outcome()
            verdict = {"win": "You win.", "draw": "It is a draw.", "loss": "You lose."}[outcome]
            return StepResult(
                observation=text + g.board() + "\n" + verdict,
                reward=reward,
                terminated=True,
                success=success,
                info={"outcome": outcome},
            )
        return StepResult(observation=text + g.board() + "\n" + self._prompt())

    def _on_truncate(self) -> dict[str, Any]:
        return {"outcome": "unfinished"}


class TicTacToeEnv(_VersusEnv):
    """Tic-tac-toe against a minimax opponent.

    Reward 1 for a win, 0.5 for a draw, 0 for a loss; ``info["success"]`` is True for a win
    or a draw (a perfect opponent can always force a draw). ``info["outcome"]`` says which.

    Args:
        agent_first: True (agent is X), False (agent is O), None (random per episode, default).
        mistake_prob: chance the opponent plays a random legal move instead of a minimax one
            (default 0: perfect play; ties between optimal moves are broken at random).
        max_steps: step limit (default 12; invalid moves use steps too).

    Example:
        >>> import gymnasium as gym, stepgym
        >>> env = gym.make("stepgym/TicTacToe-v0", agent_first=True)
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step("<answer>5</answer>")
        >>> info["action_valid"]
        True
    """

    description: ClassVar[str] = "Tic-tac-toe as text against a minimax opponent (PettingZoo AEC version too)"
    game_cls: ClassVar[type] = TicTacToe
    success_on_draw: ClassVar[bool] = True
    default_max_steps: ClassVar[int] = 12

    def __init__(self, agent_first: bool | None = None, mistake_prob: float = 0.0, **kwargs: Any) -> None:
        super().__init__(agent_first=agent_first, mistake_prob=mistake_prob, **kwargs)
        self._rules = (
            "Tic-tac-toe. Players take turns marking a free cell; three marks in a row, column or diagonal "
            "win. X moves first. Free cells show their number. Answer with the number of a free cell, e.g. 5 "
            "or <answer>5</answer>."
        )

    def _opponent_move(self) -> int:
        moves = minimax_moves(self.game)
        return moves[int(self.np_random.integers(len(moves)))] if len(moves) > 1 else moves[0]

    def expert_action(self) -> str:
        """A minimax move (wins when it can, never loses)."""
        return self.game.label(minimax_moves(self.game)[0])


class ConnectFourEnv(_VersusEnv):
    """Connect-four against a heuristic opponent (win, else block, else a safe central column).

    Reward 1 for a win, 0.5 for a draw, 0 for a loss; ``info["success"]`` is True for a win
    only. The opponent's column preference (centre first, ties in a per-episode random order)
    is drawn at reset.

    Args:
        agent_first: True (agent is X), False (agent is O), None (random per episode, default).
        mistake_prob: chance the opponent plays a random legal column (default 0).
        max_steps: step limit (default 30; invalid moves use steps too).

    Example:
        >>> import gymnasium as gym, stepgym
        >>> env = gym.make("stepgym/ConnectFour-v0", agent_first=True)
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step("drop 4")
        >>> info["action_valid"]
        True
    """

    description: ClassVar[str] = "Connect-four as text against a heuristic opponent (PettingZoo AEC version too)"
    game_cls: ClassVar[type] = ConnectFour
    success_on_draw: ClassVar[bool] = False
    default_max_steps: ClassVar[int] = 30

    #: expert look-ahead in own moves when searching for a forced win against the heuristic
    plan_depth: ClassVar[int] = 4

    def __init__(self, agent_first: bool | None = None, mistake_prob: float = 0.0, **kwargs: Any) -> None:
        super().__init__(agent_first=agent_first, mistake_prob=mistake_prob, **kwargs)
        self._order: tuple[int, ...] = _CENTER_ORDER
        self._plan: dict[tuple[int, int], int] = {}
        self._rules = (
            "Connect-four. Players take turns dropping a disc into one of 7 columns; it falls to the lowest "
            "free row. Four of your discs in a row (across, up or diagonal) win. X moves first; '.' is empty. "
            "Answer with a column number, e.g. 4 or <answer>4</answer>."
        )

    def _on_new_game(self) -> None:
        # Centre-first preference with a per-episode random order among equally central columns.
        flip = self.np_random.integers(2, size=3).tolist()
        order = [3]
        for (a, b), f in zip(((2, 4), (1, 5), (0, 6)), flip):
            order.extend((b, a) if f else (a, b))
        self._order = tuple(order)
        self._plan = {}

    def _opponent_move(self) -> int:
        g = self.game
        me = g.to_move
        return connect_four_heuristic(g.bits[me], g.bits[me ^ 1], g.heights, self._order)

    def expert_action(self) -> str:
        """A move of the shortest forced win against the heuristic, else a two-ply best move."""
        g = self.game
        me = g.to_move
        key = (g.bits[me], g.bits[me ^ 1])
        m = self._plan.get(key)
        if m is None:
            heights = list(g.heights)
            plan = None
            for depth in range(1, self.plan_depth + 1):
                plan = _c4_plan(key[0], key[1], heights, self._order, depth)
                if plan is not None:
                    break
            if plan is None:
                return g.label(_c4_fallback(key[0], key[1], heights, self._order))
            # Cache the plan along the opponent's (deterministic) replies.
            self._plan = {}
            a, b = key
            for c in plan:
                self._plan[(a, b)] = c
                a |= 1 << heights[c]
                heights[c] += 1
                if _won(a) or all(heights[k] >= 7 * k + 6 for k in range(7)):
                    break
                r = connect_four_heuristic(b, a, heights, self._order)
                b |= 1 << heights[r]
                heights[r] += 1
            m = plan[0]
        return g.label(m)


# -- PettingZoo AEC envs (built lazily so that ``import stepgym`` never imports pettingzoo) -----


@cache
def _aec_class() -> type:
    from pettingzoo import AECEnv
    from pettingzoo.utils import AgentSelector

    from stepgym.spaces import UnicodeText

    class BoardGameAEC(AECEnv):
        """A two-player text board game under PettingZoo's AEC API.

        Agents ``player_0`` (X, first) and ``player_1`` (O). Observations are text (board,
        your mark, legal moves, the last error); actions are text. A winner gets +1, the
        loser -1, a draw 0. An invalid action keeps the turn with the same agent and sets
        ``infos[agent]["action_valid"] = False``; after ``max_invalid`` invalid actions in a
        row that agent forfeits (-1). ``max_turns`` truncates long games.

        ``invalid_action="pass"`` makes every step one turn instead: an invalid action loses
        the move and the turn passes to the other agent (PettingZoo's cycle-based
        conventions, ``max_cycles`` and parallel play, need this). ``max_invalid=None``
        never forfeits.
        """

        metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "human"], "is_parallelizable": False}

        def __init__(self, game: str = "tictactoe", max_invalid: int | None = 3, max_turns: int | None = None,
                     render_mode: str | None = None, invalid_action: str = "retry") -> None:
            super().__init__()
            games = {"tictactoe": TicTacToe, "connect_four": ConnectFour}
            if game not in games:
                raise InvalidConfig("game", game, f"one of {sorted(games)}")
            if max_invalid is not None and (not isinstance(max_invalid, int) or isinstance(max_invalid, bool)
                                            or max_invalid < 1):
                raise InvalidConfig("max_invalid", max_invalid, "a positive int or None")
            if max_turns is not None and (not isinstance(max_turns, int) or isinstance(max_turns, bool)
                                          or max_turns < 1):
                raise InvalidConfig("max_turns", max_turns, "a positive int or None")
            if invalid_action not in ("retry", "pass"):
                raise InvalidConfig("invalid_action", invalid_action, "'retry' or 'pass'")
            self.invalid_action = invalid_action
            if render_mode not in (None, "ansi", "human"):
                raise InvalidConfig("render_mode", render_mode, "'ansi', 'human' or None")
            self.game_name = game
            self._game_cls = games[game]
            self.metadata = {**self.metadata, "name": f"stepgym_{game}_v0"}
            self.possible_agents = ["player_0", "player_1"]
            self.agents = self.possible_agents[:]
            self.max_invalid = max_invalid
            self.max_turns = max_turns if max_turns is not None else 4 * self._game_cls.n_moves * 2
            self.render_mode = render_mode
            self._obs_space = UnicodeText(4096)
            self._act_space = UnicodeText(1024)
            self.game = self._game_cls()
            self._selector = AgentSelector(self.agents)
            self.agent_selection = self.agents[0]
            self.rewards = dict.fromkeys(self.agents, 0.0)
            self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
            self.terminations = dict.fromkeys(self.agents, False)
            self.truncations = dict.fromkeys(self.agents, False)
            self.infos: dict[str, dict[str, Any]] = {a: {} for a in self.agents}
            self._errors: dict[str, str] = {}
            self._invalid = dict.fromkeys(self.agents, 0)
            self._turns = 0
            self._last = ""

        def observation_space(self, agent: str) -> UnicodeText:
            return self._obs_space

        def action_space(self, agent: str) -> UnicodeText:
            return self._act_space

        def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> None:
            if seed is not None:
                self._obs_space.seed(seed)
                self._act_space.seed(seed + 1)
            self.game = self._game_cls()
            self.agents = self.possible_agents[:]
            self._selector.reinit(self.agents)
            self.agent_selection = self._selector.reset()
            self.rewards = dict.fromkeys(self.agents, 0.0)
            self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
            self.terminations = dict.fromkeys(self.agents, False)
            self.truncations = dict.fromkeys(self.agents, False)
            self.infos = {a: {"action_valid": True, "error": None, "mark": MARKS[i]} for i, a in enumerate(self.agents)}
            self._errors = {}
            self._invalid = dict.fromkeys(self.agents, 0)
            self._turns = 0
            self._last = ""

        def observe(self, agent: str) -> str:
            g = self.game
            i = self.possible_agents.index(agent)
            lines = [f"{g.name.capitalize()}. You are {MARKS[i]} ({agent}).", g.board()]
            if self._last:
                lines.append(self._last)
            err = self._errors.get(agent)
            if err:
                lines.append(f"Your last action was invalid: {err}.")
            if g.done:
                lines.append("Game over: " + ("a draw." if g.winner is None else f"{MARKS[g.winner]} wins."))
            elif agent in self.agents and self.agent_selection == agent:
                legal = ", ".join(g.label(m) for m in g.legal())
                lines.append(f"Your move. Legal {g.move_word}s: {legal}.")
            else:
                lines.append("Waiting for the other player.")
            return "\n".join(lines)

        def step(self, action: Any) -> None:
            agent = self.agent_selection
            if self.terminations[agent] or self.truncations[agent]:
                self._was_dead_step(action)
                return
            self._cumulative_rewards[agent] = 0.0
            self.rewards = dict.fromkeys(self.agents, 0.0)
            other = self.possible_agents[1 - self.possible_agents.index(agent)]
            g = self.game
            m = g.parse(action) if isinstance(action, str) else f"actions are text, got {type(action).__name__}"
            self._turns += 1
            if isinstance(m, str):
                self._errors[agent] = m
                self._invalid[agent] += 1
                self.infos[agent] = {"action_valid": False, "error": m, "mark": self.infos[agent].get("mark")}
                if self.max_invalid is not None and self._invalid[agent] >= self.max_invalid:
                    self._last = f"{agent} forfeits after {self.max_invalid} invalid actions in a row."
                    self.rewards[agent], self.rewards[other] = -1.0, 1.0
                    self.terminations = dict.fromkeys(self.agents, True)
                elif self._turns >= self.max_turns:
                    self.truncations = dict.fromkeys(self.agents, True)
                elif self.invalid_action == "pass":
                    self._last = f"{MARKS[g.to_move]} made an invalid move and lost the turn."
                if self.invalid_action == "pass":
                    g.to_move ^= 1
                    self.agent_selection = self._selector.next()
                self._accumulate_rewards()
                return
            self._errors.pop(agent, None)
            self._invalid[agent] = 0
            self.infos[agent] = {"action_valid": True, "error": None, "mark": self.infos[agent].get("mark")}
            g.play(m)
            self._last = f"{MARKS[1 - g.to_move]} played {g.label(m)}."
            if g.done:
                if g.winner is not None:
                    winner = self.possible_agents[g.winner]
                    loser = self.possible_agents[1 - g.winner]
                    self.rewards[winner], self.rewards[loser] = 1.0, -1.0
                self.terminations = dict.fromkeys(self.agents, True)
            elif self._turns >= self.max_turns:
                self.truncations = dict.fromkeys(self.agents, True)
            self._accumulate_rewards()
            self.agent_selection = self._selector.next()
            if self.render_mode == "human":
                self.render()

        def render(self) -> str | None:
            text = self.game.board()
            if self.render_mode == "human":
                print(text)
                return None
            return text

        def close(self) -> None:
            pass

        def expert_action(self) -> str:
            """A strong move for the agent to act: minimax (tic-tac-toe) or the heuristic's plan search."""
            g = self.game
            if isinstance(g, TicTacToe):
                return g.label(minimax_moves(g)[0])
            me = g.to_move
            plan = None
            heights = list(g.heights)
            for depth in (1, 2, 3):
                plan = _c4_plan(g.bits[me], g.bits[me ^ 1], heights, _CENTER_ORDER, depth)
                if plan:
                    return g.label(plan[0])
            return g.label(connect_four_heuristic(g.bits[me], g.bits[me ^ 1], heights))

    # A module-level name (resolved lazily by __getattr__ below) so that instances pickle.
    BoardGameAEC.__qualname__ = "BoardGameAEC"
    BoardGameAEC.__module__ = __name__
    globals()["BoardGameAEC"] = BoardGameAEC
    return BoardGameAEC


@cache
def _parallel_class() -> type:
    from pettingzoo import ParallelEnv

    from stepgym.errors import ResetNeeded

    aec_cls = _aec_class()

    class BoardGameParallel(ParallelEnv):
        """A text board game under PettingZoo's parallel API: one ``step`` is one round.

        In a round ``player_0`` moves, then ``player_1`` (unless the game ended on
        ``player_0``'s move; then ``player_1``'s action is ignored). ``player_1`` writes its
        action before seeing ``player_0``'s move of the same round, as in any parallel view of
        a turn-based game; for move-by-move play use the AEC env. Invalid actions lose the
        move (``invalid_action="pass"``); a missing action counts as an empty, invalid one.
        Rewards are summed over the round. Takes :class:`BoardGameAEC`'s arguments.
        """

        metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "human"], "is_parallelizable": True}

        def __init__(self, game: str = "tictactoe", max_invalid: int | None = None, max_turns: int | None = None,
                     render_mode: str | None = None) -> None:
            self.aec_env = aec_cls(game=game, max_invalid=max_invalid, max_turns=max_turns,
                                   render_mode=render_mode, invalid_action="pass")
            self.metadata = {**self.metadata, "name": self.aec_env.metadata["name"]}
            self.possible_agents = list(self.aec_env.possible_agents)
            self.agents: list[str] = []
            self.render_mode = render_mode

        def observation_space(self, agent: str) -> Any:
            return self.aec_env.observation_space(agent)

        def action_space(self, agent: str) -> Any:
            return self.aec_env.action_space(agent)

        def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
            aec = self.aec_env
            aec.reset(seed=seed, options=options)
            self.agents = list(aec.agents)
            return {a: aec.observe(a) for a in self.agents}, {a: dict(aec.infos[a]) for a in self.agents}

        def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
            if not self.agents:
                raise ResetNeeded("step() called before reset() or after the game ended; call reset()")
            aec = self.aec_env
            live = list(self.agents)
            rewards = dict.fromkeys(live, 0.0)
            for agent in live:
                if aec.terminations[agent] or aec.truncations[agent]:
                    break
                if aec.agent_selection != agent:  # invariant: with "pass" turns alternate
                    raise RuntimeError(f"internal error: expected {agent} to move, not {aec.agent_selection}")
                aec.step(actions.get(agent, ""))
                for a in live:
                    rewards[a] += aec.rewards[a]
            obs = {a: aec.observe(a) for a in live}
            terms = {a: bool(aec.terminations[a]) for a in live}
            truncs = {a: bool(aec.truncations[a]) for a in live}
            infos = {a: dict(aec.infos[a]) for a in live}
            if any(terms.values()) or any(truncs.values()):
                self.agents = []
            return obs, rewards, terms, truncs, infos

        def render(self) -> str | None:
            return self.aec_env.render()

        def close(self) -> None:
            self.aec_env.close()

        def expert_action(self) -> str:
            """A strong move for the agent to move next (``player_0`` at the start of a round)."""
            return self.aec_env.expert_action()

    BoardGameParallel.__qualname__ = "BoardGameParallel"
    BoardGameParallel.__module__ = __name__
    globals()["BoardGameParallel"] = BoardGameParallel
    return BoardGameParallel


def __getattr__(name: str) -> Any:
    if name == "BoardGameAEC":
        return _aec_class()
    if name == "BoardGameParallel":
        return _parallel_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def tictactoe_aec(**kwargs: Any) -> Any:
    """Tic-tac-toe as a PettingZoo AEC env with text observations and actions.

    Example:
        >>> env = tictactoe_aec()
        >>> env.reset(seed=0)
        >>> env.agent_selection
        'player_0'
        >>> env.step("5")
        >>> env.agent_selection, env.infos["player_0"]["action_valid"]
        ('player_1', True)
    """
    return _aec_class()(game="tictactoe", **kwargs)


def connect_four_aec(**kwargs: Any) -> Any:
    """Connect-four as a PettingZoo AEC env with text observations and actions.

    Example:
        >>> env = connect_four_aec()
        >>> env.reset(seed=0)
        >>> env.step("drop 4")
        >>> "X played 4" in env.observe("player_1")
        True
    """
    return _aec_class()(game="connect_four", **kwargs)
