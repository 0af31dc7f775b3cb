"""`invgen audit --compare DIR1 DIR2`: two audits side by side (typically base, then debiased), with the change
in each figure and a per-prompt plot.

The comparison is `invgen.metrics.compare.compare_reports` (the one `invgen metrics --compare` makes) with the
audit's own figures added: the change (second − first) of every bias, no-face and quality figure, and the
protocol settings the two audits differ in (a comparison is fair only when just the pipeline or adapter does).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from invgen.atomic import write_text
from invgen.audit.figures import QUALITY_KEYS
from invgen.audit.folder import REPORT
from invgen.errors import InvgenConfigError, InvgenDataError, shown
from invgen.metrics.compare import compare_reports
from invgen.metrics.render import METRIC_TITLES, comparison_markdown, json_safe
from invgen.metrics.report import REPORT_METRICS

CHANGED_KEYS = (*REPORT_METRICS, "no_face_share", *QUALITY_KEYS)
_SAME_PROTOCOL = ("suite", "attribute", "prompts", "per_prompt", "seed", "detector", "classifier", "call")


def load_audit(folder: str | Path) -> dict[str, Any]:
    """The report.json of an audit folder (or the file itself), checked as `invgen metrics` checks reports."""
    from invgen.metrics.compare import load_report

    path = Path(folder)
    if path.is_dir() and not (path / REPORT).is_file():
        raise InvgenDataError(f"{shown(path)} holds no audit report ({REPORT}); run invgen audit into it first")
    report = load_report(path)
    if "protocol" not in report or "n_no_face" not in report:
        raise InvgenDataError(f"{shown(path)}: a bias report, but not one written by invgen audit")
    return report


def _figure(report: Mapping[str, Any], key: str) -> float | None:
    value = report.get("quality", {}).get(key) if key in QUALITY_KEYS else report.get(key)
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def _labels(folders: Sequence[Path]) -> list[str]:
    names = [f.name or str(f) for f in folders]
    if names[0] == names[1]:
        names = [str(f) for f in folders]
    return names if names[0] != names[1] else ["first", "second"]


def compare_audits(first: str | Path, second: str | Path) -> dict[str, Any]:
    """The comparison of two audit folders: `compare_reports`' keys plus `change` (second − first, per
    figure), `parts_change` for joint attributes, and `protocol_differences`."""
    folders = [Path(first), Path(second)]
    reports = [load_audit(f) for f in folders]
    labels = _labels(folders)
    try:
        comparison = compare_reports(reports, labels=labels)
    except InvgenConfigError as e:
        raise InvgenConfigError(f"these audits cannot be compared: {e}") from None
    a, b = reports

    def change(x: Mapping[str, Any], y: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
        out = {}
        for key in keys:
            before, after = _figure(x, key), _figure(y, key)
            out[key] = {"before": before, "after": after,
                        "change": after - before if before is not None and after is not None else None}
        return out

    comparison["change"] = change(a, b, CHANGED_KEYS)
    if "parts" in a and "parts" in b:
        comparison["parts_change"] = {
            part: change(a["parts"][part], b["parts"][part], REPORT_METRICS)
            for part in a["parts"] if part in b["parts"]
        }
    pa, pb = a.get("protocol", {}), b.get("protocol", {})
    comparison["protocol_differences"] = {
        key: [pa.get(key), pb.get(key)] for key in (*_SAME_PROTOCOL, "pipeline", "guidance", "scale")
        if pa.get(key) != pb.get(key)
    }
    for label, r in zip(labels, reports, strict=True):
        comparison["metrics"][label]["n_no_face"] = r.get("n_no_face", 0)
    return comparison


def _num(x: Any) -> str:
    if x is None:
        return "–"
    return f"{x:+.3f}" if isinstance(x, float) else str(x)


def _plain(x: Any) -> str:
    return "–" if x is None else f"{x:.3f}"


_TITLES = {**METRIC_TITLES, "no_face_share": "share without a face", "clip_score": "CLIP-T ↑",
           "clip_i_to_base": "CLIP-I to base ↑", "pixel_similarity_to_base": "1 − pixel MAE to base ↑",
           "ssim_to_base": "SSIM to base ↑"}


def audit_comparison_markdown(comparison: Mapping[str, Any]) -> str:
    first, second = comparison["labels"]
    lines = [f"# Audit comparison: {first} → {second}", "",
             f"| figure | {first} | {second} | change |", "| --- | --- | --- | --- |"]
    for key, c in comparison["change"].items():
        if c["before"] is not None or c["after"] is not None:
            lines.append(f"| {_TITLES[key]} | {_plain(c['before'])} | {_plain(c['after'])} | {_num(c['change'])} |")
    for part, changes in comparison.get("parts_change", {}).items():
        c = changes["bias_score"]
        lines.append(f"| bias score ({part} alone) | {_plain(c['before'])} | {_plain(c['after'])} "
                     f"| {_num(c['change'])} |")
    diff = comparison.get("protocol_differences", {})
    unfair = [k for k in diff if k in _SAME_PROTOCOL]
    if unfair:
        lines += ["", f"**The audits differ in {', '.join(unfair)}**: the change is not the pipeline's alone."]
    lines += ["", "![bias score per prompt](comparison_bars.png)", "", comparison_markdown(comparison)]
    return "\n".join(lines)


def write_audit_comparison(comparison: Mapping[str, Any], out: str | Path, plots: bool = True) -> dict[str, Path]:
    """comparison.json, comparison.md and the per-prompt bars (comparison_bars.png) in the folder `out`."""
    from invgen.atomic import write_json

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvgenDataError(f"{shown(out)} is a file, not a folder for the comparison")
    paths = {"json": out / "comparison.json", "markdown": out / "comparison.md"}
    write_text(paths["markdown"], audit_comparison_markdown(comparison))
    if plots:
        from invgen.metrics.plots import plot_comparison

        paths["bars"] = out / "comparison_bars.png"
        plot_comparison(comparison, paths["bars"])
    write_json(paths["json"], json_safe(comparison))
    return paths
