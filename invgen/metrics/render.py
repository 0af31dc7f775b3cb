"""A bias report and a comparison as people read them: markdown tables, and the JSON, markdown and PNG files
`invgen metrics` writes (each atomically). Nothing here measures anything."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from invgen.atomic import write_json, write_text
from invgen.metrics.report import REPORT_METRICS

METRIC_TITLES = {
    "bias_score": "bias score ↓",
    "fairness_discrepancy": "FD ↓",
    "kl_uniform": "KL(p‖u) ↓",
    "kl_target": "KL(p‖p*) ↓",
    "entropy": "norm. entropy",
    "delta": "Δ ↓",
}



def json_safe(obj: Any) -> Any:
    """Plain JSON: numpy scalars and arrays become Python values, NaN and ±inf become null."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        return "∞" if math.isinf(x) else f"{x:.{digits}f}"
    return str(x)


def fmt_ci(value: Any, ci: Sequence[Any] | None) -> str:
    if not ci or any(c is None or (isinstance(c, float) and math.isnan(c)) for c in ci):
        return fmt(value)
    return f"{fmt(value)} [{fmt(ci[0])}, {fmt(ci[1])}]"


def md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def report_markdown(report: Mapping[str, Any]) -> str:
    """A markdown summary: overall figures with confidence intervals, then one row per prompt."""
    names = list(report["values"])
    target = ", ".join(f"{n} {t:.2f}" for n, t in zip(names, report["target"], strict=True))
    conf = int(round(100 * report.get("confidence", 0.95)))
    lines = [
        f"# Bias report: {md_cell(report['samples'])}",
        "",
        f"{report['n_images']} images, {report['n_prompts']} prompts; attribute **{report['attribute']}** "
        f"read by `{report['classifier']}`; target {target}. Overall = mean over prompts, "
        f"[{conf}% bootstrap interval]. *At target* is what a model exactly at the target scores with "
        "these sample sizes (small samples never score a perfect 0); *pooled* counts all prompts together.",
        "",
        "| metric | overall | at target | pooled |",
        "| --- | --- | --- | --- |",
    ]
    ci = report.get("ci", {})
    floor = report.get("at_target", {})
    for key in REPORT_METRICS:
        lines.append(
            f"| {METRIC_TITLES[key]} | {fmt_ci(report.get(key), ci.get(key))} "
            f"| {fmt(floor.get(key))} | {fmt(report['pooled'].get(key))} |"
        )
    if "metadata_agreement" in report:
        lines += [
            "",
            f"Classifier agrees with metadata.jsonl on {100 * report['metadata_agreement']:.1f}% of images.",
        ]
    unreadable = report.get("n_unreadable", 0)
    if unreadable:
        lines += [
            "",
            f"**{unreadable} of {report['n_images']} images are unreadable**: the classifier finds no "
            f"{report['attribute']} in them (e.g. all black or gray). They are left out of every figure.",
        ]
    extra = " unreadable |" if unreadable else ""
    lines += [
        "",
        "| prompt | n | " + " | ".join(names) + f" |{extra} bias score | entropy |",
        "| --- | --- | " + " | ".join("---" for _ in names) + f" |{' --- |' if unreadable else ''} --- | --- |",
    ]
    for prompt, e in report["per_prompt"].items():
        counts = " | ".join(str(e["counts"][n]) for n in names)
        cell = f" {e.get('unreadable', 0)} |" if unreadable else ""
        lines.append(
            f"| {md_cell(prompt)} | {e['n']} | {counts} |{cell} "
            f"{fmt_ci(e.get('bias_score'), e.get('ci', {}).get('bias_score'))} | {fmt(e.get('entropy'))} |"
        )
    if "t2i" in report:
        t = report["t2i"]
        lines += [
            "",
            "## T2I bias (Vice et al.)",
            "",
            "| B_D | M | B_D/(M−1) (ours) | H_J | H⁺ | H⁻ | M_G | mean 1−P(prompt) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            f"| {fmt(t.get('B_D'))} | {t.get('M')} | {fmt(t.get('B_D_size_free'))} | {fmt(t.get('H_J'))} "
            f"| {fmt(t.get('H_plus'))} | {fmt(t.get('H_minus'))} | {fmt(t.get('M_G'))} "
            f"| {fmt(t.get('mean_1_minus_p'))} |",
        ]
    if "quality" in report:
        q = report["quality"]
        lines += [
            "",
            "## Quality",
            "",
            "| FID ↓ | precision ↑ | recall ↑ | CLIP score ↑ | features |",
            "| --- | --- | --- | --- | --- |",
            f"| {fmt(q.get('fid'))} | {fmt(q.get('precision'))} | {fmt(q.get('recall'))} "
            f"| {fmt(q.get('clip_score'))} | {q.get('features', '–')} |",
        ]
    return "\n".join(lines) + "\n"


