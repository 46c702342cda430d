"""PaperSearch-v0: find every paper relevant to a research query in a generated corpus.

Each episode generates a corpus of papers (id, title, abstract, year, venue, keywords) over
research areas and application tasks, a citation graph (papers cite earlier ones, mostly
in their own area or task), and a query such as "reinforcement learning for robotic
manipulation". The hidden relevant set is every paper on that area *and* task (and, at
``difficulty="hard"``, published in the asked years). Some relevant papers are written with
other names for the same ideas ("policy optimization" for "reinforcement learning"), so a
keyword search misses them; they are reachable through the citations of relevant papers.

Tools: ``search(query)`` (BM25 over title, abstract and keywords with ``bm25s``),
``expand(paper_id)`` (the paper's references and the papers citing it) and
``submit(paper_ids)`` (ends the episode; ``paper_ids`` optional, comma-separated).
Reward is dense: ``+1/|relevant|`` for each relevant paper shown for the first time by a
search or an expansion, and ``-repeat_penalty`` for repeating a query or an expansion.
``info`` at the end: ``recall`` (relevant papers shown / relevant), ``precision``, ``f1``
(of the submitted ids, or of everything shown when none are given).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from stepgym.actions import format_tool_call
from stepgym.core import StepEnv, StepResult, quote_action
from stepgym.envs._toolcalls import FunctionTool, dispatch, tool_error_obs
from stepgym.errors import InvalidArgument, InvalidConfig
from stepgym.tools.base import ToolOutput, describe_tools

__all__ = ["PaperSearchEnv"]

# (canonical name, alias written by "hidden" papers, keywords) -- aliases share no word with
# the canonical name, so BM25 on the query cannot find them.
_AREAS = [
    ("reinforcement learning", "policy optimization", ["reward shaping", "value function", "exploration"]),
    ("graph neural networks", "message passing", ["node embeddings", "neighborhood aggregation", "graph pooling"]),
    ("language models", "autoregressive transformers", ["pretraining", "tokenization", "in-context prompting"]),
    ("contrastive learning", "instance discrimination", ["data augmentation", "negative pairs", "embedding space"]),
    ("diffusion models", "score matching", ["denoising", "noise schedules", "sampling steps"]),
    ("federated learning", "decentralized client training", ["client drift", "secure aggregation", "communication cost"]),
    ("knowledge distillation", "teacher student compression", ["soft targets", "model compression", "logit matching"]),
    ("bayesian optimization", "gaussian process surrogates", ["acquisition functions", "expected improvement", "hyperparameter tuning"]),
    ("neural architecture search", "automated network design", ["search spaces", "weight sharing", "supernet"]),
    ("adversarial robustness", "worst-case perturbations", ["attacks", "certified defenses", "perturbation budgets"]),
    ("meta-learning", "few-shot adaptation", ["inner loop", "task distributions", "fast weights"]),
    ("mixture of experts", "sparse expert routing", ["gating networks", "load balancing", "conditional computation"]),
]
_TASKS = [
    ("robotic manipulation", "dexterous grasping"),
    ("machine translation", "cross-lingual transfer"),
    ("protein structure prediction", "residue contact folding"),
    ("traffic forecasting", "road sensor prediction"),
    ("medical imaging", "radiology scans"),
    ("recommender systems", "collaborative filtering"),
    ("code generation", "program synthesis"),
    ("speech recognition", "acoustic transcription"),
    ("drug discovery", "molecular property screening"),
    ("autonomous driving", "vehicle motion planning"),
    ("weather forecasting", "atmospheric simulation"),
    ("question answering", "reading comprehension"),
]
_VENUES = ["NeurIPS", "ICML", "ICLR", "AAAI", "ACL", "EMNLP", "CVPR", "KDD", "AISTATS", "UAI", "TMLR", "JMLR"]
_ADJ = ["Scalable", "Efficient", "Robust", "Provable", "Sparse", "Hierarchical", "Adaptive", "Unified",
        "Simple", "Fast", "Stable", "Calibrated", "Modular", "Continual", "Causal", "Lightweight"]
_NOUNS = ["limits", "generalization", "stability", "sample efficiency", "scaling behaviour", "failure modes",
          "inductive biases", "evaluation"]
_BENCH = ["standard", "large-scale", "real-world", "synthetic", "public", "low-resource"]

_DIFFICULTY = {
    # papers, relevant, hidden relevant, year filter
    "easy": (40, 4, 1, False),
    "medium": (80, 6, 2, False),
    "hard": (150, 8, 3, True),
}


@dataclass
class _Paper:
    pid: str
    title: str
    abstract: str
    year: int
    venue: str
    keywords: list[str]
    area: int
    task: int
    hidden: bool = False
    refs: list[str] = field(default_factory=list)  # papers this one cites
    cited_by: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"{self.pid} ({self.year}, {self.venue}) {self.title} -- keywords: {', '.join(self.keywords)}"


def _submitted_ids(paper_ids: str = "") -> str:
    """The ``submit`` tool's function (module-level so the env pickles)."""
    return paper_ids


