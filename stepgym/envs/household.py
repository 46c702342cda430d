"""Household-v0: an ALFWorld-style text world of rooms, receptacles and objects.

Each episode generates a house (a kitchen plus a living room and/or a bedroom) with
numbered receptacles -- fridge, microwave, sink, cabinets, drawers, shelves, countertops,
a desk with a desk lamp ... -- objects placed in them (some inside closed containers), and
one task of six ALFWorld types: *pick and place*, *clean*, *heat*, *cool*, *examine under
the lamp* and *pick two*. The agent types commands (``go to fridge 1``, ``open drawer 2``,
``take apple 1 from countertop 1``, ``put apple 1 in fridge 1``, ``clean mug 1 with sink 1``,
``heat egg 1 with microwave 1``, ``cool potato 1 with fridge 1``, ``use desklamp 1``,
``look``, ``inventory``, ``examine X``). ``info["admissible_commands"]`` lists every command
that does something in the current state. Reward is 1.0 when the task is done.

The expert is an exact planner over the (fully known) house: ``info["optimal_steps"]`` at
reset is the length of a shortest solution, so "extra steps beyond the optimum" can be
measured.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from stepgym.core import StepEnv, StepResult, quote_action
from stepgym.errors import InvalidArgument, InvalidConfig

__all__ = ["HouseholdEnv", "TASK_TYPES"]

TASK_TYPES = ("pick_and_place", "clean", "heat", "cool", "examine", "pick_two")

# Receptacle kinds: (type, room, count range by difficulty index, openable).
_RECEPTACLES: list[tuple[str, str, tuple[int, int, int], bool]] = [
    ("fridge", "kitchen", (1, 1, 1), True),
    ("microwave", "kitchen", (1, 1, 1), True),
    ("sink", "kitchen", (1, 1, 1), False),
    ("countertop", "kitchen", (1, 2, 3), False),
    ("cabinet", "kitchen", (2, 3, 5), True),
    ("drawer", "kitchen", (1, 2, 3), True),
    ("stoveburner", "kitchen", (1, 2, 2), False),
    ("diningtable", "kitchen", (1, 1, 1), False),
    ("shelf", "kitchen", (0, 1, 2), False),
    ("garbagecan", "kitchen", (0, 1, 1), False),
    ("sofa", "living room", (1, 1, 1), False),
    ("coffeetable", "living room", (1, 1, 1), False),
    ("sidetable", "living room", (1, 1, 2), False),
    ("tvstand", "living room", (0, 1, 1), False),
    ("shelf", "living room", (1, 1, 2), False),
    ("drawer", "living room", (0, 1, 2), True),
    ("bed", "bedroom", (0, 1, 1), False),
    ("desk", "bedroom", (0, 1, 1), False),
    ("dresser", "bedroom", (0, 1, 1), False),
    ("drawer", "bedroom", (0, 2, 3), True),
    ("safe", "bedroom", (0, 0, 1), True),
]
_CONTAINERS = {"fridge", "microwave", "sink", "cabinet", "drawer", "garbagecan", "safe"}
_APPLIANCES = {"fridge": "cool", "microwave": "heat", "sink": "clean"}

_KITCHEN_OBJECTS = ["apple", "tomato", "potato", "egg", "lettuce", "bread", "mug", "cup", "plate", "bowl",
                    "pan", "pot", "knife", "spoon", "fork", "spatula"]
_OTHER_OBJECTS = ["book", "cellphone", "keychain", "pen", "pencil", "remotecontrol", "creditcard", "cd",
                  "watch", "alarmclock", "vase", "candle", "newspaper", "pillow"]
_CLEANABLE = {"apple", "tomato", "potato", "lettuce", "mug", "cup", "plate", "bowl", "pan", "pot", "knife",
              "spoon", "fork", "spatula"}
_HEATABLE = {"apple", "tomato", "potato", "egg", "bread", "mug", "cup", "plate"}
_COOLABLE = {"apple", "tomato", "potato", "egg", "lettuce", "bread", "mug", "cup", "plate", "bowl", "pan", "pot"}
_EXAMINABLE = ["book", "cellphone", "keychain", "pen", "pencil", "remotecontrol", "creditcard", "cd", "watch",
               "alarmclock", "vase", "candle", "newspaper", "mug", "bowl"]
# Where objects of each group may start.
_FOOD = {"apple", "tomato", "potato", "egg", "lettuce", "bread"}
_SPAWN_KITCHEN = {"fridge", "countertop", "cabinet", "drawer", "diningtable", "shelf", "stoveburner", "sink",
                  "microwave", "garbagecan"}
_SPAWN_OTHER = {"sofa", "coffeetable", "sidetable", "tvstand", "shelf", "drawer", "bed", "desk", "dresser", "safe"}
# Receptacle types a finished object may be asked to go to.
_TARGETS = {"countertop", "diningtable", "shelf", "cabinet", "drawer", "fridge", "sidetable", "coffeetable",
            "dresser", "desk", "sofa", "bed", "safe", "garbagecan", "microwave", "stoveburner"}

_DIFFICULTY = {
    # rooms, receptacle-count column, distractor objects, candidate objects of the task type
    "easy": (("kitchen", "living room"), 0, 4, (1, 1)),
    "medium": (("kitchen", "living room", "bedroom"), 1, 8, (1, 2)),
    "hard": (("kitchen", "living room", "bedroom"), 2, 14, (2, 3)),
}

_HELP = (
    "Commands: go to X, open X, close X, take O from R, put O in/on R, clean O with sink 1, "
    "heat O with microwave 1, cool O with fridge 1, use desklamp 1, look, inventory, examine X. "
    "Write one command per step, naming things with their number (apple 1)."
)


@dataclass
class _Rec:
    name: str
    rtype: str
    room: str
    openable: bool
    is_open: bool = False
    contents: list[str] = field(default_factory=list)

    @property
    def prep(self) -> str:
        return "in" if self.rtype in _CONTAINERS else "on"


@dataclass
class _Obj:
    name: str
    otype: str
    loc: str  # receptacle name, or "" when held
    clean: bool = False
    hot: bool = False
    cold: bool = False
    takeable: bool = True


@dataclass
class _Task:
    kind: str
    otype: str
    rtype: str  # target receptacle type ("" for examine)
    text: str


class _House:
    """The mutable world state and the command semantics (shared by the env and the planner)."""

    def __init__(self) -> None:
        self.recs: dict[str, _Rec] = {}
        self.objs: dict[str, _Obj] = {}
        self.rooms: tuple[str, ...] = ()
        self.at: str = ""  # "" = the middle of the house
        self.held: str = ""
        self.lamp_on = False
        self.lamp = ""  # name of the lamp object

    def clone(self) -> _House:
        h = _House.__new__(_House)
        h.recs = {k: _Rec(r.name, r.rtype, r.room, r.openable, r.is_open, list(r.contents)) for k, r in self.recs.items()}
        h.objs = {k: _Obj(o.name, o.otype, o.loc, o.clean, o.hot, o.cold, o.takeable) for k, o in self.objs.items()}
        h.rooms, h.at, h.held, h.lamp_on, h.lamp = self.rooms, self.at, self.held, self.lamp_on, self.lamp
        return h

    def key(self) -> tuple:
        objs = tuple((o.loc, o.clean, o.hot, o.cold) for o in self.objs.values())
        return (self.at, self.held, self.lamp_on, tuple(r.is_open for r in self.recs.values()), objs)

    # -- queries --------------------------------------------------------------------
    def accessible(self, rec: _Rec) -> bool:
        return not rec.openable or rec.is_open

    def visible_here(self) -> list[str]:
        if not self.at:
            return []
        rec = self.recs[self.at]
        return list(rec.contents) if self.accessible(rec) else []

    def lamp_place(self) -> str:
        return self.objs[self.lamp].loc if self.lamp else ""

    @staticmethod
    def listing(names: list[str]) -> str:
        if not names:
            return "nothing"
        items = [f"a {n}" for n in names]
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + ", and " + items[-1]

    def describe_rec(self, rec: _Rec) -> str:
        if rec.openable and not rec.is_open:
            return f"The {rec.name} is closed."
        where = "In" if rec.prep == "in" else "On"
        return f"{where} the {rec.name}, you see {self.listing(rec.contents)}."

    def describe_obj(self, o: _Obj) -> str:
        if o.name == self.lamp:
            return f"This is a {o.name}. It is turned {'on' if self.lamp_on else 'off'}."
        states = [s for s, v in (("clean", o.clean), ("hot", o.hot), ("cold", o.cold)) if v]
        adj = (", ".join(states) + " ") if states else ""
        return f"This is a {adj}{o.name}."

    def overview(self) -> str:
        lines = []
        for room in self.rooms:
            here = [r.name for r in self.recs.values() if r.room == room]
            lines.append(f"  {room}: {self.listing(here)}.")
        return "\n".join(lines)

    def look(self) -> str:
        if not self.at:
            return "You are in the middle of the house. Looking quickly around you, you see:\n" + self.overview()
        rec = self.recs[self.at]
        return f"You are at the {rec.name} in the {rec.room}. " + self.describe_rec(rec)

    # -- the admissible commands --------------------------------------------------------
    def admissible(self) -> list[str]:
        cmds = [f"go to {r}" for r in self.recs if r != self.at]
        if self.at:
            rec = self.recs[self.at]
            if rec.openable:
                cmds.append(f"{'close' if rec.is_open else 'open'} {rec.name}")
            if self.accessible(rec):
                if not self.held:
                    cmds += [f"take {o} from {rec.name}" for o in rec.contents if self.objs[o].takeable]
                else:
                    cmds.append(f"put {self.held} {rec.prep} {rec.name}")
            if self.held:
                verb = _APPLIANCES.get(rec.rtype)
                if verb and self.held_ok_for(verb):
                    cmds.append(f"{verb} {self.held} with {rec.name}")
            if self.lamp and self.lamp_place() == self.at:
                cmds.append(f"use {self.lamp}")
            cmds.append(f"examine {rec.name}")
            cmds += [f"examine {o}" for o in self.visible_here()]
        if self.held:
            cmds.append(f"examine {self.held}")
        cmds += ["inventory", "look"]
        return cmds

    def held_ok_for(self, verb: str) -> bool:
        t = self.objs[self.held].otype
        return t in {"clean": _CLEANABLE, "heat": _HEATABLE, "cool": _COOLABLE}[verb]

    # -- command execution ----------------------------------------------------------------
    def apply(self, command: str) -> tuple[bool, str]:
        """Run one command. Returns (did it apply, the observation text)."""
        cmd = " ".join(command.lower().strip().rstrip(".!").split())
        if cmd in ("look", "look around", "l"):
            return True, self.look()
        if cmd in ("inventory", "inv", "i"):
            if self.held:
                return True, f"You are carrying: a {self.held}."
            return True, "You are not carrying anything."
        if m := re.fullmatch(r"(?:go to|goto|go|move to|walk to)\s+(.+)", cmd):
            return self._go(m.group(1))
        if m := re.fullmatch(r"(open|close)\s+(.+)", cmd):
            return self._open(m.group(2), m.group(1) == "open")
        if m := re.fullmatch(r"(?:take|pick up|get)\s+(.+?)(?:\s+from\s+(.+))?", cmd):
            return self._take(m.group(1), m.group(2))
        if m := re.fullmatch(r"(?:put|place|move)\s+(.+?)\s+(?:in/on|in|on|into|onto|to|inside)\s+(.+)", cmd):
            return self._put(m.group(1), m.group(2))
        if m := re.fullmatch(r"(clean|heat|cool)\s+(.+?)\s+(?:with|using|in)\s+(.+)", cmd):
            return self._process(m.group(1), m.group(2), m.group(3))
        if m := re.fullmatch(r"(?:use|turn on|toggle|switch on)\s+(.+)", cmd):
            return self._use(m.group(1))
        if m := re.fullmatch(r"(?:examine|x|look at|inspect)\s+(.+)", cmd):
            return self._examine(m.group(1))
        return False, "unknown command. " + _HELP

    def _resolve(self, text: str, names: list[str], what: str) -> str | tuple[None, str]:
        t = re.sub(r"^(the|a|an|some)\s+", "", text.strip())
        if t in names:
            return t
        by_type = [n for n in names if n.rsplit(" ", 1)[0] == t]
        if len(by_type) == 1:
            return by_type[0]
        if len(by_type) > 1:
            return None, f"which {t}? Name it with its number: {', '.join(by_type)}."
        return None, f"there is no {quote_action(t, 40)} {what}."

    def _go(self, target: str) -> tuple[bool, str]:
        r = self._resolve(target, list(self.recs), "in the house")
        if isinstance(r, tuple):
            return False, r[1] + " Receptacles: " + ", ".join(self.recs) + "."
        if r == self.at:
            return False, f"you are already at the {r}."
        self.at = r
        rec = self.recs[r]
        return True, f"You arrive at the {r}. " + self.describe_rec(rec)

    def _here(self, text: str) -> str | tuple[None, str]:
        if not self.at:
            return None, "you are not at any receptacle; go to one first."
        r = self._resolve(text, list(self.recs), "in the house")
        if isinstance(r, tuple):
            return r
        if r != self.at:
            return None, f"you are not at the {r}; go to {r} first."
        return r

    def _open(self, target: str, opening: bool) -> tuple[bool, str]:
        r = self._here(target)
        if isinstance(r, tuple):
            return False, r[1]
        rec = self.recs[r]
        if not rec.openable:
            return False, f"the {r} cannot be opened or closed."
        if rec.is_open == opening:
            return False, f"the {r} is already {'open' if opening else 'closed'}."
        rec.is_open = opening
        if opening:
            return True, f"You open the {r}. The {r} is open. In it, you see {self.listing(rec.contents)}."
        return True, f"You close the {r}."

    def _take(self, obj: str, source: str | None) -> tuple[bool, str]:
        if source is not None:
            r = self._here(source)
            if isinstance(r, tuple):
                return False, r[1]
        elif not self.at:
            return False, "you are not at any receptacle; go to one first."
        rec = self.recs[self.at]
        if not self.accessible(rec):
            return False, f"the {rec.name} is closed; open it first."
        o = self._resolve(obj, rec.contents, f"{rec.prep} the {rec.name}")
        if isinstance(o, tuple):
            return False, o[1]
        if not self.objs[o].takeable:
            return False, f"the {o} cannot be picked up."
        if self.held:
            return False, f"your hands are full: you are carrying the {self.held}. Put it somewhere first."
        rec.contents.remove(o)
        self.objs[o].loc = ""
        self.held = o
        return True, f"You pick up the {o} from the {rec.name}."

    def _put(self, obj: str, target: str) -> tuple[bool, str]:
        if not self.held:
            return False, "you are not carrying anything."
        o = self._resolve(obj, [self.held], "in your hands")
        if isinstance(o, tuple):
            return False, o[1]
        r = self._here(target)
        if isinstance(r, tuple):
            return False, r[1]
        rec = self.recs[r]
        if not self.accessible(rec):
            return False, f"the {r} is closed; open it first."
        rec.contents.append(o)
        self.objs[o].loc = r
        self.held = ""
        return True, f"You put the {o} {rec.prep} the {r}."

    def _process(self, verb: str, obj: str, tool: str) -> tuple[bool, str]:
        if not self.held:
            return False, f"you must be holding the thing to {verb}."
        o = self._resolve(obj, [self.held], "in your hands")
        if isinstance(o, tuple):
            return False, o[1]
        r = self._here(tool)
        if isinstance(r, tuple):
            return False, r[1]
        rec = self.recs[r]
        if _APPLIANCES.get(rec.rtype) != verb:
            need = {v: k for k, v in _APPLIANCES.items()}[verb]
            return False, f"you cannot {verb} with the {r}; use a {need}."
        if not self.held_ok_for(verb):
            return False, f"the {o} cannot be {'cleaned' if verb == 'clean' else verb + 'ed'}."
        ob = self.objs[o]
        if verb == "clean":
            ob.clean = True
        elif verb == "heat":
            ob.hot, ob.cold = True, False
        else:
            ob.cold, ob.hot = True, False
        return True, f"You {verb} the {o} using the {r}."

    def _use(self, target: str) -> tuple[bool, str]:
        t = re.sub(r"^(the|a|an)\s+", "", target.strip())
        if not self.lamp or t not in (self.lamp, "desklamp", "lamp", "desk lamp"):
            return False, f"you cannot use {quote_action(t, 40)}; only the {self.lamp or 'lamp'} can be used."
        if self.at != self.lamp_place():
            return False, f"the {self.lamp} is not here; it is on the {self.lamp_place()}."
        self.lamp_on = not self.lamp_on
        return True, f"You turn {'on' if self.lamp_on else 'off'} the {self.lamp}."

    def _examine(self, target: str) -> tuple[bool, str]:
        names = ([self.at] if self.at else []) + self.visible_here() + ([self.held] if self.held else [])
        r = self._resolve(target, names, "here")
        if isinstance(r, tuple):
            return False, r[1]
        if r in self.recs:
            return True, self.describe_rec(self.recs[r])
        return True, self.describe_obj(self.objs[r])

    # -- goals ----------------------------------------------------------------------
    def done(self, task: _Task) -> bool:
        if task.kind == "examine":
            return bool(self.held) and self.objs[self.held].otype == task.otype and self.lamp_on \
                and self.at == self.lamp_place()
        for rec in self.recs.values():
            if rec.rtype != task.rtype:
                continue
            good = [o for o in rec.contents if self._good(self.objs[o], task)]
            if len(good) >= (2 if task.kind == "pick_two" else 1):
                return True
        return False

    @staticmethod
    def _good(o: _Obj, task: _Task) -> bool:
        if o.otype != task.otype:
            return False
        return {"clean": o.clean, "heat": o.hot, "cool": o.cold}.get(task.kind, True)


# -- the planner ----------------------------------------------------------------------------
def _plan(house: _House, task: _Task) -> list[str] | None:
    """A shortest command sequence that completes ``task`` from ``house`` (not modified).

    Every solution has the shape: (drop what is held) -> fetch an object -> (process it)
    -> bring it to a target, once or twice. The planner enumerates every choice of objects,
    targets and drop places, simulates each plan with the real command semantics, and keeps
    the shortest that reaches the goal (cut at the first step where the goal holds).
    """
    if house.done(task):
        return []
    cands = [o.name for o in house.objs.values() if o.otype == task.otype and o.takeable]
    best: list[str] | None = None

    def consider(seq: list[str] | None) -> None:
        nonlocal best
        if seq is None:
            return
        h = house.clone()
        for i, c in enumerate(seq):
            ok, _ = h.apply(c)
            if not ok:
                return
            if h.done(task):
                if best is None or i + 1 < len(best):
                    best = seq[: i + 1]
                return

    if task.kind == "pick_two":
        for target in [r for r in house.recs.values() if r.rtype == task.rtype]:
            outside = [o for o in cands if house.objs[o].loc != target.name]
            for pair in itertools.permutations(outside, 2):
                for drops in itertools.product(("here", "there"), repeat=2):
                    consider(_deliver_many(house, task, list(pair), target.name, drops))
        return best
    targets = [""] if task.kind == "examine" else [r.name for r in house.recs.values() if r.rtype == task.rtype]
    for o in cands:
        for t in targets:
            for drop in ("here", "there"):
                consider(_deliver_many(house, task, [o], t, (drop,)))
    return best


def _deliver_many(house: _House, task: _Task, objs: list[str], target: str, drops: tuple[str, ...]) -> list[str] | None:
    h = house.clone()
    seq: list[str] = []
    for o, drop in zip(objs, drops, strict=True):
        part = _deliver(h, task, o, target, drop)
        if part is None:
            return None
        for c in part:
            ok, _ = h.apply(c)
            if not ok:
                return None
        seq += part
    return seq


def _deliver(h: _House, task: _Task, o: str, target: str, drop: str) -> list[str] | None:
    """Commands for one object: fetch it, process it, bring it (or, for examine, to the lamp)."""
    seq: list[str] = []
    at, opened = h.at, {r.name for r in h.recs.values() if r.is_open}

    def go(r: str) -> None:
        nonlocal at
        if at != r:
            seq.append(f"go to {r}")
            at = r

    def open_(r: str) -> None:
        rec = h.recs[r]
        if rec.openable and r not in opened:
            seq.append(f"open {r}")
            opened.add(r)

    if h.held != o:
        src = h.objs[o].loc
        if h.held:
            if not at:
                return None
            if drop == "there":
                go(src)
            open_(at)
            seq.append(f"put {h.held} {h.recs[at].prep} {at}")
        go(src)
        open_(src)
        seq.append(f"take {o} from {src}")
    kind = task.kind
    ob = h.objs[o]
    if kind in ("clean", "heat", "cool") and not _House._good(ob, task):
        app = next(r for r in h.recs.values() if _APPLIANCES.get(r.rtype) == kind)
        go(app.name)
        seq.append(f"{kind} {o} with {app.name}")
    if kind == "examine":
        go(h.lamp_place())
        if not h.lamp_on:
            seq.append(f"use {h.lamp}")
        return seq
    go(target)
    open_(target)
    seq.append(f"put {o} {h.recs[target].prep} {target}")
    return seq


# -- generation -------------------------------------------------------------------------------
def _generate(rng, difficulty: str, task_types: tuple[str, ...]) -> tuple[_House, _Task]:
    rooms, col, n_distract, (cmin, cmax) = _DIFFICULTY[difficulty]

    def pick(seq):
        return seq[int(rng.integers(len(seq)))]

    h = _House()
    h.rooms = rooms
    counts: dict[str, int] = {}
    for rtype, room, n, openable in _RECEPTACLES:
        if room not in rooms:
            continue
        for _ in range(n[col]):
            counts[rtype] = counts.get(rtype, 0) + 1
            name = f"{rtype} {counts[rtype]}"
            h.recs[name] = _Rec(name, rtype, room, openable)
    # The lamp sits on the desk (bedroom) or a side table (living room).
    lamp_on = "desk 1" if "desk 1" in h.recs else "sidetable 1"
    h.lamp = "desklamp 1"
    h.objs[h.lamp] = _Obj(h.lamp, "desklamp", lamp_on, takeable=False)
    h.recs[lamp_on].contents.append(h.lamp)

    kind = pick(task_types)
    present = set(r.rtype for r in h.recs.values())
    if kind == "examine":
        otype = pick(_EXAMINABLE)
        rtype = ""
    else:
        pool = {"clean": _CLEANABLE, "heat": _HEATABLE, "cool": _COOLABLE}.get(kind, set(_KITCHEN_OBJECTS + _OTHER_OBJECTS))
        otype = pick(sorted(pool))
        banned = {"clean": {"sink"}, "heat": {"microwave"}, "cool": {"fridge"}}.get(kind, set())
        rtype = pick(sorted((_TARGETS & present) - banned))
    n_cand = int(rng.integers(cmin, cmax + 1))
    if kind == "pick_two":
        n_cand = max(2, n_cand)
    spawn = _SPAWN_KITCHEN if otype in _KITCHEN_OBJECTS else _SPAWN_OTHER
    if otype in _FOOD:
        spawn = spawn - {"garbagecan", "sink"}
    homes = [r for r in h.recs.values() if r.rtype in spawn and r.rtype != rtype and r.name != lamp_on]
    if not homes:
        homes = [r for r in h.recs.values() if r.rtype != rtype]
    numbers: dict[str, int] = {}

    def add(t: str, rec: _Rec) -> None:
        numbers[t] = numbers.get(t, 0) + 1
        name = f"{t} {numbers[t]}"
        h.objs[name] = _Obj(name, t, rec.name)
        rec.contents.append(name)

    for _ in range(n_cand):
        add(otype, pick(homes))
    # Distractors: other types, anywhere plausible (never the task's type).
    others = [t for t in _KITCHEN_OBJECTS + _OTHER_OBJECTS if t != otype]
    for _ in range(n_distract):
        t = pick(others)
        sp = _SPAWN_KITCHEN if t in _KITCHEN_OBJECTS else _SPAWN_OTHER
        places = [r for r in h.recs.values() if r.rtype in sp] or list(h.recs.values())
        add(t, pick(places))
    for rec in h.recs.values():
        rec.contents.sort(key=lambda n: (n.rsplit(" ", 1)[0], int(n.rsplit(" ", 1)[1])))
    prep = "in" if rtype in _CONTAINERS else "on"
    text = {
        "pick_and_place": f"put a {otype} {prep} {rtype}",
        "clean": f"put a clean {otype} {prep} {rtype}",
        "heat": f"put a hot {otype} {prep} {rtype}",
        "cool": f"put a cool {otype} {prep} {rtype}",
        "examine": f"look at the {otype} under the desklamp",
        "pick_two": f"put two {_plural(otype)} {prep} {rtype}",
    }[kind]
    return h, _Task(kind, otype, rtype, text)


def _plural(word: str) -> str:
    if word == "knife":
        return "knives"
    if word.endswith(("s", "x", "ch", "sh")) or word in ("potato", "tomato"):
        return word + "es"
    return word + "s"


class HouseholdEnv(StepEnv):
    """ALFWorld-style household tasks in a generated house, with an exact planner as expert.

    Args:
        difficulty: ``"easy"`` (kitchen + living room, 13 receptacles, 4 distractor objects,
            one object of the task type), ``"medium"`` (three rooms, 26 receptacles, 8
            distractors, 1-2 candidates) or ``"hard"`` (36 receptacles, 14 distractors,
            2-3 candidates).
        task_types: any of ``TASK_TYPES`` (default all six).
        show_admissible: also list the admissible commands in every observation.
        max_steps: step limit (default 40).

    ``info`` carries ``admissible_commands`` (every step), ``task_type`` and
    ``optimal_steps`` (at reset: length of a shortest solution), and ``extra_steps``
    (steps taken beyond the optimum) when the task is done.

    Example:
        >>> import gymnasium as gym, stepgym
        >>> env = gym.make("stepgym/Household-v0", difficulty="easy", task_types=("heat",))
        >>> obs, info = env.reset(seed=0)
        >>> steps = 0
        >>> while True:
        ...     obs, reward, terminated, truncated, info = env.step(env.unwrapped.expert_action())
        ...     steps += 1
        ...     if terminated or truncated:
        ...         break
        >>> reward, info["extra_steps"]
        (1.0, 0)
    """

    description: ClassVar[str] = "ALFWorld-style household tasks (pick/place, clean, heat, cool, examine, pick two)"
    default_max_steps: ClassVar[int] = 40

    def __init__(
        self,
        difficulty: str = "medium",
        *,
        task_types: tuple[str, ...] = TASK_TYPES,
        show_admissible: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if difficulty not in _DIFFICULTY:
            raise InvalidConfig("difficulty", difficulty, f"one of {sorted(_DIFFICULTY)}")
        if isinstance(task_types, str):
            task_types = (task_types,)
        task_types = tuple(task_types)
        if not task_types or any(t not in TASK_TYPES for t in task_types):
            raise InvalidConfig("task_types", task_types, f"a non-empty tuple drawn from {TASK_TYPES}")
        self.difficulty = difficulty
        self.task_types = task_types
        self.show_admissible = bool(show_admissible)
        self.house = _House()
        self.task: _Task | None = None
        self._optimal = 0
        self._plans: dict[tuple, list[str]] = {}

    def _obs(self, text: str) -> str:
        if self.show_admissible:
            text += "\nAdmissible commands: " + ", ".join(self.house.admissible())
        return text

    def _reset(self, options: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        for _ in range(100):
            house, task = _generate(self.np_random, self.difficulty, self.task_types)
            plan = _plan(house, task)
            if plan:  # never a task that is already done or unsolvable
                break
        else:  # pragma: no cover - generation always finds a solvable task in practice
            raise RuntimeError("could not generate a solvable household task")
        self.house, self.task = house, task
        self._optimal = len(plan)
        self._remember(plan)
        obs = (
            "-= Welcome to Household =-\n"
            f"{house.look()}\n\nYour task is to: {task.text}.\n\n{_HELP}"
        )
        info = {
            "admissible_commands": house.admissible(),
            "task": task.text,
            "task_type": task.kind,
            "optimal_steps": self._optimal,
        }
        return self._obs(obs), info

    def _step(self, action: str) -> StepResult:
        if self.task is None:  # invariant, not user input
            raise RuntimeError('internal error: self.task is not None')
        cmd = action
        # Accept a command wrapped in <answer> tags or after a short "Thought: ..." line.
        if "<answer>" in cmd.lower():
            m = re.findall(r"<answer>(.*?)</answer>", cmd, re.S | re.I)
            cmd = m[-1] if m else cmd
        lines = [ln for ln in cmd.strip().splitlines() if ln.strip()]
        cmd = lines[-1] if lines else ""
        cmd = re.sub(r"^(action|command|>)\s*:?\s*", "", cmd.strip(), flags=re.I)
        if not cmd.strip():
            err = "the action is empty. " + _HELP
            return StepResult(self._obs("Nothing happens: " + err), action_valid=False, error=err,
                              info={"admissible_commands": self.house.admissible()})
        if len(cmd) > 300:
            err = f"the command {quote_action(cmd, 60)} is too long; write one short command."
            return StepResult(self._obs("Nothing happens: " + err), action_valid=False, error=err,
                              info={"admissible_commands": self.house.admissible()})
        ok, text = self.house.apply(cmd)
        info: dict[str, Any] = {"admissible_commands": self.house.admissible()}
        if not ok:
            return StepResult(self._obs("Nothing happens: " + text), action_valid=False, error=text, info=info)
        if self.house.done(self.task):
            info["extra_steps"] = self.elapsed_steps - self._optimal
            return StepResult(self._obs(text + "\nTask complete!"), reward=1.0, terminated=True, success=True,
                              info=info)
        return StepResult(self._obs(text), info=info)

    def _on_truncate(self) -> dict[str, Any]:
        return {"optimal_steps": self._optimal}

    def expert_action(self) -> str:
        """The first command of a shortest plan from the current state."""
        if self.task is None:
            raise InvalidArgument("call reset() before expert_action()")
        plan = self._plans.get(self.house.key())
        if plan is None:
            plan = self._remember(_plan(self.house, self.task) or [])
        return plan[0] if plan else "look"

    def _remember(self, plan: list[str]) -> list[str]:
        """Store the plan under the state key of each of its steps, so following it replans never."""
        self._plans = {}
        h = self.house.clone()
        for i, c in enumerate(plan):
            self._plans[h.key()] = plan[i:]
            h.apply(c)
        return plan
