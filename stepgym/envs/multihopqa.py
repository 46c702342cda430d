"""MultiHopQA-v0: answer 2-4 hop questions by searching a small encyclopedia (HotpotQA-style).

Each episode generates a synthetic encyclopedia from the seed -- countries, cities, people
and organisations, one document of a few sentences each -- and a question whose answer
needs facts from 2 to 4 documents: *bridge* questions ("What is the capital of the country
where the founder of Mirel Institute was born?") and *comparisons* ("Who was born earlier,
the founder of X or the founder of Y?"). Names are invented, so nothing can be answered
from memory. The agent has two tools: ``search(query)`` returns the top-k documents ranked
by BM25 (the ``bm25s`` library, over this episode's documents only) and ``answer(text)``
ends the episode. Reward is exact match (HotpotQA normalisation) at the final step; token
F1 is in ``info``.

``dataset="path.json"`` plays real HotpotQA-format records instead (each with
``question``, ``answer`` and ``context`` paragraphs ``[title, [sentences...]]``).
"""

from __future__ import annotations

import json
import os
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

from stepgym.actions import format_tool_call
from stepgym.core import StepEnv, StepResult, quote_action
from stepgym.envs._names import NameMaker
from stepgym.envs._toolcalls import FunctionTool, dispatch, tool_error_obs
from stepgym.errors import InvalidArgument, InvalidConfig
from stepgym.tools.base import ToolOutput, describe_tools

__all__ = ["MultiHopQAEnv", "normalize_answer", "exact_match", "f1_score"]