def _norm_query(q: str) -> str:
    return " ".join(q.lower().split())


class PaperSearchEnv(StepEnv):
    """Literature search over a generated corpus with a citation graph.

    Args:
        difficulty: ``"easy"`` (40 papers, 4 relevant, 1 reachable only by citations),
            ``"medium"`` (80, 6, 2) or ``"hard"`` (150, 8, 3, and a publication-year
            condition in the query).
        num_papers / num_relevant / num_hidden: override the difficulty's sizes.
        top_k: results per search.
        repeat_penalty: reward subtracted for a repeated query or expansion.
        success_recall: recall of relevant papers shown needed for ``success``.
        max_steps: step limit (default 15).

    Example:
        >>> import gymnasium as gym, stepgym
        >>> env = gym.make("stepgym/PaperSearch-v0", difficulty="easy")
        >>> obs, info = env.reset(seed=0)
        >>> total = 0.0
        >>> while True:
        ...     obs, reward, terminated, truncated, info = env.step(env.unwrapped.expert_action())
        ...     total += reward
        ...     if terminated or truncated:
        ...         break
        >>> round(total, 6), info["recall"], info["f1"]
        (1.0, 1.0, 1.0)
    """

    description: ClassVar[str] = "Find all papers relevant to a research query with search and citation expansion"
    default_max_steps: ClassVar[int] = 15
    reward_range = (-1.0, 1.0)

    def __init__(
        self,
        difficulty: str = "medium",
        *,
        num_papers: int | None = None,
        num_relevant: int | None = None,
        num_hidden: int | None = None,
        top_k: int = 5,
        repeat_penalty: float = 0.1,
        success_recall: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if difficulty not in _DIFFICULTY:
            raise InvalidConfig("difficulty", difficulty, f"one of {sorted(_DIFFICULTY)}")
        n, r, hid, self.year_filter = _DIFFICULTY[difficulty]
        self.difficulty = difficulty
        self.num_papers = n if num_papers is None else num_papers
        self.num_relevant = r if num_relevant is None else num_relevant
        self.num_hidden = hid if num_hidden is None else num_hidden
        if not isinstance(self.num_relevant, int) or not 1 <= self.num_relevant <= 40:
            raise InvalidConfig("num_relevant", self.num_relevant, "an int in [1, 40]")
        if not isinstance(self.num_hidden, int) or not 0 <= self.num_hidden < self.num_relevant:
            raise InvalidConfig("num_hidden", self.num_hidden, f"an int in [0, num_relevant={self.num_relevant})")
        need = 2 * self.num_relevant + 10
        if not isinstance(self.num_papers, int) or not need <= self.num_papers <= 5000:
            raise InvalidConfig("num_papers", self.num_papers, f"an int in [{need}, 5000] (2*num_relevant + 10 at least)")
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= 50:
            raise InvalidConfig("top_k", top_k, "an int in [1, 50]")
        if not 0.0 <= float(repeat_penalty) <= 1.0:
            raise InvalidConfig("repeat_penalty", repeat_penalty, "a float in [0, 1]")
        if not 0.0 < float(success_recall) <= 1.0:
            raise InvalidConfig("success_recall", success_recall, "a float in (0, 1]")
        self.top_k = top_k
        self.repeat_penalty = float(repeat_penalty)
        self.success_recall = float(success_recall)
        self.tools: dict[str, FunctionTool] = {
            "search": FunctionTool(
                "search", f"Keyword search (BM25) over titles, abstracts and keywords; returns the top {top_k} papers.",
                {"type": "object", "properties": {"query": {"type": "string", "description": "search keywords"}},
                 "required": ["query"]}, self._search_tool),
            "expand": FunctionTool(
                "expand", "List the references of a paper and the papers that cite it.",
                {"type": "object", "properties": {"paper_id": {"type": "string", "description": "a paper id such as P1234"}},
                 "required": ["paper_id"]}, self._expand_tool),
            "submit": FunctionTool(
                "submit", "Finish. Optionally list the ids you judge relevant, comma-separated; else everything shown counts.",
                {"type": "object", "properties": {"paper_ids": {"type": "string", "description": "e.g. 'P1234, P2087'"}},
                 "required": []}, _submitted_ids),
        }
        self.papers: dict[str, _Paper] = {}
        self.relevant: set[str] = set()
        self.query = ""
        self._shown: set[str] = set()
        self._queries: set[str] = set()
        self._expanded: set[str] = set()
        self._retriever = None
        self._ids: list[str] = []
        self._step_new: list[str] = []

    # -- generation ----------------------------------------------------------------------
    def _reset(self, options: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        rng = self.np_random
        area, task = int(rng.integers(len(_AREAS))), int(rng.integers(len(_TASKS)))
        ids = rng.choice(9000, size=self.num_papers, replace=False) + 1000
        cutoff = int(rng.integers(2016, 2021)) if self.year_filter else 0
        papers: list[_Paper] = []
        n_rel, n_hid = self.num_relevant, self.num_hidden
        # Topic of each paper: the relevant ones, near misses (same area or same task, or
        # right topic but too old), and random others.
        topics: list[tuple[int, int, str]] = [(area, task, "rel")] * n_rel
        n_old = n_rel // 2 if self.year_filter else 0
        topics += [(area, task, "old")] * n_old
        rest = self.num_papers - len(topics)
        for i in range(rest):
            if i % 3 == 0:
                topics.append((area, _other(rng, len(_TASKS), task), "near"))
            elif i % 3 == 1:
                topics.append((_other(rng, len(_AREAS), area), task, "near"))
            else:
                topics.append((int(rng.integers(len(_AREAS))), int(rng.integers(len(_TASKS))), "far"))
        hidden_left = n_hid
        draws = rng.random(size=(len(topics), 7))
        for i, (a, t, kind) in enumerate(topics):
            if kind == "rel":
                year = int(rng.integers(max(cutoff, 2012), 2025))
            elif kind == "old":
                year = int(rng.integers(2008, cutoff))
            else:
                year = int(rng.integers(2008, 2025))
            hidden = kind == "rel" and hidden_left > 0 and i >= n_rel - n_hid
            if hidden:
                hidden_left -= 1
            papers.append(self._paper(f"P{int(ids[i])}", a, t, year, hidden, draws[i]))
        self.papers = {p.pid: p for p in papers}
        self.relevant = {papers[i].pid for i in range(n_rel)}
        self._cite(papers, rng)
        self.query = f"{_AREAS[area][0]} for {_TASKS[task][0]}"
        if cutoff:
            self.query += f", published in {cutoff} or later"
        self._ids = [p.pid for p in papers]
        order = rng.permutation(len(self._ids))  # index order must not leak relevance
        self._ids = [self._ids[int(i)] for i in order]
        self._retriever = None  # built on the first search: reset stays cheap
        self._shown, self._queries, self._expanded = set(), set(), set()
        example = format_tool_call("search", {"query": "KEYWORDS"})
        obs = (
            f"Task: find every paper relevant to this research query:\n  \"{self.query}\"\n"
            f"The corpus has {self.num_papers} papers. Relevant papers may use other names for the same "
            "ideas; the references and citations of relevant papers often lead to more of them. "
            "Each relevant paper you bring up for the first time (in a search or an expansion) earns reward; "
            "repeating a query or an expansion costs reward. Submit when you have found them all.\n\n"
            f"Tools:\n{describe_tools(list(self.tools.values()))}\n\n"
            "Action format: write one tool call per step, optionally after a short thought:\n"
            f"{example}\n"
            'Also accepted: a bare JSON object {"name": ..., "arguments": {...}} or ReAct style '
            "`Action: expand[P1234]`.\n"
            f"You have {self.max_steps} steps."
        )
        return obs, {"query": self.query, "num_relevant": len(self.relevant), "num_papers": self.num_papers}

    def _paper(self, pid: str, a: int, t: int, year: int, hidden: bool, d) -> _Paper:
        """One paper; ``d`` holds 7 uniform draws (drawn in one batch: per-call RNG cost dominated reset)."""
        area_name, alias, kws = _AREAS[a]
        task_name, task_alias = _TASKS[t]
        an, tn = (alias, task_alias) if hidden else (area_name, task_name)

        def pick(seq, x):
            return seq[int(x * len(seq))]

        form = int(d[0] * 3)
        if form == 0:
            title = f"{pick(_ADJ, d[1])} {an} for {tn}"
        elif form == 1:
            title = f"{tn.capitalize()} with {pick(_ADJ, d[1]).lower()} {an}"
        else:
            title = f"On the {pick(_NOUNS, d[1])} of {an} in {tn}"
        k1, k2 = pick(kws, d[2]), pick(kws, d[3])
        abstract = (f"We study {an} for {tn}. Our method combines {k1} with {k2} "
                    f"and improves over prior work on {pick(_BENCH, d[4])} benchmarks.")
        keywords = sorted({k1, k2, tn})
        return _Paper(pid, title, abstract, year, pick(_VENUES, d[5]), keywords, a, t, hidden)

    def _cite(self, papers: list[_Paper], rng) -> None:
        """Papers cite 1-4 earlier ones, mostly on a shared area or task. Relevant papers cite
        each other, and every hidden relevant paper is linked to a keyword-findable one."""
        by_year = sorted(papers, key=lambda p: (p.year, p.pid))
        rank = {p.pid: i for i, p in enumerate(by_year)}

        def link(src: _Paper, dst: _Paper) -> None:
            newer, older = (src, dst) if rank[src.pid] > rank[dst.pid] else (dst, src)
            if older.pid not in newer.refs and newer is not older:
                newer.refs.append(older.pid)
                older.cited_by.append(newer.pid)

        by_area: dict[int, list[_Paper]] = {}
        by_task: dict[int, list[_Paper]] = {}
        draws = rng.random(size=(len(by_year), 9))
        for i, p in enumerate(by_year):
            if i:
                # Pools of earlier papers that share the area or the task (kept incrementally:
                # a scan of all earlier papers per paper made reset quadratic).
                close = by_area.get(p.area, []) + by_task.get(p.task, [])
                d = draws[i]
                for j in range(1 + int(d[0] * 4)):
                    pool = close if close and d[1 + 2 * j] < 0.8 else by_year[:i]
                    link(p, pool[int(d[2 + 2 * j] * len(pool))])
            by_area.setdefault(p.area, []).append(p)
            by_task.setdefault(p.task, []).append(p)
        rel = [p for p in papers if p.pid in self.relevant]
        visible = [p for p in rel if not p.hidden]
        for h in [p for p in rel if p.hidden]:
            link(h, visible[int(rng.integers(len(visible)))])
        for p in rel:  # a connected cluster: each relevant paper links to another one
            others = [q for q in rel if q is not p]
            if others:
                link(p, others[int(rng.integers(len(others)))])
        for p in papers:
            p.refs.sort()
            p.cited_by.sort()

    def _index(self) -> None:
        import bm25s

        corpus = []
        for pid in self._ids:
            p = self.papers[pid]
            corpus.append(f"{p.title}. {p.abstract} Keywords: {', '.join(p.keywords)}.")
        tokens = bm25s.tokenize(corpus, stopwords="en", show_progress=False)
        self._retriever = bm25s.BM25()
        self._retriever.index(tokens, show_progress=False)

    # -- tools -------------------------------------------------------------------------
    def _search(self, query: str) -> list[str]:
        import bm25s

        tokens = bm25s.tokenize([query], stopwords="en", show_progress=False, return_ids=False)
        if not tokens or not tokens[0]:
            return []
        if self._retriever is None:
            self._index()
        k = min(self.top_k, len(self._ids))
        docs, scores = self._retriever.retrieve(tokens, k=k, show_progress=False)
        return [self._ids[int(i)] for i, s in zip(docs[0], scores[0], strict=True) if float(s) > 0.0]

    def _neighbours(self, pid: str) -> list[str]:
        p = self.papers[pid]
        return p.refs + p.cited_by

    def _show(self, pids: list[str]) -> None:
        for pid in pids:
            if pid not in self._shown:
                self._shown.add(pid)
                if pid in self.relevant:
                    self._step_new.append(pid)

    def _search_tool(self, query: str) -> ToolOutput:
        if not query.strip():
            return ToolOutput("search needs a non-empty query.", ok=False)
        hits = self._search(query)
        self._show(hits)
        if not hits:
            return ToolOutput(f"No papers match {quote_action(query, 80)}.")
        return ToolOutput("\n".join(f"[{i}] {self.papers[p].line()}" for i, p in enumerate(hits, 1)))

    def _resolve_id(self, paper_id: str) -> str | None:
        pid = paper_id.strip().upper()
        if pid and pid[0].isdigit():
            pid = "P" + pid
        return pid if pid in self.papers else None

    def _expand_tool(self, paper_id: str) -> ToolOutput:
        pid = self._resolve_id(paper_id)
        if pid is None:
            return ToolOutput(f"No paper with id {quote_action(paper_id, 40)}; ids look like P1234 and come from search results.",
                              ok=False)
        p = self.papers[pid]
        self._show([pid, *p.refs, *p.cited_by])
        refs = "\n".join(f"  {self.papers[r].line()}" for r in p.refs) or "  (none)"
        cits = "\n".join(f"  {self.papers[c].line()}" for c in p.cited_by) or "  (none)"
        return ToolOutput(f"{p.line()}\nAbstract: {p.abstract}\nReferences:\n{refs}\nCited by:\n{cits}")

    # -- env API -----------------------------------------------------------------------
    def _step(self, action: str) -> StepResult:
        call = dispatch(action, self.tools)
        if isinstance(call, str):
            return StepResult(tool_error_obs(call, self.tools), action_valid=False, error=call)
        tool, args = call
        if tool.name == "submit":
            return self._submit(args.get("paper_ids", ""))
        penalty = 0.0
        if tool.name == "search":
            key = _norm_query(args["query"])
            if key in self._queries:
                penalty = self.repeat_penalty
            self._queries.add(key)
        else:
            pid = self._resolve_id(args["paper_id"])
            if pid is not None and pid in self._expanded:
                penalty = self.repeat_penalty
            if pid is not None:
                self._expanded.add(pid)
        self._step_new = []
        out = tool(**args)
        if not (isinstance(out, ToolOutput)):  # invariant, not user input
            raise RuntimeError('internal error: isinstance(out, ToolOutput)')
        gain = len(self._step_new) / len(self.relevant)
        info = {"tool": tool.name, "new_relevant": len(self._step_new), "found": len(self._shown & self.relevant),
                "repeated": penalty > 0}
        text = out.text
        if penalty:
            text = "(You already did this; repeating costs reward.)\n" + text
        if not out.ok:
            return StepResult(f"Invalid action: {text}", reward=-penalty, action_valid=False, error=out.text, info=info)
        return StepResult(text, reward=gain - penalty, info=info)

    def _metrics(self, chosen: set[str]) -> dict[str, Any]:
        found = self._shown & self.relevant
        recall = len(found) / len(self.relevant)
        hit = chosen & found  # an id never shown counts as a wrong guess
        precision = len(hit) / len(chosen) if chosen else 0.0
        rec_chosen = len(hit) / len(self.relevant)
        f1 = 2 * precision * rec_chosen / (precision + rec_chosen) if hit else 0.0
        return {"recall": recall, "precision": precision, "f1": f1, "found": len(found),
                "num_relevant": len(self.relevant), "relevant_ids": sorted(self.relevant)}

    def _submit(self, paper_ids: str) -> StepResult:
        given = [s for s in paper_ids.replace(";", ",").replace(" ", ",").split(",") if s.strip()]
        if given:
            chosen = set()
            unknown = []
            for g in given[:500]:
                pid = self._resolve_id(g)
                (chosen.add(pid) if pid else unknown.append(g))
        else:
            chosen, unknown = set(self._shown), []
        info = self._metrics(chosen)
        if unknown:
            info["unknown_ids"] = [quote_action(u, 20) for u in unknown[:10]]
        ok = info["recall"] >= self.success_recall - 1e-9
        obs = (f"Submitted. You found {info['found']} of {info['num_relevant']} relevant papers "
               f"(recall {info['recall']:.2f}); F1 of your list {info['f1']:.2f}.")
        return StepResult(obs, terminated=True, success=ok, info=info)

    def _on_truncate(self) -> dict[str, Any]:
        return self._metrics(set(self._shown))

    def expert_action(self) -> str:
        """Greedy: the query, then the call that brings up the most unseen relevant papers."""
        if not self.papers:
            raise InvalidArgument("call reset() before expert_action()")
        missing = self.relevant - self._shown
        if not missing or self.max_steps - self.elapsed_steps <= 1:
            return format_tool_call("submit", {"paper_ids": ", ".join(sorted(self.relevant & self._shown))})
        best, best_gain = None, 0
        for q in (self.query, self.query.split(",")[0]):
            if _norm_query(q) not in self._queries:
                gain = len(set(self._search(q)) & missing)
                if gain > best_gain:
                    best, best_gain = format_tool_call("search", {"query": q}), gain
        for pid in sorted(self._shown & self.relevant):
            if pid not in self._expanded:
                gain = len(set(self._neighbours(pid)) & missing)
                if gain > best_gain:
                    best, best_gain = format_tool_call("expand", {"paper_id": pid}), gain
        if best is None:
            # Nothing reachable from what is shown: search a missing paper's title.
            pid = sorted(missing)[0]
            best = format_tool_call("search", {"query": self.papers[pid].title})
        return best


def _other(rng, n: int, not_this: int) -> int:
    x = int(rng.integers(n - 1))
    return x if x < not_this else x + 1
