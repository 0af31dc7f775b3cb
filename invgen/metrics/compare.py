"""Several bias reports side by side: `compare_reports` (the first is the baseline the ratios are taken
against) and `load_report`, which refuses in one sentence a JSON file that is not a report."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from invgen.errors import InvgenConfigError, InvgenDataError, shown
from invgen.metrics.report import REPORT_METRICS
from invgen.metrics.results import BiasReport, Comparison


def load_report(path: str | os.PathLike) -> BiasReport:
    import json

    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    if not path.is_file():
        raise InvgenDataError(f"no report at {shown(path)}")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InvgenDataError(f"{shown(path)}: not a bias report (not UTF-8 text)") from None
    except json.JSONDecodeError as e:
        raise InvgenDataError(f"{shown(path)}: not valid JSON ({e.msg})") from None
    _check_report(report, shown(path))
    return BiasReport.from_dict(report)


# What `compare_reports` reads from each report, with the JSON type it must have.
_REPORT_KEYS = {"samples": str, "attribute": str, "values": list, "n_images": int, "per_prompt": dict}


def _check_report(report: Any, where: str) -> None:
    """Refuse, in one sentence, a JSON file that is not a report written by `write_report`."""
    if not isinstance(report, dict):
        raise InvgenDataError(f"{where}: not a bias report (a JSON {type(report).__name__}, not an object)")
    missing = [k for k in _REPORT_KEYS if k not in report]
    if missing:
        raise InvgenDataError(
            f"{where}: not a bias report (no {', '.join(repr(k) for k in missing)}; "
            "give a report.json written by `invgen metrics` or an image folder)"
        )
    for key, kind in _REPORT_KEYS.items():
        if not isinstance(report[key], kind) or isinstance(report[key], bool):
            raise InvgenDataError(f"{where}: not a bias report ('{key}' is not a JSON {kind.__name__})")
    if not all(isinstance(v, str) for v in report["values"]):
        raise InvgenDataError(f"{where}: not a bias report ('values' must list the attribute's values as text)")
    for prompt, entry in report["per_prompt"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("counts"), dict) or "n" not in entry:
            raise InvgenDataError(f"{where}: not a bias report (per_prompt entry {prompt!r} has no counts)")


def _label(report: Mapping[str, Any], i: int, used: set[str]) -> str:
    base = Path(str(report.get("samples", f"set{i}"))).name or f"set{i}"
    label, n = base, 2
    while label in used:
        label, n = f"{base}#{n}", n + 1
    used.add(label)
    return label


def compare_reports(
    reports: Sequence[Mapping[str, Any] | str | os.PathLike], labels: Sequence[str] | None = None
) -> Comparison:
    """Side-by-side figures of several reports; the first is the baseline the ratios are taken against.

    Reports are `BiasReport`s (or mappings with their keys) or paths of report.json files (or their folders). They must
    measure the same attribute with the same values, or the comparison would be meaningless.
    """
    loaded = [r if isinstance(r, BiasReport) else BiasReport.from_dict(r) if isinstance(r, Mapping) else load_report(r)
              for r in reports]
    if len(loaded) < 2:
        raise InvgenConfigError("a comparison needs at least two reports")
    first = loaded[0]
    for r in loaded[1:]:
        if r.attribute != first.attribute or list(r.values) != list(first.values):
            raise InvgenConfigError(
                f"cannot compare {r.samples} ({r.attribute}: {', '.join(r.values)}) with "
                f"{first.samples} ({first.attribute}: {', '.join(first.values)})"
            )
    used: set[str] = set()
    labels = list(labels) if labels else [_label(r, i, used) for i, r in enumerate(loaded)]
    if len(labels) != len(loaded):
        raise InvgenConfigError(f"{len(labels)} labels for {len(loaded)} reports")

    metrics: dict[str, dict[str, Any]] = {}
    for label, r in zip(labels, loaded, strict=True):
        entry = {key: r.get(key) for key in REPORT_METRICS}
        entry.update(
            n_images=r["n_images"], n_unreadable=r.get("n_unreadable", 0), ci=r.get("ci", {}),
            at_target=r.get("at_target", {}), samples=r["samples"],
        )
        for section in ("t2i", "quality"):
            if section in r:
                entry[section] = {k: v for k, v in r[section].items() if not isinstance(v, Mapping)}
        metrics[label] = entry
    base = metrics[labels[0]]
    ratios = {}
    for label in labels:
        ratios[label] = {}
        for key in REPORT_METRICS:
            a, b = metrics[label].get(key), base.get(key)
            ok = a is not None and b is not None and math.isfinite(a) and math.isfinite(b) and b != 0
            ratios[label][key] = a / b if ok else None
    per_prompt: dict[str, dict[str, Any]] = {}
    for label, r in zip(labels, loaded, strict=True):
        for prompt, e in r["per_prompt"].items():
            per_prompt.setdefault(prompt, {})[label] = {key: e.get(key) for key in REPORT_METRICS} | {
                "n": e["n"],
                "counts": e["counts"],
                "unreadable": e.get("unreadable", 0),
            }
    return Comparison(attribute=first.attribute, values=list(first.values), labels=labels, baseline=labels[0],
                      confidence=first.confidence, metrics=metrics, ratio_to_baseline=ratios, per_prompt=per_prompt,
                      reports=loaded)


__all__ = ["compare_reports", "load_report"]