# -- HotpotQA's answer normalisation and metrics ---------------------------------------
def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, articles and extra spaces (HotpotQA / SQuAD rule).

    Example:
        >>> normalize_answer("The  Mirel Institute!")
        'mirel institute'
    """
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> bool:
    """Normalised exact match."""
    return normalize_answer(prediction) == normalize_answer(gold)


def f1_score(prediction: str, gold: str) -> float:
    """Token-level F1 as HotpotQA computes it (yes/no/noanswer must match exactly).

    Example:
        >>> round(f1_score("Velora Tarsk", "Tarsk"), 3)
        0.667
    """
    p, g = normalize_answer(prediction), normalize_answer(gold)
    special = {"yes", "no", "noanswer"}
    if (p in special or g in special) and p != g:
        return 0.0
    pt, gt = p.split(), g.split()
    common = Counter(pt) & Counter(gt)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pt), same / len(gt)
    return 2 * precision * recall / (precision + recall)


# -- the synthetic encyclopedia ---------------------------------------------------------
_REGIONS = ["northern", "southern", "eastern", "western", "central", "coastal", "highland"]
_PROFESSIONS = ["chemist", "painter", "architect", "novelist", "composer", "astronomer", "engineer",
                "historian", "botanist", "mathematician", "sculptor", "physician", "poet", "economist"]
_ORG_KINDS = [("Institute", "research institute"), ("University", "university"), ("Museum", "museum"),
              ("Orchestra", "orchestra"), ("Press", "publishing house"), ("Works", "manufacturing company"),
              ("Observatory", "observatory"), ("Bank", "bank")]


@dataclass
class _Entity:
    name: str
    kind: str  # country | city | person | org
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Question:
    text: str
    answer: str
    qtype: str  # bridge | comparison
    hops: int
    support: list[str]  # titles of the documents needed, in reading order


# Bridge relations: (from kind, attribute holding the next entity, phrase template).
_RELATIONS: dict[str, list[tuple[str, str]]] = {
    "org": [("founder", "the founder of {}"), ("city", "the city where {} is based")],
    "person": [("birthplace", "the birthplace of {}"), ("employer", "the employer of {}")],
    "city": [("country", "the country in which {} lies")],
    "country": [("capital", "the capital of {}")],
}
# Final attributes (a value, not an entity): (attribute, phrase, question prefix).
_ATTRIBUTES: dict[str, list[tuple[str, str]]] = {
    "org": [("founded", "In what year was {} founded?")],
    "person": [("born", "In what year was {} born?"), ("profession", "What is the profession of {}?")],
    "city": [("founded", "In what year was {} founded?")],
    "country": [("language", "What is the official language of {}?")],
}


class _World:
    """One generated encyclopedia: entities by name and their documents."""

    def __init__(self, names: NameMaker, n_countries: int, n_cities: int, n_people: int, n_orgs: int):
        rng = names.rng
        self.entities: dict[str, _Entity] = {}
        countries = [self._add(names.word((2, 3)), "country") for _ in range(n_countries)]
        cities = [self._add(names.word((2, 3)), "city") for _ in range(n_cities)]
        people = [self._add(names.person(), "person") for _ in range(n_people)]
        kinds = [_ORG_KINDS[i] for i in rng.permutation(len(_ORG_KINDS))]
        orgs = [self._add(f"{names.word((2, 2))} {kinds[i % len(kinds)][0]}", "org") for i in range(n_orgs)]
        for e in orgs:
            e.attrs["kind_text"] = dict(_ORG_KINDS)[e.name.split()[-1]]
        # Every country gets at least one city so that each has a capital.
        for i, c in enumerate(cities):
            country = countries[i] if i < len(countries) else names.choice(countries)
            c.attrs.update(country=country.name, founded=700 + names.randint(1200),
                           population=20 + names.randint(2980) * 1000)
        for k in countries:
            own = [c for c in cities if c.attrs["country"] == k.name]
            k.attrs.update(capital=names.choice(own).name, region=names.choice(_REGIONS),
                           language=names.word((2, 2)) + "ic")
        # Distinct founders, so "the founder of X" and comparisons stay unambiguous.
        founders = [people[int(i)] for i in rng.permutation(len(people))[: len(orgs)]]
        for o, f in zip(orgs, founders, strict=True):
            o.attrs.update(founder=f.name, city=names.choice(cities).name)
        for p in people:
            p.attrs.update(born=1850 + names.randint(140), birthplace=names.choice(cities).name,
                           profession=names.choice(_PROFESSIONS), employer=names.choice(orgs).name)
        for o in orgs:
            founder = self.entities[o.attrs["founder"]]
            o.attrs["founded"] = founder.attrs["born"] + 25 + names.randint(35)
        self.docs: dict[str, str] = {e.name: self._document(e) for e in self.entities.values()}

    def _add(self, name: str, kind: str) -> _Entity:
        e = _Entity(name, kind)
        self.entities[name] = e
        return e

    def _document(self, e: _Entity) -> str:
        a = e.attrs
        if e.kind == "country":
            return (f"{e.name} is a country in the {a['region']} region. Its capital is {a['capital']}. "
                    f"The official language of {e.name} is {a['language']}.")
        if e.kind == "city":
            return (f"{e.name} is a city in {a['country']}. It was founded in {a['founded']} "
                    f"and has about {a['population']:,} inhabitants.")
        if e.kind == "person":
            last = e.name.split()[-1]
            return (f"{e.name} (born {a['born']}) is a {a['profession']} who was born in {a['birthplace']}. "
                    f"{last} works at the {a['employer']}.")
        return (f"The {e.name} is a {a['kind_text']} founded in {a['founded']} by {a['founder']}. "
                f"It is based in {a['city']}.")

    def of_kind(self, kind: str) -> list[_Entity]:
        return [e for e in self.entities.values() if e.kind == kind]


def _display(e: _Entity) -> str:
    return f"the {e.name}" if e.kind == "org" else e.name


def _bridge(world: _World, names: NameMaker, hops: int) -> _Question | None:
    """A random chain of ``hops`` relations; the last may read an attribute instead of a link."""
    start = names.choice(list(world.entities.values()))
    seen = {start.name}
    cur, support, phrase = start, [], _display(start)
    for h in range(hops):
        last = h == hops - 1
        options = [(attr, tmpl) for attr, tmpl in _RELATIONS[cur.kind] if cur.attrs[attr] not in seen]
        if last and names.randint(100) < 40:
            attr, q = names.choice(_ATTRIBUTES[cur.kind])
            support.append(cur.name)
            return _Question(q.format(phrase), str(cur.attrs[attr]), "bridge", hops, support)
        if not options:
            return None
        attr, tmpl = names.choice(options)
        support.append(cur.name)
        nxt = world.entities[cur.attrs[attr]]
        seen.add(nxt.name)
        phrase = tmpl.format(phrase)
        cur = nxt
    return _Question(f"What is {phrase}?", cur.name, "bridge", hops, support)


# Comparisons: (kind, attribute, question template, pick "lower" or "higher").
_COMPARE = [
    ("person", "born", "Who was born earlier, {a} or {b}?", "lower"),
    ("org", "founded", "Which was founded earlier, {a} or {b}?", "lower"),
    ("city", "founded", "Which city was founded earlier, {a} or {b}?", "lower"),
    ("city", "population", "Which city has more inhabitants, {a} or {b}?", "higher"),
]
# Yes/no comparisons on a shared link: (kind, attribute, template).
_SAME = [
    ("person", "birthplace", "Were {a} and {b} born in the same city?"),
    ("person", "employer", "Do {a} and {b} work for the same organization?"),
    ("org", "city", "Are {a} and {b} based in the same city?"),
    ("city", "country", "Are {a} and {b} in the same country?"),
]
# One bridge in front of each side (4 hops): how to reach an entity of `kind` from another.
_INTO = {
    "person": ("org", "founder", "the founder of {}"),
    "city": ("person", "birthplace", "the birthplace of {}"),
    "org": ("person", "employer", "the employer of {}"),
}


def _comparison(world: _World, names: NameMaker, hops: int) -> _Question | None:
    """Two entities compared on one attribute; with 4 hops each side is reached by a bridge."""
    if hops not in (2, 4):
        return None
    rng = names.rng
    same = names.randint(100) < 35
    kind, attr, tmpl = names.choice(_SAME) if same else names.choice(_COMPARE)[:3]
    order = None if same else dict((c[2], c[3]) for c in _COMPARE)[tmpl]
    pool = world.of_kind(kind)
    if hops == 4:
        if kind not in _INTO:
            return None
        src_kind, link, phrase = _INTO[kind]
        # Only entities reachable through the link, each by exactly one source.
        sources: dict[str, list[_Entity]] = {}
        for s in world.of_kind(src_kind):
            sources.setdefault(s.attrs[link], []).append(s)
        pool = [e for e in pool if len(sources.get(e.name, [])) == 1]
    if len(pool) < 2:
        return None
    idx = rng.permutation(len(pool))
    a, b = pool[int(idx[0])], pool[int(idx[1])]
    if same and names.randint(2) == 0:
        # Make half of the yes/no questions true: look for a pair that shares the link.
        for i in idx:
            for j in idx:
                x, y = pool[int(i)], pool[int(j)]
                if x is not y and x.attrs[attr] == y.attrs[attr]:
                    a, b = x, y
                    break
            else:
                continue
            break
    if not same and a.attrs[attr] == b.attrs[attr]:
        return None
    if same:
        answer = "yes" if a.attrs[attr] == b.attrs[attr] else "no"
    else:
        pick_a = (a.attrs[attr] < b.attrs[attr]) == (order == "lower")
        answer = (a if pick_a else b).name
    if hops == 2:
        text = tmpl.format(a=_display(a), b=_display(b))
        return _Question(text, answer, "comparison", 2, [a.name, b.name])
    sa, sb = sources[a.name][0], sources[b.name][0]
    text = tmpl.format(a=phrase.format(_display(sa)), b=phrase.format(_display(sb)))
    return _Question(text, answer, "comparison", 4, [sa.name, a.name, sb.name, b.name])


def _answer_text(text: str) -> str:
    """The ``answer`` tool's function (module-level so the env pickles)."""
    return text


