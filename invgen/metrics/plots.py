"""PNG plots of bias reports, drawn with matplotlib's Agg canvas (no display, no pyplot global state).

Files are written atomically: a killed run never leaves half a PNG behind.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from invgen.atomic import atomic_file

_MAX_PROMPTS = 40  # beyond this a per-prompt bar chart is unreadable: the plots show the first ones


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> None:
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", bbox_inches="tight")


def _short(text: str, n: int = 38) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def plot_attribute_histogram(report: Mapping[str, Any], path: str | os.PathLike) -> None:
    """One stacked bar per prompt: the share of each attribute value, with the target's boundaries dashed."""
    names = list(report["values"])
    prompts = list(report["per_prompt"])[:_MAX_PROMPTS]
    shares = np.array(
        [[report["per_prompt"][p]["counts"][n] for n in names] for p in prompts], dtype=np.float64
    )
    totals = shares.sum(axis=1, keepdims=True)
    shares = np.divide(shares, totals, out=np.zeros_like(shares), where=totals > 0)

    fig = _figure(8.0, 1.2 + 0.32 * len(prompts))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(prompts))
    left = np.zeros(len(prompts))
    colors = _value_colors(names)
    for j, name in enumerate(names):
        ax.barh(y, shares[:, j], left=left, color=colors[j], label=name, edgecolor="white", linewidth=0.5)
        left += shares[:, j]
    for edge in np.cumsum(report["target"])[:-1]:
        ax.axvline(edge, color="black", linestyle="--", linewidth=1)
    ax.set_yticks(y, [f"{_short(p)} (n={report['per_prompt'][p]['n']})" for p in prompts])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"share of images by {report['attribute']} (dashed: target)")
    ax.set_title(f"{report['attribute']} per prompt — bias score {report['bias_score']:.3f}")
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.12 - 0.2 / max(len(prompts), 1)),
        ncol=min(len(names), 6),
        frameon=False,
    )
    _save(fig, path)


def _value_colors(names: list[str]) -> list:
    from matplotlib import colormaps
    from matplotlib import colors as mcolors

    out = []
    palette = colormaps["tab10"]
    for i, n in enumerate(names):
        # Attribute values that are color names are drawn in that color; anything else from tab10.
        out.append(n if n in mcolors.CSS4_COLORS else palette(i % 10))
    return out


def plot_comparison(
    comparison: Mapping[str, Any], path: str | os.PathLike, metric: str = "bias_score"
) -> None:
    """Grouped bars of one metric per prompt, one color per image set, plus the overall mean with its CI."""
    labels = list(comparison["labels"])
    prompts = list(comparison["per_prompt"])[:_MAX_PROMPTS]
    groups = ["overall", *prompts]
    width = 0.8 / max(len(labels), 1)
    fig = _figure(max(6.0, 0.6 * len(groups) * max(len(labels), 1) ** 0.5 + 2), 4.5)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(groups))
    for i, label in enumerate(labels):
        overall = comparison["metrics"][label]
        heights = [overall.get(metric, np.nan)]
        heights += [comparison["per_prompt"][p].get(label, {}).get(metric, np.nan) for p in prompts]
        heights = np.array([np.nan if h is None else h for h in heights], dtype=np.float64)
        bars = ax.bar(x + (i - (len(labels) - 1) / 2) * width, heights, width, label=label)
        floor = overall.get("at_target", {}).get(metric)
        if floor is not None and np.isfinite(floor):
            # What a model exactly at the target scores with the same sample sizes: the bar to beat.
            left = bars[0].get_x()
            ax.hlines(floor, left, left + width, color="grey", linestyle=":", linewidth=1.5)
        ci = overall.get("ci", {}).get(metric)
        if ci and None not in ci:
            # A line from the low to the high end, not error bars: percentile intervals of a score bounded
            # below by 0 need not contain the point estimate (a balanced set's resamples are never below 0).
            centre = bars[0].get_x() + width / 2
            ax.vlines(centre, ci[0], ci[1], color="black", linewidth=1.5)
            ax.hlines([ci[0], ci[1]], centre - width / 4, centre + width / 4, color="black", linewidth=1.5)
    ax.set_xticks(x, [_short(g, 24) for g in groups], rotation=45, ha="right")
    ax.set_ylabel(metric.replace("_", " "))
    conf = int(round(100 * comparison.get("confidence", 0.95)))
    ax.set_title(
        f"{metric.replace('_', ' ')} by prompt (overall: mean over prompts, {conf}% interval; "
        "dotted: a model at the target)"
    )
    ax.legend(frameon=False)
    _save(fig, path)