def write_report(report: Mapping[str, Any], out: str | os.PathLike, plots: bool = True) -> dict[str, Path]:
    """Write `out` (JSON), the markdown beside it (same name, .md) and the attribute histogram
    (`<name>_attributes.png`).

    Every file is written atomically; returns their paths by kind.
    """
    return _write(report, out, report_markdown, ("histogram", "_attributes.png", "plot_attribute_histogram"), plots)


def _write(obj: Mapping[str, Any], out: str | os.PathLike, markdown: Callable[[Mapping[str, Any]], str],
           plot: tuple[str, str, str], plots: bool) -> dict[str, Path]:
    """`obj` as JSON at `out`, its markdown beside it and, with `plots`, its plot `(kind, file suffix, name of
    the function in metrics.plots that draws it)` (matplotlib is loaded only then)."""
    out = Path(out)
    paths = {"json": out, "markdown": out.with_suffix(".md")}
    write_json(out, json_safe(obj))
    write_text(paths["markdown"], markdown(obj))
    if plots:
        from invgen.metrics import plots as drawing

        kind, suffix, draw = plot
        paths[kind] = out.with_name(out.stem + suffix)
        getattr(drawing, draw)(obj, paths[kind])
    return paths



def comparison_markdown(comparison: Mapping[str, Any]) -> str:
    labels = comparison["labels"]
    conf = int(round(100 * comparison.get("confidence", 0.95)))
    lines = [
        f"# Comparison: {comparison['attribute']} ({', '.join(comparison['values'])})",
        "",
        f"Baseline: **{comparison['baseline']}**. Overall = mean over prompts [{conf}% bootstrap interval]; "
        "× = ratio to the baseline.",
        "",
        "| metric | " + " | ".join(md_cell(lbl) for lbl in labels) + " |",
        "| --- | " + " | ".join("---" for _ in labels) + " |",
    ]
    for key in REPORT_METRICS:
        cells = []
        for label in labels:
            m = comparison["metrics"][label]
            cell = fmt_ci(m.get(key), m.get("ci", {}).get(key))
            ratio = comparison["ratio_to_baseline"][label].get(key)
            if label != comparison["baseline"] and ratio is not None:
                cell += f" (×{ratio:.2f})"
            cells.append(cell)
        lines.append(f"| {METRIC_TITLES[key]} | " + " | ".join(cells) + " |")
    lines.append(
        "| images | " + " | ".join(str(comparison["metrics"][lbl]["n_images"]) for lbl in labels) + " |"
    )
    unreadable = [comparison["metrics"][lbl].get("n_unreadable", 0) for lbl in labels]
    if any(unreadable):
        lines.append("| unreadable (left out) | " + " | ".join(str(u) for u in unreadable) + " |")
    for section, keys in (
        ("t2i", ("B_D", "H_J", "M_G")),
        ("quality", ("fid", "precision", "recall", "clip_score")),
    ):
        for key in keys:
            vals = [comparison["metrics"][lbl].get(section, {}).get(key) for lbl in labels]
            if any(v is not None for v in vals):
                lines.append(f"| {key} | " + " | ".join(fmt(v) for v in vals) + " |")
    lines += [
        "",
        "| prompt | " + " | ".join(f"bias: {md_cell(lbl)}" for lbl in labels) + " |",
        "| --- | " + " | ".join("---" for _ in labels) + " |",
    ]
    for prompt, by_label in comparison["per_prompt"].items():
        cells = [fmt(by_label.get(lbl, {}).get("bias_score")) for lbl in labels]
        lines.append(f"| {md_cell(prompt)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_comparison(
    comparison: Mapping[str, Any], out: str | os.PathLike, plots: bool = True
) -> dict[str, Path]:
    """Write `out` (JSON), the markdown beside it and the grouped bar chart (_bars.png), atomically."""
    return _write(comparison, out, comparison_markdown, ("bars", "_bars.png", "plot_comparison"), plots)



__all__ = [
    "METRIC_TITLES",
    "comparison_markdown",
    "fmt",
    "fmt_ci",
    "json_safe",
    "md_cell",
    "report_markdown",
    "write_comparison",
    "write_report",
]
