"""Run reports: metrics rows, learning-curve PNG (matplotlib, Agg), rich console output, a summary dict.

Example:
    >>> rows = [{"iteration": 0, "eval/success_rate": 0.1},
    ...         {"iteration": 1, "charts/success_rate": 0.25, "eval/success_rate": 0.5}]
    >>> summarize(rows)["eval_success_first"], summarize(rows)["eval_success_last"]
    (0.1, 0.5)
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from stepgym.agents.evaluate import wilson_interval  # one implementation; re-exported here

__all__ = ["plot_learning_curve", "summary_table", "summarize", "read_metrics", "auc", "metrics_line", "progress_bar",
           "wilson_interval", "paired_gain"]


def read_metrics(path: str) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl`` file (a torn last line from a kill is skipped; no file: no rows)."""
    rows: list[dict[str, Any]] = []
    if not os.path.exists(path):
        return rows
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except ValueError:
                break
    return rows


def _series(rows: list[dict[str, Any]], key: str, x: str = "iteration") -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        if key in r and r[key] is not None:
            xs.append(float(r.get(x, 0)))
            ys.append(float(r[key]))
    return xs, ys


def auc(xs: list[float], ys: list[float]) -> float:
    """Normalised area under a curve (trapezoid rule / x range; the mean level for even spacing)."""
    if len(xs) < 2:
        return float(ys[0]) if ys else 0.0
    area = sum((xs[i + 1] - xs[i]) * (ys[i + 1] + ys[i]) / 2 for i in range(len(xs) - 1))
    return area / (xs[-1] - xs[0]) if xs[-1] != xs[0] else float(ys[-1])


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """First/last/best of the headline metrics of a run."""
    out: dict[str, Any] = {}
    for key, name in (("charts/success_rate", "train_success"), ("eval/success_rate", "eval_success"),
                      ("charts/episode_return", "train_return"), ("charts/episode_length", "train_length"),
                      ("charts/invalid_action_rate", "invalid_rate")):
        xs, ys = _series(rows, key)
        if ys:
            out[f"{name}_first"] = ys[0]
            out[f"{name}_last"] = ys[-1]
            out[f"{name}_best"] = max(ys)
            out[f"{name}_auc"] = auc(xs, ys)
    xs, ys = _series(rows, "perf/iteration_s")
    if ys:
        out["seconds_total"] = sum(ys)
    return out