_DIFFICULTY = {
    # (countries, cities, people, orgs, hops)
    "easy": (2, 5, 6, 4, (2,)),
    "medium": (3, 7, 9, 5, (2, 3)),
    "hard": (4, 9, 12, 7, (3, 4)),
}


class MultiHopQAEnv(StepEnv):
    """Multi-hop question answering over a generated encyclopedia, with BM25 search.

    Args:
        difficulty: ``"easy"`` (2 hops, 17 documents), ``"medium"`` (2-3 hops, 24 documents)
            or ``"hard"`` (3-4 hops, 32 documents).
        hops: override the allowed hop counts (an int or a tuple of ints in 2..4).
        question_types: any of ``("bridge", "comparison")``; comparisons take 2 or 4 hops.
        top_k: documents returned per search.
        dataset: path to a HotpotQA-format JSON (or JSON-lines) file; episodes then draw
            a record of it (or ``options={"index": i}``) and search its context paragraphs.
        max_steps: step limit (default 10).

    Example:
        >>> import gymnasium as gym, stepgym
        >>> env = gym.make("stepgym/MultiHopQA-v0", difficulty="easy")
        >>> obs, info = env.reset(seed=0)
        >>> while True:
        ...     obs, reward, terminated, truncated, info = env.step(env.unwrapped.expert_action())
        ...     if terminated or truncated:
        ...         break
        >>> reward, info["success"]
        (1.0, True)
    """

    description: ClassVar[str] = "Answer 2-4 hop questions by BM25 search over a generated encyclopedia (HotpotQA-style)"
    default_max_steps: ClassVar[int] = 10

    def __init__(
        self,
        difficulty: str = "medium",
        *,
        hops: int | tuple[int, ...] | None = None,
        question_types: tuple[str, ...] = ("bridge", "comparison"),
        top_k: int = 3,
        dataset: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if difficulty not in _DIFFICULTY:
            raise InvalidConfig("difficulty", difficulty, f"one of {sorted(_DIFFICULTY)}")
        self.difficulty = difficulty
        if hops is None:
            hops = _DIFFICULTY[difficulty][4]
        hops = (hops,) if isinstance(hops, int) else tuple(hops)
        if not hops or any(not isinstance(h, int) or h not in (2, 3, 4) for h in hops):
            raise InvalidConfig("hops", hops, "an int or tuple of ints in 2..4")
        self.hops = hops
        if isinstance(question_types, str):
            question_types = (question_types,)
        question_types = tuple(question_types)
        if not question_types or any(q not in ("bridge", "comparison") for q in question_types):
            raise InvalidConfig("question_types", question_types, "a non-empty tuple of 'bridge' and/or 'comparison'")
        if question_types == ("comparison",) and not set(hops) & {2, 4}:
            raise InvalidConfig("hops", hops, "2 or 4 hops when question_types is ('comparison',)")
        self.question_types = question_types
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise InvalidConfig("top_k", top_k, "a positive int")
        self.top_k = top_k
        self.dataset_path = None if dataset is None else os.fspath(dataset)
        self._records = _load_hotpot(self.dataset_path) if self.dataset_path else None
        self.tools: dict[str, FunctionTool] = {
            "search": FunctionTool(
                "search",
                f"Search the encyclopedia; returns the top {top_k} documents ranked by BM25.",
                {"type": "object", "properties": {"query": {"type": "string", "description": "keywords, e.g. a name"}},
                 "required": ["query"]},
                self._search,
            ),
            "answer": FunctionTool(
                "answer",
                "Give the final answer (a name, a year, yes or no) and end the episode.",
                {"type": "object", "properties": {"text": {"type": "string", "description": "the answer"}},
                 "required": ["text"]},
                _answer_text,
            ),
        }
        self._titles: list[str] = []
        self._docs: list[str] = []
        self._retriever = None
        self._seen: set[str] = set()
        self._question: _Question | None = None

    # -- episode construction ------------------------------------------------------
    def _reset(self, options: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        if self._records is not None:
            q, docs = self._record_episode(options)
        else:
            q, docs = self._synthetic_episode()
        self._question = q
        self._titles = list(docs)
        self._docs = [docs[t] for t in self._titles]
        self._retriever = None  # built on the first search: reset stays cheap
        self._seen = set()
        example = format_tool_call("search", {"query": "NAME"})
        obs = (
            "Task: answer the question using the search tool. The facts are in a small encyclopedia "
            f"of {len(self._titles)} documents; search it, read the results, then call answer once "
            "with just the name, year, or yes/no.\n\n"
            f"Question: {q.text}\n\nTools:\n{describe_tools(list(self.tools.values()))}\n\n"
            "Action format: write one tool call per step, optionally after a short thought:\n"
            f"{example}\n"
            'Also accepted: a bare JSON object {"name": ..., "arguments": {...}} or ReAct style '
            "`Action: search[NAME]`. Finish with the answer tool.\n"
            f"You have {self.max_steps} steps."
        )
        info = {"question": q.text, "question_type": q.qtype, "hops": q.hops, "num_documents": len(self._titles),
                "optimal_steps": len(q.support) + 1}
        return obs, info

    def _synthetic_episode(self) -> tuple[_Question, dict[str, str]]:
        n_countries, n_cities, n_people, n_orgs, _ = _DIFFICULTY[self.difficulty]
        for _ in range(200):
            names = NameMaker(self.np_random)
            world = _World(names, n_countries, n_cities, n_people, n_orgs)
            for _ in range(20):
                qtype = names.choice(self.question_types)
                hops = names.choice(self.hops)
                q = (_bridge if qtype == "bridge" else _comparison)(world, names, hops)
                if q is not None:
                    return q, world.docs
        raise RuntimeError("could not generate a question")  # pragma: no cover - needs pathological knobs

    def _record_episode(self, options: dict[str, Any] | None) -> tuple[_Question, dict[str, str]]:
        if self._records is None:  # invariant, not user input
            raise RuntimeError('internal error: self._records is not None')
        n = len(self._records)
        index = (options or {}).get("index")
        if index is None:
            index = int(self.np_random.integers(n))
        if not isinstance(index, int) or not 0 <= index < n:
            raise InvalidArgument(f"options['index'] must be an int in [0, {n}), got {index!r}")
        return self._records[index]

    def _index(self) -> None:
        import bm25s  # ~0.3 s import; only envs that search pay it

        corpus = [f"{t}. {d}" for t, d in zip(self._titles, self._docs, strict=True)]
        tokens = bm25s.tokenize(corpus, stopwords="en", show_progress=False)
        self._retriever = bm25s.BM25()
        self._retriever.index(tokens, show_progress=False)

    # -- tools -------------------------------------------------------------------------
    def _search(self, query: str) -> ToolOutput:
        import bm25s

        query = query.strip()
        if not query:
            return ToolOutput("search needs a non-empty query, e.g. a name from the question.", ok=False)
        tokens = bm25s.tokenize([query], stopwords="en", show_progress=False, return_ids=False)
        if not tokens or not tokens[0]:
            return ToolOutput(f"No results for {quote_action(query, 80)}: use content words such as names.", ok=False)
        if self._retriever is None:
            self._index()
        k = min(self.top_k, len(self._titles))
        docs, scores = self._retriever.retrieve(tokens, k=k, show_progress=False)
        lines = []
        for rank, (i, s) in enumerate(zip(docs[0], scores[0], strict=True), 1):
            if float(s) <= 0.0:
                continue
            title = self._titles[int(i)]
            self._seen.add(title)
            lines.append(f"[{rank}] {title}: {self._docs[int(i)]}")
        if not lines:
            return ToolOutput(f"No results for {quote_action(query, 80)}.")
        return ToolOutput("\n".join(lines))

    # -- env API -----------------------------------------------------------------------
    def _step(self, action: str) -> StepResult:
        call = dispatch(action, self.tools)
        if isinstance(call, str):
            return StepResult(tool_error_obs(call, self.tools), action_valid=False, error=call)
        tool, args = call
        q = self._question
        if q is None:  # invariant, not user input
            raise RuntimeError('internal error: q is not None')
        if tool.name == "answer":
            pred = args["text"]
            em = exact_match(pred, q.answer)
            f1 = f1_score(pred, q.answer)
            verdict = "correct" if em else f"not correct; the answer was {q.answer!r}"
            return StepResult(
                f"You answered {quote_action(pred, 200)}: {verdict}.",
                reward=1.0 if em else 0.0,
                terminated=True,
                success=em,
                info={"em": float(em), "f1": f1, "answer": q.answer, "prediction": pred,
                      "support_recall": self._support_recall()},
            )
        out = tool(**args)
        text, ok = (out.text, out.ok) if isinstance(out, ToolOutput) else (str(out), True)
        if not ok:
            return StepResult(f"Invalid action: {text}", action_valid=False, error=text, info={"tool": tool.name})
        return StepResult(text, info={"tool": tool.name})

    def _on_truncate(self) -> dict[str, Any]:
        q = self._question
        return {"em": 0.0, "f1": 0.0, "answer": q.answer if q else None, "prediction": None,
                "support_recall": self._support_recall()}

    def _support_recall(self) -> float:
        """Fraction of the supporting documents that some search showed (1.0 when none are known)."""
        q = self._question
        if q is None or not q.support:
            return 1.0
        return sum(t in self._seen for t in q.support) / len(q.support)

    def expert_action(self) -> str:
        """Search the next supporting document not yet retrieved (by its title), then answer."""
        q = self._question
        if q is None:
            raise InvalidArgument("call reset() before expert_action()")
        if self.max_steps - self.elapsed_steps > 1:
            for title in q.support:
                if title not in self._seen and title in self._titles:
                    return format_tool_call("search", {"query": title})
        return format_tool_call("answer", {"text": q.answer})


# -- HotpotQA-format data ---------------------------------------------------------------
def _load_hotpot(path: str) -> list[tuple[_Question, dict[str, str]]]:
    """Read HotpotQA records: a JSON list (or ``{"data": [...]}``, or JSON lines)."""
    if not os.path.isfile(path):
        raise InvalidArgument(f"dataset file {path!r} does not exist; pass the path of a HotpotQA-format JSON file")
    with open(path, encoding="utf-8") as f:
        raw = f.read()
    try:
        data = json.loads(raw)
    except ValueError:
        try:
            data = [json.loads(line) for line in raw.splitlines() if line.strip()]
        except ValueError as exc:
            raise InvalidArgument(f"dataset {path!r} is neither JSON nor JSON lines: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list) or not data:
        raise InvalidArgument(f"dataset {path!r} must hold a non-empty list of records, got {type(data).__name__}")
    out = []
    for i, rec in enumerate(data):
        out.append(_parse_record(rec, f"{path} record {i}"))
    return out


def _parse_record(rec: Any, where: str) -> tuple[_Question, dict[str, str]]:
    def bad(why: str) -> InvalidArgument:
        return InvalidArgument(
            f"{where}: {why}. Expected HotpotQA format: {{'question': str, 'answer': str, "
            "'context': [[title, [sentence, ...]], ...]}"
        )

    if not isinstance(rec, dict):
        raise bad(f"a record must be an object, got {type(rec).__name__}")
    question, answer, context = rec.get("question"), rec.get("answer"), rec.get("context")
    if not isinstance(question, str) or not isinstance(answer, str):
        raise bad("'question' and 'answer' must be strings")
    if isinstance(context, dict):  # the Hugging Face datasets layout
        context = list(zip(context.get("title", []), context.get("sentences", []), strict=False))
    if not isinstance(context, list) or not context:
        raise bad("'context' must be a non-empty list of [title, sentences] paragraphs")
    docs: dict[str, str] = {}
    for para in context:
        if not (isinstance(para, (list, tuple)) and len(para) == 2 and isinstance(para[0], str)):
            raise bad("each context paragraph must be [title, [sentences]]")
        sents = para[1]
        text = " ".join(s.strip() for s in sents) if isinstance(sents, list) else str(sents)
        docs[para[0]] = text
    facts = rec.get("supporting_facts") or []
    if isinstance(facts, dict):
        facts = list(zip(facts.get("title", []), facts.get("sent_id", []), strict=False))
    support: list[str] = []
    for fact in facts:
        title = fact[0] if isinstance(fact, (list, tuple)) and fact else None
        if isinstance(title, str) and title in docs and title not in support:
            support.append(title)
    qtype = rec.get("type") if rec.get("type") in ("bridge", "comparison") else "bridge"
    return _Question(question, answer, qtype, max(len(support), 1), support), docs
