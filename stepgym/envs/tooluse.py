"""ToolUse-v0: answer questions about a generated world with tools.

Each episode draws a small world from the seed (people, cities, companies, products with
attributes and relations) and a question that takes 1 to 3 information calls
(``search``, ``lookup``, ``calculator``; ``python`` when enabled) and one ``answer``. The
world is synthetic, so tasks are unlimited, reproducible and absent from any model's
pretraining data.

Example:
    >>> import gymnasium as gym, stepgym
    >>> env = gym.make("stepgym/ToolUse-v0", difficulty="easy")
    >>> obs, info = env.reset(seed=0)
    >>> done = False
    >>> while not done:
    ...     obs, reward, terminated, truncated, info = env.step(env.unwrapped.expert_action())
    ...     done = terminated or truncated
    >>> reward, info["success"]
    (1.0, True)
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from stepgym.actions import ParseError, ToolCall, format_tool_call, parse_tool_call
from stepgym.core import StepEnv, StepResult, quote_action
from stepgym.errors import InvalidArgument
from stepgym.tools.base import Tool, ToolOutput, describe_tools, signature, validate_arguments
from stepgym.tools.calculator import Calculator, format_number

__all__ = ["ToolUseEnv", "World", "Entity", "answer_matches"]

DIFFICULTIES = ("easy", "medium", "hard")
ALL_TOOLS = ("search", "lookup", "calculator", "python")
DEFAULT_TOOLS = ("search", "lookup", "calculator")

_SYL = (
    "ka", "lo", "vi", "ra", "zen", "mo", "tu", "bel", "qua", "dri", "sol", "nex", "ori", "pal",
    "ve", "tho", "lin", "gar", "mi", "xo", "ru", "fen", "da", "sha", "kor", "eli", "vun", "tes",
)
# Name tables are built once at import: per-reset string building dominated reset time.
_NAMES2 = tuple((a + b).capitalize() for a in _SYL for b in _SYL)
_NAMES3 = tuple((a + b + c).capitalize() for a in _SYL for b in _SYL for c in _SYL)
_COMPANY_SUFFIX = ("Dynamics", "Labs", "Works", "Systems", "Industries", "Foods", "Motors", "Textiles")
_PRODUCT_KIND = ("lamp", "kettle", "drone", "bicycle", "phone", "chair", "camera", "backpack")
_COUNTRIES = ("Arvenia", "Belmora", "Costrel", "Dunmark", "Esperon", "Falwyn")

# attribute -> entity kind that holds it, and for relations the kind it points to.
_RELATIONS = {"city": "city", "employer": "company", "headquarters": "city", "ceo": "person", "maker": "company"}
_ATTR_ALIASES = {
    "hq": "headquarters", "headquarter": "headquarters", "lives_in": "city", "home_city": "city",
    "works_at": "employer", "company": "employer", "made_by": "maker", "manufacturer": "maker",
    "founded_in": "founded", "founding_year": "founded", "year_founded": "founded", "launch": "launch_year",
    "launched": "launch_year", "staff": "employees", "cost": "price", "weight": "weight_kg",
    "area": "area_km2", "chief_executive": "ceo", "location": "city",
}
_WORD_RE = re.compile(r"[a-z0-9]+")
_NUM_RE = re.compile(r"-?\d+(?:\.\d+)?")
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")


@dataclass(slots=True)
class Entity:
    name: str
    kind: str
    attrs: dict[str, Any]


class World:
    """The facts of one episode: entities by normalised name."""

    __slots__ = ("entities", "by_key", "_index")

    def __init__(self, entities: list[Entity]):
        self.entities = entities
        self.by_key = {_norm_name(e.name): e for e in entities}
        self._index: list[tuple[set[str], set[str], str]] | None = None

    @property
    def search_index(self) -> list[tuple[set[str], set[str], str]]:
        # Built on the first search only: most episodes never search, and reset is hot.
        if self._index is not None:
            return self._index
        index = []
        for e in self.entities:
            rel = [f"{k} {v}" for k, v in e.attrs.items() if k in _RELATIONS]
            text = f"{e.name} ({e.kind})" + (": " + ", ".join(rel) if rel else "")
            words = set(_WORD_RE.findall(text.lower()))
            index.append((words, set(_WORD_RE.findall(e.name.lower())), text))
        self._index = index
        return index

    def get(self, name: str) -> Entity | None:
        return self.by_key.get(_norm_name(name))


def _norm_name(s: str) -> str:
    return " ".join(s.lower().split())


def _norm_text(s: str) -> str:
    s = s.lower()
    s = re.sub(r"[^\w\s.-]", " ", s)
    s = _ARTICLES_RE.sub(" ", s)
    s = s.replace("answer is", " ")
    return " ".join(s.strip(" .").split())


def answer_matches(given: str, gold: Any) -> bool:
    """Does ``given`` answer ``gold``? Numbers with a relative tolerance, text normalised.

    Example:
        >>> answer_matches("About 1,204 people.", 1204), answer_matches("The Velora Labs", "velora labs")
        (True, True)
        >>> answer_matches("12 or 1204", 1204)
        False
    """
    if isinstance(gold, (int, float)) and not isinstance(gold, bool):
        nums = {float(n) for n in _NUM_RE.findall(given.replace(",", ""))}
        if len(nums) != 1:
            return False
        (x,) = nums
        return abs(x - gold) <= 1e-6 + 1e-4 * abs(gold)
    return _norm_text(given) == _norm_text(str(gold))


class _Search:
    name = "search"
    description = "Search the world's entities by name or relation; lists matching entities and their relations."
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {"query": {"type": "string", "description": "words to look for"}},
        "required": ["query"],
    }

    def __init__(self, env: ToolUseEnv):
        self.env = env

    def __call__(self, query: str) -> ToolOutput:
        words = set(_WORD_RE.findall(query.lower()[:500]))
        if not words:
            return ToolOutput("search needs at least one word in the query.", ok=False)
        scored = []
        for i, (all_words, name_words, text) in enumerate(self.env.world.search_index):
            s = 2 * len(words & name_words) + len(words & all_words)
            if s:
                scored.append((-s, i, text))
        if not scored:
            return ToolOutput(f"No entity matches {quote_action(query, 60)}.")
        scored.sort()
        return ToolOutput("\n".join(f"{n + 1}. {t}" for n, (_, _, t) in enumerate(scored[:5])))


class _Lookup:
    name = "lookup"
    description = "Look up one attribute of an entity by its exact name."
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "entity": {"type": "string", "description": "exact entity name"},
            "attribute": {"type": "string", "description": "attribute name, e.g. population"},
        },
        "required": ["entity", "attribute"],
    }

    def __init__(self, env: ToolUseEnv):
        self.env = env

    def __call__(self, entity: str, attribute: str) -> ToolOutput:
        world = self.env.world
        e = world.get(entity)
        if e is None:
            close = difflib.get_close_matches(_norm_name(entity)[:80], list(world.by_key), n=2, cutoff=0.6)
            hint = f" Did you mean {' or '.join(world.by_key[c].name for c in close)}?" if close else " Use search to find names."
            return ToolOutput(f"No entity named {quote_action(entity, 60)}.{hint}", ok=False)
        key = "_".join(attribute.lower().replace("-", " ").split())
        key = _ATTR_ALIASES.get(key, key)
        if key not in e.attrs:
            return ToolOutput(
                f"{e.name} ({e.kind}) has no attribute {quote_action(attribute, 40)}; it has: {', '.join(e.attrs)}.",
                ok=False,
            )
        value = e.attrs[key]
        return ToolOutput(f"{e.name} {key}: {format_number(value) if isinstance(value, (int, float)) else value}")


class _Answer:
    name = "answer"
    description = "Give your final answer; this ends the episode."
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {"text": {"type": "string", "description": "the answer, a number or a name"}},
        "required": ["text"],
    }

    def __call__(self, text: str) -> ToolOutput:  # handled by the env
        return ToolOutput(text)


class ToolUseEnv(StepEnv):
    """Question answering with tools over a generated world.

    Args:
        difficulty: ``"easy"`` (one lookup), ``"medium"`` (two hops, or a lookup and a
            calculation), ``"hard"`` (three calls: three hops or two lookups and a
            calculation, with look-alike distractor names).
        tools: information tools offered besides ``answer``; any of ``"search"``,
            ``"lookup"``, ``"calculator"``, ``"python"`` (sandboxed, see docs/security.md).
            ``lookup`` is required: every task is solvable with it.
        num_distractors: extra entities in the world (default by difficulty: 4, 8, 12).
        compact: a short first observation (tool signatures without schemas, one line
            on the format), for small models and short contexts.
        max_steps: step limit (default 10).

    Observation: the first one states the task, lists the tools with their argument
    schema, and the action format; later ones give the tool result or an error.
    Reward: 1.0 for a correct ``answer`` (numbers within 1e-4 relative tolerance, names
    after normalisation), else 0.0. ``info`` adds ``tool``, ``answer`` (at the end) and
    ``optimal_steps`` (calls the expert needs from reset, answer included).
    """

    description = "Answer questions about a generated world with search, lookup and calculator tools"
    default_max_steps = 10
    optimal_calls: ClassVar[dict[str, int]] = {"easy": 2, "medium": 3, "hard": 4}

    def __init__(
        self,
        difficulty: str = "easy",
        *,
        tools: tuple[str, ...] | list[str] = DEFAULT_TOOLS,
        num_distractors: int | None = None,
        compact: bool = False,
        max_steps: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(max_steps=max_steps, **kwargs)
        if difficulty not in DIFFICULTIES:
            raise InvalidArgument(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
        tools = tuple(tools)
        bad = [t for t in tools if t not in ALL_TOOLS]
        if bad or "lookup" not in tools:
            raise InvalidArgument(
                f"tools must be a subset of {ALL_TOOLS} that includes 'lookup', got {tools!r}"
            )
        if num_distractors is not None and (not isinstance(num_distractors, int) or not 0 <= num_distractors <= 200):
            raise InvalidArgument(f"num_distractors must be an int in [0, 200], got {num_distractors!r}")
        self.difficulty = difficulty
        self.num_distractors = {"easy": 4, "medium": 8, "hard": 12}[difficulty] if num_distractors is None else num_distractors
        built: dict[str, Tool] = {}
        for name in tools:
            if name == "search":
                built[name] = _Search(self)
            elif name == "lookup":
                built[name] = _Lookup(self)
            elif name == "calculator":
                built[name] = Calculator()
            elif name == "python":
                from stepgym.tools.python import PythonTool

                built[name] = PythonTool()
        built["answer"] = _Answer()
        self.tools: dict[str, Tool] = built
        example = format_tool_call("lookup", {"entity": "NAME", "attribute": "population"})
        if compact:
            self._tool_text = "\n".join(f"- {signature(t)}" for t in built.values())
            self._format_text = f"Format: {example}"
        else:
            self._tool_text = describe_tools(list(built.values()))
            self._format_text = (
                "Action format: write one tool call per step, optionally after a short thought:\n"
                f"{example}\n"
                'Also accepted: a bare JSON object {"name": ..., "arguments": {...}} or ReAct style '
                "`Action: lookup[NAME, population]`. Finish with the answer tool."
            )
        self.world = World([])
        self.question = ""
        self.gold: Any = None
        self._plan: list[tuple[str, dict[str, Any], str]] = []
        self._done_plan: set[int] = set()

    # -- world and task generation ------------------------------------------------
    @staticmethod
    def _names(r: list[int], n: int, parts: int) -> list[str]:
        table = _NAMES2 if parts == 2 else _NAMES3
        out: list[str] = []
        seen: set[str] = set()
        i = 0
        while len(out) < n:
            name = table[(r[i % len(r)] + i * 7919) % len(table)]
            i += 1
            if name not in seen:
                seen.add(name)
                out.append(name)
        return out

    def _reset(self, options: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        rng = self.np_random
        d = self.num_distractors
        n_city, n_person, n_company, n_product = 3 + d // 4, 4 + d // 2, 3 + d // 4, 3 + d // 4
        r = rng.integers(0, 1 << 30, size=128).tolist()
        cities = self._names(r[0:16], n_city, 2)
        firsts = self._names(r[16:32], n_person, 2)
        lasts = self._names(r[32:48], n_person, 3)
        people = [f"{a} {b}" for a, b in zip(firsts, lasts)]
        companies = [f"{nm} {_COMPANY_SUFFIX[r[50 + i] % len(_COMPANY_SUFFIX)]}" for i, nm in enumerate(self._names(r[48:64], n_company, 2))]
        products = [f"{nm} {_PRODUCT_KIND[r[70 + i] % len(_PRODUCT_KIND)]}" for i, nm in enumerate(self._names(r[64:80], n_product, 2))]
        if self.difficulty == "hard":
            # Look-alikes: a company named after a city, a person named after a company.
            companies[-1] = f"{cities[0]} {_COMPANY_SUFFIX[r[81] % len(_COMPANY_SUFFIX)]}"
            people[-1] = f"{companies[0].split()[0]} {lasts[0]}"
        big = rng.integers(1, 1 << 30, size=5 * (n_city + n_person + n_company + n_product)).tolist()
        bi = iter(big)
        ents: list[Entity] = []
        for c in cities:
            ents.append(Entity(c, "city", {
                "country": _COUNTRIES[next(bi) % len(_COUNTRIES)],
                "population": 5_000 + next(bi) % 3_000_000,
                "founded": 1100 + next(bi) % 850,
                "area_km2": 20 + next(bi) % 900,
            }))
        for i, c in enumerate(companies):
            ents.append(Entity(c, "company", {
                "headquarters": cities[next(bi) % n_city],
                "founded": 1880 + next(bi) % 140,
                "employees": 10 + next(bi) % 50_000,
                "ceo": people[i % n_person],
            }))
            next(bi)
        for p in people:
            ents.append(Entity(p, "person", {
                "age": 21 + next(bi) % 60,
                "city": cities[next(bi) % n_city],
                "employer": companies[next(bi) % n_company],
                "height_cm": 150 + next(bi) % 50,
            }))
        for p in products:
            ents.append(Entity(p, "product", {
                "maker": companies[next(bi) % n_company],
                "price": round(5 + (next(bi) % 200_000) / 100, 2),
                "launch_year": 1990 + next(bi) % 35,
                "weight_kg": round(0.1 + (next(bi) % 2000) / 100, 2),
            }))
            next(bi)
        self.world = World(ents)
        self._make_task(r[90:100])
        self._done_plan = set()
        obs = (
            f"Task: {self.question}\n\nTools:\n{self._tool_text}\n\n{self._format_text}\n"
            f"You have {self.max_steps} steps."
        )
        return obs, {"optimal_steps": len(self._plan) + 1, "difficulty": self.difficulty}

    def _make_task(self, r: list[int]) -> None:
        w = self.world
        by_kind: dict[str, list[Entity]] = {}
        for e in w.entities:
            by_kind.setdefault(e.kind, []).append(e)

        def pick(kind: str, k: int) -> Entity:
            lst = by_kind[kind]
            return lst[k % len(lst)]

        def look(e: Entity, attr: str) -> tuple[str, dict[str, Any], str]:
            return ("lookup", {"entity": e.name, "attribute": attr}, f"{e.name}|{attr}")

        t = r[0] % 3
        if "python" in self.tools and self.difficulty != "easy" and r[4] % 3 == 0:
            # Code tasks: a digit sum is one line of Python but painful with a calculator.
            if self.difficulty == "medium":
                c = pick("city", r[2])
                self.question = f"What is the sum of the digits of the population of {c.name}?"
                self._plan = [look(c, "population")]
            else:
                p = pick("person", r[2])
                c = w.get(p.attrs["city"])
                self.question = f"What is the sum of the digits of the population of the city where {p.name} lives?"
                self._plan = [look(p, "city"), look(c, "population")]
            pop = c.attrs["population"]
            self._plan.append(("python", {"code": f"print(sum(int(d) for d in str({pop})))"}, "code"))
            self.gold = sum(int(d) for d in str(pop))
        elif self.difficulty == "easy":
            kind, attr = [("city", "population"), ("company", "founded"), ("person", "age"),
                          ("product", "price"), ("company", "headquarters"), ("product", "maker")][r[1] % 6]
            e = pick(kind, r[2])
            nice = {"population": "population", "founded": "founding year", "age": "age", "price": "price",
                    "headquarters": "headquarters city", "maker": "maker"}[attr]
            self.question = f"What is the {nice} of {e.name}?"
            self._plan = [look(e, attr)]
            self.gold = e.attrs[attr]
        elif self.difficulty == "medium":
            if t == 0:
                p = pick("person", r[2])
                c = w.get(p.attrs["city"])
                self.question = f"What is the population of the city where {p.name} lives?"
                self._plan = [look(p, "city"), look(c, "population")]
                self.gold = c.attrs["population"]
            elif t == 1:
                pr = pick("product", r[2])
                co = w.get(pr.attrs["maker"])
                self.question = f"In which city is the headquarters of the company that makes {pr.name}?"
                self._plan = [look(pr, "maker"), look(co, "headquarters")]
                self.gold = co.attrs["headquarters"]
            else:
                p = pick("person", r[2])
                k = 2 + r[3] % 20
                self.question = f"How old will {p.name} be in {k} years?"
                self._plan = [look(p, "age"), ("calculator", {"expression": f"{p.attrs['age']} + {k}"}, "calc")]
                self.gold = p.attrs["age"] + k
        else:
            if t == 0:
                pr = pick("product", r[2])
                co = w.get(pr.attrs["maker"])
                ceo = w.get(co.attrs["ceo"])
                self.question = f"In which city does the CEO of the company that makes {pr.name} live?"
                self._plan = [look(pr, "maker"), look(co, "ceo"), look(ceo, "city")]
                self.gold = ceo.attrs["city"]
            elif t == 1:
                a = pick("person", r[2])
                b = pick("person", r[2] + 1 + r[3] % (len(by_kind["person"]) - 1))
                self.question = f"How many years older is {a.name} than {b.name}? (negative if younger)"
                self._plan = [look(a, "age"), look(b, "age"),
                              ("calculator", {"expression": f"{a.attrs['age']} - {b.attrs['age']}"}, "calc")]
                self.gold = a.attrs["age"] - b.attrs["age"]
            else:
                co = pick("company", r[2])
                ceo = w.get(co.attrs["ceo"])
                city = w.get(ceo.attrs["city"])
                self.question = f"What is the population of the city where the CEO of {co.name} lives?"
                self._plan = [look(co, "ceo"), look(ceo, "city"), look(city, "population")]
                self.gold = city.attrs["population"]

    # -- stepping --------------------------------------------------------------------
    def _to_arguments(self, call: ToolCall, tool: Tool) -> dict[str, Any] | str:
        if call.style != "react":
            return call.arguments
        params = list(tool.parameters.get("properties", {}))
        raw = call.raw_input or ""
        if len(params) <= 1:
            return {params[0]: raw} if params else {}
        parts = [p.strip() for p in raw.rsplit(",", len(params) - 1)]
        if len(parts) != len(params):
            return f"{tool.name} takes {len(params)} comma-separated inputs: Action: {tool.name}[{', '.join(params)}]"
        return dict(zip(params, parts))

    def _step(self, action: str) -> StepResult:
        call = parse_tool_call(action)
        if isinstance(call, ParseError):
            return StepResult(f"Invalid action: {call.message}", action_valid=False, error=call.message)
        name = "answer" if call.name.lower() == "finish" and call.style == "react" else call.name
        tool = self.tools.get(name)
        if tool is None:
            msg = f"unknown tool {quote_action(name, 40)}; available tools: {', '.join(self.tools)}."
            return StepResult(f"Invalid action: {msg}", action_valid=False, error=msg)
        args = self._to_arguments(call, tool)
        if not isinstance(args, str):
            args = validate_arguments(tool, args)
        if isinstance(args, str):
            return StepResult(f"Invalid action: {args}", action_valid=False, error=args, info={"tool": name})
        if name == "answer":
            ok = answer_matches(args["text"], self.gold)
            gold = format_number(self.gold) if isinstance(self.gold, (int, float)) else str(self.gold)
            obs = "Correct." if ok else f"Incorrect. The answer was {gold}."
            return StepResult(obs, reward=1.0 if ok else 0.0, terminated=True, success=ok,
                              info={"tool": name, "answer": gold})
        out = tool(**args)
        if isinstance(out, str):
            out = ToolOutput(out)
        if out.ok:
            self._mark_progress(name, args)
        return StepResult(out.text, action_valid=True, error=None if out.ok else out.text, info={"tool": name})

    def _mark_progress(self, name: str, args: dict[str, Any]) -> None:
        for i, (tname, targs, _) in enumerate(self._plan):
            if i in self._done_plan or tname != name:
                continue
            if name == "lookup":
                e = self.world.get(args["entity"])
                key = _ATTR_ALIASES.get("_".join(args["attribute"].lower().split()), "_".join(args["attribute"].lower().split()))
                if e is not None and e.name == targs["entity"] and key == targs["attribute"]:
                    self._done_plan.add(i)
                    return
            elif name in ("calculator", "python"):
                self._done_plan.add(i)
                return

    def _on_truncate(self) -> dict[str, Any]:
        return {"answer": format_number(self.gold) if isinstance(self.gold, (int, float)) else str(self.gold)}

    def expert_action(self) -> str:
        """The next call of the shortest plan not yet done; answers when steps run short."""
        remaining = self.max_steps - self.elapsed_steps
        todo = [i for i in range(len(self._plan)) if i not in self._done_plan]
        if todo and remaining > 1:
            name, args, _ = self._plan[todo[0]]
            if name in self.tools:
                return format_tool_call(name, args)
        gold = format_number(self.gold) if isinstance(self.gold, (int, float)) else str(self.gold)
        return format_tool_call("answer", {"text": gold})