def plot_learning_curve(rows: list[dict[str, Any]], path: str, title: str = "") -> str:
    """Success rate (train and eval), episode length and losses per iteration, as one PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ax = axes[0]
    for key, label, style in (("charts/success_rate", "train", "-o"), ("eval/success_rate", "eval (held-out)", "-s")):
        xs, ys = _series(rows, key)
        if ys:
            ax.plot(xs, ys, style, label=label, markersize=3)
    ax.set_xlabel("iteration")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="best", fontsize=8)
    ax.set_title("success")
    ax = axes[1]
    for key, label in (("charts/episode_length", "steps/episode"), ("charts/invalid_action_rate", "invalid rate")):
        xs, ys = _series(rows, key)
        if ys:
            ax.plot(xs, ys, "-o", label=label, markersize=3)
    ax.set_xlabel("iteration")
    ax.legend(loc="best", fontsize=8)
    ax.set_title("behaviour")
    ax = axes[2]
    for key, label in (("losses/policy", "policy"), ("losses/value", "value"), ("losses/kl", "kl")):
        xs, ys = _series(rows, key)
        if ys:
            ax.plot(xs, ys, "-", label=label)
    ax.set_xlabel("iteration")
    ax.legend(loc="best", fontsize=8)
    ax.set_title("losses")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def summary_table(rows: list[dict[str, Any]], title: str = "summary"):
    """A rich Table: headline metrics at the start, at the end, and best."""
    from rich.table import Table

    s = summarize(rows)
    t = Table(title=title)
    t.add_column("metric")
    t.add_column("first", justify="right")
    t.add_column("last", justify="right")
    t.add_column("best", justify="right")
    for name, label in (("eval_success", "eval success (held-out)"), ("train_success", "train success"),
                        ("train_return", "train return"), ("train_length", "steps / episode"),
                        ("invalid_rate", "invalid action rate")):
        if f"{name}_first" in s:
            t.add_row(label, f"{s[name + '_first']:.3f}", f"{s[name + '_last']:.3f}", f"{s[name + '_best']:.3f}")
    if "seconds_total" in s:
        t.caption = f"{len([r for r in rows if r.get('iteration', 0) > 0])} iterations, {s['seconds_total']:.0f} s"
    return t


def metrics_line(row: dict[str, Any], iterations: int) -> str:
    """The one-line console summary of an iteration's metrics row (``-`` for a missing metric).

    Example:
        >>> metrics_line({"iteration": 2, "charts/success_rate": 0.5, "charts/episode_return": 0.75}, 3)
        'it 2/3 | success 0.50 | return 0.75 | steps/ep - | invalid - | kl - | pg - | vf - | - tok/s'
    """
    def g(k: str, fmt: str = "{:.2f}") -> str:
        return fmt.format(row[k]) if k in row else "-"

    parts = [
        f"it {row['iteration']}/{iterations}",
        f"success {g('charts/success_rate')}",
        f"return {g('charts/episode_return')}",
        f"steps/ep {g('charts/episode_length', '{:.1f}')}",
        f"invalid {g('charts/invalid_action_rate')}",
        f"kl {g('losses/kl', '{:.4f}')}",
        f"pg {g('losses/policy', '{:+.3f}')}",
        f"vf {g('losses/value', '{:.3f}')}",
        f"{g('perf/tokens_per_s', '{:.0f}')} tok/s",
    ]
    if "eval/success_rate" in row:
        parts.append(f"[bold]eval {row['eval/success_rate']:.2f}[/]")
    if "perf/iteration_s" in row:
        parts.append(f"{row['perf/iteration_s']:.1f}s")
    return " | ".join(parts)


def progress_bar(console: Any, enabled: bool = True):
    """The progress bar of ``stepgym train`` and ``sft`` (:func:`stepgym.progress.progress_bar`: terminal only).

    Evaluations that run while it shows join it as a second line (:func:`stepgym.progress.episode_progress`).
    """
    from stepgym.progress import progress_bar as bar

    return bar(console, enabled)


def paired_gain(before: str, after: str, z: float = 1.96) -> dict[str, float]:
    """Success rates of two evaluations on the same seeds, and their difference with a paired interval.

    ``before`` and ``after`` are the evaluations' per-seed outcomes in seed order (``"0"``/``"1"``,
    the ``eval/successes`` entry of a metrics row). The interval of ``after - before`` is
    Newcombe's hybrid score interval for paired proportions (his method 10, with his continuity
    correction of the correlation): it uses that both evaluations ran on the same seeds, and
    stays sensible with few discordant seeds.

    Example:
        >>> g = paired_gain("0101000000", "1111010100")
        >>> g["before"], g["after"], round(g["gain"], 3), g["gained"], g["lost"]
        (0.2, 0.6, 0.4, 4, 0)
        >>> round(g["gain_low"], 3), round(g["gain_high"], 3)
        (0.011, 0.653)
    """
    if len(before) != len(after) or not before:
        raise ValueError(f"paired_gain needs two equally long, non-empty outcome strings (got {len(before)} "
                         f"and {len(after)} seeds)")
    n = len(before)
    both = sum(1 for b, a in zip(before, after) if b == "1" and a == "1")
    gained = sum(1 for b, a in zip(before, after) if b == "0" and a == "1")
    lost = sum(1 for b, a in zip(before, after) if b == "1" and a == "0")
    neither = n - both - gained - lost
    p_after, p_before = (both + gained) / n, (both + lost) / n
    l1, u1 = wilson_interval(both + gained, n, z)
    l2, u2 = wilson_interval(both + lost, n, z)
    margins = (both + gained) * (lost + neither) * (both + lost) * (gained + neither)
    # the correlation of the two evaluations, with Newcombe's continuity correction when it is
    # positive (without it, identical outcomes would give a zero-width interval)
    ad_bc = both * neither - gained * lost
    phi = (max(ad_bc - n / 2, 0.0) if ad_bc > 0 else ad_bc) / math.sqrt(margins) if margins else 0.0
    d = p_after - p_before
    low = d - math.sqrt(max(0.0, (p_after - l1) ** 2 - 2 * phi * (p_after - l1) * (u2 - p_before)
                            + (u2 - p_before) ** 2))
    high = d + math.sqrt(max(0.0, (u1 - p_after) ** 2 - 2 * phi * (u1 - p_after) * (p_before - l2)
                             + (p_before - l2) ** 2))
    return {"n": n, "before": p_before, "after": p_after, "gain": d, "gain_low": max(-1.0, low),
            "gain_high": min(1.0, high), "gained": gained, "lost": lost,
            "before_low": l2, "before_high": u2, "after_low": l1, "after_high": u1}
