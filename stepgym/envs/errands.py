"""Errands-v0: a long-horizon fetch-and-deliver errand with a note, a locked chest and a key.

A small house of rooms (``hall``, ``kitchen``, ``study`` ...), each with a few closed
containers (``drawer``, ``box``, ``crate`` ...). The task names two to four items and one
target container, for example *put the coin and the letter in the chest in the study*.
The items lie in closed containers of other rooms; in the hall lies a note that says where
each needed thing is. When the target is locked, a key lies somewhere too. The agent types
short commands: ``read note``, ``go garage``, ``open crate``, ``take coin``,
``unlock chest``, ``put coin in chest``, ``look``, ``inventory``.

An expert episode is 10 to 30 steps, and several decisions pay off only later: reading the
note (it saves a search of every container), fetching the key before walking to the
target, visiting each room once. Rewards are dense and exact: the env keeps a progress
count (per goal item: 1 when held, 2 when in the target; 1 for unlocking the target) and
pays ``progress_reward`` per unit gained (and takes it back per unit lost), so the steps
that move the task forward earn a small reward, steps that only enable later progress
(``read note``, ``go X``, ``open X``, ``take key``) earn 0, an invalid step costs
``invalid_penalty``, and finishing pays 1.0. ``info["reward_components"]`` splits every
reward into ``progress``, ``invalid`` and ``success`` (they sum to the reward).

The expert is fair: it acts only on what the agent could know (the note once read, the
containers opened so far), so a clone of it learns a policy that works from observations.

Example:
    >>> import gymnasium as gym, stepgym
    >>> env = gym.make("stepgym/Errands-v0", difficulty="easy")
    >>> obs, start = env.reset(seed=0)
    >>> total, steps = 0.0, 0
    >>> while True:
    ...     obs, reward, terminated, truncated, info = env.step(env.unwrapped.expert_action())
    ...     total, steps = total + reward, steps + 1
    ...     if terminated or truncated:
    ...         break
    >>> info["success"], steps == start["optimal_steps"], 10 <= steps <= 30, round(total, 2)
    (True, True, True, 1.5)
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from stepgym.core import StepEnv, StepResult, quote_action
from stepgym.envs._answer import extract_answer
from stepgym.errors import InvalidArgument, InvalidConfig

__all__ = ["ErrandsEnv", "DIFFICULTIES"]

# Names of one or two tokens of the tiny model's tokenizer: copying a name from the
# observation into a command is then a short copy (the long names of a first version left
# the tiny clone guessing item names).
_ROOMS = ["hall", "kitchen", "study", "bedroom", "attic", "cellar", "den", "yard", "loft", "lab"]
_CONTAINERS = ["drawer", "box", "cabinet", "desk", "bag", "case", "jar", "bin"]
_ITEMS = ["pen", "lamp", "phone", "mug", "book", "cup", "ring", "map", "hat", "bell", "stamp", "comb", "card",
          "ball", "toy", "cake", "fish", "watch"]
_KEY = "key"
_NOTE = "note"
_START = "hall"

#: Presets: rooms, containers per room, goal items, target locked, distractor items, step limit.
DIFFICULTIES: dict[str, dict[str, Any]] = {
    "easy": {"num_rooms": 4, "containers_per_room": 2, "num_items": 2, "locked": True, "num_distractors": 3,
             "max_steps": 24},
    "medium": {"num_rooms": 5, "containers_per_room": 2, "num_items": 3, "locked": True, "num_distractors": 5,
               "max_steps": 32},
    "hard": {"num_rooms": 6, "containers_per_room": 3, "num_items": 4, "locked": True, "num_distractors": 8,
             "max_steps": 40},
}

_HELP = "Commands: go ROOM, read note, open X, take ITEM, put ITEM in X, unlock X, look, inventory."


@dataclass
class _Box:
    """One container: its room, whether it is open / locked, and what is in it."""

    name: str
    room: str
    is_open: bool = False
    locked: bool = False
    contents: list[str] = field(default_factory=list)
    searched: bool = False  # has the agent seen inside it (its contents are then known)


class _World:
    """The state of one episode and the command semantics (shared by the env and the expert)."""

    def __init__(self) -> None:
        self.rooms: list[str] = []
        self.boxes: dict[tuple[str, str], _Box] = {}  # (room, container) -> box
        self.at = _START
        self.held: list[str] = []
        self.goal: list[str] = []
        self.target: tuple[str, str] = ("", "")
        self.locked_target = False
        self.has_note = True
        self.note_read = False
        self.note_text = ""
        self.known: set[str] = set()  # items whose place the agent knows
        self.needed_at_start: tuple[str, ...] = ()  # what the note lists

    # -- queries ------------------------------------------------------------------------
    def here(self) -> list[_Box]:
        return [b for (room, _), b in self.boxes.items() if room == self.at]

    def box_here(self, name: str) -> _Box | None:
        return self.boxes.get((self.at, name))

    def where(self, item: str) -> tuple[str, str] | None:
        """(room, container) of an item that is not held."""
        for key, b in self.boxes.items():
            if item in b.contents:
                return key
        return None

    def visible(self) -> list[str]:
        return [i for b in self.here() if b.is_open for i in b.contents]

    def needed(self) -> list[str]:
        """Goal items not yet delivered, then the key while the target is locked and the key is not held."""
        tgt = self.boxes[self.target]
        out = [i for i in self.goal if i not in tgt.contents]
        if tgt.locked and _KEY not in self.held:
            out.append(_KEY)
        return out

    def progress(self) -> int:
        tgt = self.boxes[self.target]
        units = sum(2 if i in tgt.contents else 1 if i in self.held else 0 for i in self.goal)
        if self.locked_target and not tgt.locked:
            units += 1
        return units

    def max_progress(self) -> int:
        return 2 * len(self.goal) + int(self.locked_target)

    def done(self) -> bool:
        tgt = self.boxes[self.target]
        return all(i in tgt.contents for i in self.goal)

    # -- text -------------------------------------------------------------------------------
    @staticmethod
    def _list(names: list[str]) -> str:
        return ", ".join(names) if names else "nothing"

    def describe_box(self, b: _Box) -> str:
        if b.locked:
            return f"{b.name} (locked)"
        if not b.is_open:
            return f"{b.name} (closed)"
        return f"{b.name} (open: {self._list(b.contents)})" if b.contents else f"{b.name} (open, empty)"

    def status(self) -> str:
        things = ([_NOTE] if self.has_note and self.at == _START else []) + [self.describe_box(b) for b in self.here()]
        line = f"{self.at.capitalize()}: {', '.join(things)}. Holding: {self._list(self.held)}."
        if self.note_read:
            line += f"\nNote: {self.note_text}"
        return line

    # -- admissible commands --------------------------------------------------------------------
    def admissible(self) -> list[str]:
        cmds = [f"go {r}" for r in self.rooms if r != self.at]
        if self.has_note and self.at == _START:
            cmds.append("read note")
        for b in self.here():
            if b.locked:
                if _KEY in self.held:
                    cmds.append(f"unlock {b.name}")
            elif b.is_open:
                cmds.append(f"close {b.name}")
                cmds += [f"take {i}" for i in b.contents]
                cmds += [f"put {i} in {b.name}" for i in self.held]
            else:
                cmds.append(f"open {b.name}")
        return cmds + ["look", "inventory"]

    # -- commands -------------------------------------------------------------------------------
    def apply(self, command: str) -> tuple[bool, str]:
        """Run one command. Returns (did it apply, what happened in one line)."""
        cmd = " ".join(command.lower().strip().rstrip(".!").split())
        cmd = re.sub(r"\b(the|a|an)\s+", "", cmd)
        if cmd in ("look", "look around", "l"):
            return True, "You look around."
        if cmd in ("inventory", "inv", "i"):
            return True, f"You are holding: {self._list(self.held)}."
        if m := re.fullmatch(r"(?:go to|go|goto|walk to|move to|enter)\s+(.+)", cmd):
            return self._go(m.group(1))
        if m := re.fullmatch(r"read(?:\s+(.+))?", cmd):
            return self._read(m.group(1) or _NOTE)
        if m := re.fullmatch(r"(open|close)\s+(.+)", cmd):
            return self._open(m.group(2), m.group(1) == "open")
        if m := re.fullmatch(r"(?:take|get|pick up|grab)\s+(.+?)(?:\s+(?:from|out of)\s+(.+))?", cmd):
            return self._take(m.group(1), m.group(2))
        if m := re.fullmatch(r"(?:put|place|drop)\s+(.+?)\s+(?:in|into|inside|on)\s+(.+)", cmd):
            return self._put(m.group(1), m.group(2))
        if m := re.fullmatch(r"unlock\s+(.+?)(?:\s+with\s+(.+))?", cmd):
            return self._unlock(m.group(1), m.group(2))
        return False, "unknown command. " + _HELP

    def _go(self, room: str) -> tuple[bool, str]:
        room = room.strip()
        if room not in self.rooms:
            return False, f"there is no room {quote_action(room, 30)}. Rooms: {', '.join(self.rooms)}."
        if room == self.at:
            return False, f"you are already in the {room}."
        self.at = room
        self._see()
        return True, f"You go to the {room}."

    def _read(self, what: str) -> tuple[bool, str]:
        if what.strip() != _NOTE:
            return False, f"you can only read the note, not {quote_action(what, 30)}."
        if not self.has_note:
            return False, "there is no note in this house; open containers to find things."
        if self.at != _START:
            return False, f"the note is in the {_START}; go {_START} first."
        self.note_read = True
        self.known.update(self.needed_at_start)
        return True, "You read the note."

    def _box(self, name: str) -> _Box | tuple[None, str]:
        name = name.strip()
        b = self.box_here(name)
        if b is not None:
            return b
        if name == _NOTE:
            return None, "the note is not a container; read it."
        names = [bb.name for bb in self.here()]
        return None, f"there is no {quote_action(name, 30)} in the {self.at}; here: {self._list(names)}."

    def _open(self, name: str, opening: bool) -> tuple[bool, str]:
        b = self._box(name)
        if isinstance(b, tuple):
            return False, b[1]
        if b.locked:
            return False, f"the {b.name} is locked; unlock it with the key."
        if b.is_open == opening:
            return False, f"the {b.name} is already {'open' if opening else 'closed'}."
        b.is_open = opening
        if not opening:
            return True, f"You close the {b.name}."
        self._see()
        inside = f"In it: {self._list(b.contents)}." if b.contents else "It is empty."
        return True, f"You open the {b.name}. {inside}"

    def _see(self) -> None:
        for b in self.here():
            if b.is_open:
                b.searched = True
                self.known.update(b.contents)

    def _take(self, item: str, source: str | None) -> tuple[bool, str]:
        item = item.strip()
        if item == _NOTE:
            return False, "the note stays here; read it."
        if source is not None:
            b = self._box(source)
            if isinstance(b, tuple):
                return False, b[1]
            if not b.is_open:
                return False, f"the {b.name} is {'locked' if b.locked else 'closed'}; open it first."
            if item not in b.contents:
                return False, f"there is no {quote_action(item, 30)} in the {b.name}."
        else:
            b = next((bb for bb in self.here() if bb.is_open and item in bb.contents), None)
            if b is None:
                if item in self.held:
                    return False, f"you are already holding the {item}."
                return False, f"there is no {quote_action(item, 30)} in sight here; open containers to look inside."
        b.contents.remove(item)
        self.held.append(item)
        self.known.add(item)
        return True, f"You take the {item}."

    def _put(self, item: str, target: str) -> tuple[bool, str]:
        item = item.strip()
        if item not in self.held:
            return False, f"you are not holding {quote_action(item, 30)}; holding: {self._list(self.held)}."
        b = self._box(target)
        if isinstance(b, tuple):
            return False, b[1]
        if not b.is_open:
            return False, f"the {b.name} is {'locked' if b.locked else 'closed'}; open it first."
        self.held.remove(item)
        b.contents.append(item)
        return True, f"You put the {item} in the {b.name}."

    def _unlock(self, name: str, tool: str | None) -> tuple[bool, str]:
        b = self._box(name)
        if isinstance(b, tuple):
            return False, b[1]
        if not b.locked:
            return False, f"the {b.name} is not locked."
        if tool is not None and tool.strip() != _KEY:
            return False, f"the {b.name} opens only with the key."
        if _KEY not in self.held:
            return False, f"you need the key to unlock the {b.name}; find it first."
        b.locked = False
        return True, f"You unlock the {b.name} with the key."


def _generate(rng, num_rooms: int, per_room: int, num_items: int, locked: bool, num_distractors: int,
              has_note: bool) -> _World:
    def pick(seq):
        return seq[int(rng.integers(len(seq)))]

    def shuffled(seq):
        seq = list(seq)
        return [seq[i] for i in rng.permutation(len(seq))]

    w = _World()
    w.rooms = [_START] + shuffled(_ROOMS[1:])[: num_rooms - 1]
    for room in w.rooms:
        for c in shuffled(_CONTAINERS)[:per_room]:
            w.boxes[(room, c)] = _Box(c, room)
    others = w.rooms[1:]
    target_room = pick(others)
    w.target = (target_room, pick([c for (r, c) in w.boxes if r == target_room]))
    w.locked_target = locked
    w.boxes[w.target].locked = locked
    items = shuffled(_ITEMS)
    w.goal = items[:num_items]
    needed = w.goal + ([_KEY] if locked else [])
    # Each needed thing in its own container, in distinct rooms while there are rooms to spare,
    # never in the target room (so that every errand is a trip of its own).
    rooms = shuffled([r for r in w.rooms if r != target_room])
    used: set[tuple[str, str]] = set()
    for k, thing in enumerate(needed):
        room = rooms[k % len(rooms)]
        free = [key for key in w.boxes if key[0] == room and key not in used]
        if not free:
            free = [key for key in w.boxes if key[0] != target_room and key not in used]
        key = pick(free)
        used.add(key)
        w.boxes[key].contents.append(thing)
    for thing in items[num_items : num_items + num_distractors]:
        pick([b for b in w.boxes.values()]).contents.append(thing)
    w.has_note = has_note
    w.needed_at_start = tuple(needed)
    if has_note:
        w.note_text = "; ".join(f"{t} in {w.where(t)[0]} {w.where(t)[1]}" for t in needed) + "."  # type: ignore[index]
    return w


def _expert(w: _World) -> str:
    """The next command of a fair expert: it uses only what the agent knows."""
    tgt = w.boxes[w.target]
    fetch = [i for i in w.needed() if i not in w.held]
    if not fetch:  # every goal item is held or delivered, and the key is held if needed: deliver
        if w.at != w.target[0]:
            return f"go {w.target[0]}"
        if tgt.locked:
            return f"unlock {tgt.name}"
        if not tgt.is_open:
            return f"open {tgt.name}"
        return f"put {next(i for i in w.goal if i in w.held)} in {tgt.name}"
    unknown = [i for i in fetch if i not in w.known]
    if unknown and w.has_note and not w.note_read:
        return "read note" if w.at == _START else f"go {_START}"
    known = [(i, w.where(i)) for i in fetch if i in w.known]
    for i, loc in known:
        if loc is not None and loc[0] == w.at:
            b = w.boxes[loc]
            return f"take {i}" if b.is_open else f"open {b.name}"
    if unknown:
        # Search: the unsearched containers of this room, then the next room that has some.
        for b in w.here():
            if not b.searched and not b.locked:
                return f"open {b.name}"
        for room in w.rooms:
            if any(not b.searched and not b.locked for (r, _), b in w.boxes.items() if r == room):
                if room != w.at:
                    return f"go {room}"
    rooms = [loc[0] for _, loc in known if loc is not None]
    away = [r for r in rooms if r != w.target[0]]
    if away or rooms:
        return f"go {(away or rooms)[0]}"
    return "look"  # pragma: no cover - every needed thing is somewhere


class ErrandsEnv(StepEnv):
    """Fetch the named items (and the key) from closed containers and put them in the target.

    Args:
        difficulty: ``"easy"`` (4 rooms x 2 containers, 2 items, a locked target, 3
            distractor items, 24-step limit; the expert takes 12-14 steps),
            ``"medium"`` (5 rooms, 3 items, 5 distractors, 32 steps; expert 16-18) or
            ``"hard"`` (6 rooms x 3 containers, 4 items, 8 distractors, 40 steps; expert
            19-22). Each knob below overrides its preset.
        num_rooms: rooms, the hall included (3 to 10).
        containers_per_room: closed containers in each room (1 to 4).
        num_items: goal items to deliver (1 to 6).
        locked: the target is locked, and a key lies in some container.
        num_distractors: extra items scattered in the containers.
        note: a note in the hall says where each needed thing is; without it the agent (and
            the expert) must search the containers.
        progress_reward: reward per unit of task progress (per goal item: held 1, in the
            target 2; unlocking the target 1); 0 makes the reward sparse.
        invalid_penalty: subtracted for each invalid step.
        show_admissible: also list the admissible commands in every observation.
        max_steps: step limit (default from the difficulty).

    ``info`` carries ``admissible_commands`` every step, ``reward_components``
    (``progress``, ``invalid``, ``success``; they sum to the reward), ``progress`` and
    ``progress_total`` (the progress units), and at reset ``task`` and ``optimal_steps``
    (the expert's episode length).

    Example:
        >>> env = ErrandsEnv("easy")
        >>> obs, info = env.reset(seed=3)
        >>> obs, reward, terminated, truncated, info = env.step("read note")
        >>> info["action_valid"], reward, info["reward_components"]["progress"]
        (True, 0.0, 0.0)
        >>> obs, reward, terminated, truncated, info = env.step("dance")
        >>> info["action_valid"], reward
        (False, -0.05)
    """

    description: ClassVar[str] = "Long-horizon errands: read a note, fetch items and a key, deliver to a locked chest"
    default_max_steps: ClassVar[int] = 24

    def __init__(
        self,
        difficulty: str = "easy",
        *,
        num_rooms: int | None = None,
        containers_per_room: int | None = None,
        num_items: int | None = None,
        locked: bool | None = None,
        num_distractors: int | None = None,
        note: bool = True,
        progress_reward: float = 0.1,
        invalid_penalty: float = 0.05,
        show_admissible: bool = False,
        max_steps: int | None = None,
        **kwargs: Any,
    ) -> None:
        if difficulty not in DIFFICULTIES:
            raise InvalidConfig("difficulty", difficulty, f"one of {sorted(DIFFICULTIES)}")
        preset = DIFFICULTIES[difficulty]
        super().__init__(max_steps=preset["max_steps"] if max_steps is None else max_steps, **kwargs)

        def num(name: str, value: int | None, low: int, high: int) -> int:
            value = preset[name] if value is None else value
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise InvalidConfig(name, value, f"an int from {low} to {high}")
            return value

        self.difficulty = difficulty
        self.num_rooms = num("num_rooms", num_rooms, 3, len(_ROOMS))
        self.containers_per_room = num("containers_per_room", containers_per_room, 1, 4)
        self.num_items = num("num_items", num_items, 1, 6)
        self.locked = bool(preset["locked"] if locked is None else locked)
        self.num_distractors = num("num_distractors", num_distractors, 0, len(_ITEMS) - 6)
        needed = self.num_items + int(self.locked)
        if needed > (self.num_rooms - 1) * self.containers_per_room:
            raise InvalidConfig("num_items", self.num_items,
                                "at most one needed thing per container outside the target room "
                                f"({(self.num_rooms - 1) * self.containers_per_room} here); add rooms or containers")
        for name, value in (("progress_reward", progress_reward), ("invalid_penalty", invalid_penalty)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
                raise InvalidConfig(name, value, "a number from 0 to 1")
        self.note = bool(note)
        self.progress_reward = float(progress_reward)
        self.invalid_penalty = float(invalid_penalty)
        self.show_admissible = bool(show_admissible)
        self.reward_range = (-max(self.progress_reward, self.invalid_penalty), 1.0 + self.progress_reward)
        self.world = _World()
        self._optimal = 0
        self._task = ""

    def _obs(self, text: str) -> str:
        if self.show_admissible:
            text += "\nCommands now: " + ", ".join(self.world.admissible())
        return text

    def _reset(self, options: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        w = _generate(self.np_random, self.num_rooms, self.containers_per_room, self.num_items, self.locked,
                      self.num_distractors, self.note)
        self.world = w
        items = w.goal
        listing = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
        room, box = w.target
        self._task = f"put the {listing} in the {box} in the {room}"
        lines = [f"Errands. Your task: {self._task}.", f"Rooms: {', '.join(w.rooms)}."]
        if w.locked_target:
            lines.append(f"The {box} is locked; a key is somewhere.")
        if w.has_note:
            lines.append("A note in the hall says where things are.")
        lines += [_HELP, w.status()]
        self._optimal = self._expert_length()
        info = {"task": self._task, "optimal_steps": self._optimal, "admissible_commands": w.admissible(),
                "progress": 0, "progress_total": w.max_progress()}
        return self._obs("\n".join(lines)), info

    def _expert_length(self) -> int:
        w = copy.deepcopy(self.world)
        for t in range(200):
            if w.done():
                return t
            w.apply(_expert(w))
        raise RuntimeError("internal error: the expert did not finish an errand")  # pragma: no cover

    def _step(self, action: str) -> StepResult:
        w = self.world
        lines = [ln for ln in extract_answer(action).splitlines() if ln.strip()]
        cmd = re.sub(r"^(action|command|>)\s*:?\s*", "", lines[-1].strip(), flags=re.I) if lines else ""
        before = w.progress()
        if not cmd.strip():
            ok, text = False, "the action is empty. " + _HELP
        elif len(cmd) > 200:
            ok, text = False, f"the command {quote_action(cmd, 60)} is too long; write one short command."
        else:
            ok, text = w.apply(cmd)
        gained = w.progress() - before
        comps = {
            "progress": self.progress_reward * gained,
            "invalid": 0.0 if ok else -self.invalid_penalty,
            "success": 1.0 if ok and w.done() else 0.0,
        }
        reward = float(sum(comps.values()))
        info: dict[str, Any] = {"admissible_commands": w.admissible(), "reward_components": comps,
                                "progress": w.progress(), "progress_total": w.max_progress()}
        if not ok:
            return StepResult(self._obs(f"Nothing happens: {text}\n{w.status()}"), reward=reward,
                              action_valid=False, error=text, info=info)
        if w.done():
            info["extra_steps"] = self.elapsed_steps - self._optimal
            return StepResult(self._obs(f"{text} Errands done!"), reward=reward, terminated=True, success=True,
                              info=info)
        return StepResult(self._obs(f"{text}\n{w.status()}"), reward=reward, info=info)

    def _on_truncate(self) -> dict[str, Any]:
        return {"optimal_steps": self._optimal}

    def expert_action(self) -> str:
        """The fair expert's next command (it uses only the note and the containers seen so far)."""
        if not self.world.goal:
            raise InvalidArgument("call reset() before expert_action()")
        return _expert(self.world)
