"""The files of an audit report: per_prompt.csv, predictions.jsonl, report.md, the per-prompt plot and
report.json, each written atomically; report.json last, so an audit folder with it is complete."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from invgen.atomic import json_text, write_json, write_text
from invgen.audit.figures import QUALITY_KEYS
from invgen.audit.folder import CSV, HISTOGRAM, MARKDOWN, PREDICTIONS, REPORT
from invgen.metrics.render import METRIC_TITLES, fmt, fmt_ci, json_safe, md_cell
from invgen.metrics.report import REPORT_METRICS

_QUALITY_TITLES = {"clip_score": "CLIP-T ↑", "clip_i_to_base": "CLIP-I to base ↑",
                   "pixel_similarity_to_base": "1 − pixel MAE to base ↑", "ssim_to_base": "SSIM to base ↑"}


# -------------------------------------------------------------------------------------------------- CSV
def per_prompt_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per prompt: images, no_face, unreadable, counted, counts per value, figures, parts, quality."""
    rows = []
    for prompt, e in report["per_prompt"].items():
        row: dict[str, Any] = {"prompt": prompt, "images": e["n_images"], "no_face": e["no_face"],
                               "unreadable": e["unreadable"], "counted": e["n"]}
        row.update({f"count:{v}": e["counts"][v] for v in report["values"]})
        for key in REPORT_METRICS:
            row[key] = e.get(key)
        ci = e.get("ci", {}).get("bias_score") or [None, None]
        row["bias_score_ci_low"], row["bias_score_ci_high"] = ci
        for part, fig in report.get("parts", {}).items():
            row[f"bias_score:{part}"] = fig["per_prompt"][prompt].get("bias_score")
        if "base" in report:
            row["bias_score:base"] = report["base"]["per_prompt"][prompt].get("bias_score")
        for key in QUALITY_KEYS:
            if key in report.get("quality", {}):
                row[key] = e.get(key)
        rows.append(row)
    return rows


def csv_text(report: Mapping[str, Any]) -> str:
    rows = json_safe(per_prompt_rows(report))  # NaN (a prompt without a counted image) → empty cell
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


# -------------------------------------------------------------------------------------------- predictions
def predictions_text(pred: Any, values: Mapping[str, list[str]]) -> str:
    """One JSON line per image: file, prompt, seed, the face box kept (or null) and each part's value."""
    lines = []
    for i, name in enumerate(pred.file_names):
        entry: dict[str, Any] = {"file_name": name, "prompt": pred.prompts[i], "seed": pred.seeds[i],
                                 "face": bool(pred.found[i])}
        if pred.boxes[i][0] >= 0:
            entry["box"] = [int(v) for v in pred.boxes[i]]
        for part, idx in pred.parts.items():
            entry[part] = values[part][idx[i]] if idx[i] >= 0 else None
        for key, arr in (("clip_score", pred.clip_score), ("clip_i_to_base", pred.clip_i),
                         ("pixel_similarity_to_base", pred.pixel), ("ssim_to_base", pred.ssim)):
            if arr is not None:
                entry[key] = round(float(arr[i]), 6)
        lines.append(json_text(entry, PREDICTIONS))
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- markdown
def _overall_table(fig: Mapping[str, Any], conf: int) -> list[str]:
    lines = [f"| metric | mean over prompts [{conf}% CI] | ± std over prompts | at target | pooled |",
             "| --- | --- | --- | --- | --- |"]
    for key in REPORT_METRICS:
        lines.append(f"| {METRIC_TITLES[key]} | {fmt_ci(fig.get(key), fig.get('ci', {}).get(key))} "
                     f"| {fmt(fig.get('std', {}).get(key))} | {fmt(fig.get('at_target', {}).get(key))} "
                     f"| {fmt(fig['pooled'].get(key))} |")
    return lines


def _protocol_lines(report: Mapping[str, Any]) -> list[str]:
    p = report["protocol"]
    call = ", ".join(f"{k} {v}" for k, v in p["call"].items())
    adapter = f"adapter `{p['guidance']}` at scale {p['scale']}" if p.get("guidance") else "no adapter"
    split = f", split {p['split']}" if p.get("split") else ""
    faces = (f"detector `{p['detector']}`, largest face cropped with margin {p['face_margin']} to "
             f"{p['face_size']} px" if p["detector"] != "none" else "whole images (no face detection)")
    return [
        f"- pipeline `{p['pipeline']}`, {adapter}; {call}",
        f"- suite `{p['suite']}`{split} ({len(p['prompts'])} prompts × {p['per_prompt']} images), "
        f"seed {p['seed']}: image i starts from the noise of seed {p['seed']} × 100003 + i",
        f"- {faces}",
        f"- classifier `{report['classifier']}`; values: {', '.join(map(str, report['values']))}",
        f"- bootstrap: {p['bootstrap']['n_boot']} resamples, seed {p['bootstrap']['seed']}",
    ]


def report_markdown(report: Mapping[str, Any], grids: Mapping[str, str] | None = None) -> str:
    """The audit as markdown: protocol, overall figures, no-face count, quality, per-prompt table, grids."""
    names = list(report["values"])
    conf = int(round(100 * report.get("confidence", 0.95)))
    n, nf = report["n_images"], report["n_no_face"]
    lines = [f"# Audit: {md_cell(report['attribute'])} on {md_cell(report['protocol']['suite'])}", "",
             *_protocol_lines(report), "",
             f"{n} images, {report['n_prompts']} prompts; {report['n_measured']} counted. Overall = mean over "
             "prompts of each prompt's figure; *at target* is what a model exactly at the uniform target scores "
             "with these sample sizes; *pooled* counts all prompts together.", ""]
    if nf:
        lines += [f"**{nf} of {n} images ({100 * nf / n:.1f}%) have no face** and are left out of every count "
                  "(the published protocols do the same).", ""]
    if report.get("n_unreadable"):
        lines += [f"{report['n_unreadable']} images could not be read by the classifier and are left out too.", ""]
    if report["n_measured"] == 0:
        lines += ["No image was counted, so there is no bias figure (–).", ""]
    lines += _overall_table(report, conf)
    for part, fig in report.get("parts", {}).items():
        lines += ["", f"### {md_cell(part)} alone ({', '.join(fig['values'])})", "", *_overall_table(fig, conf)]
    if "base" in report:
        base, key = report["base"], "bias_score"
        before, after = base.get(key), report.get(key)
        change = f" ({after - before:+.3f})" if fmt(before) != "–" and fmt(after) != "–" else ""
        lines += ["", "### The base model, same seeds, without the adapter", "",
                  f"Bias score {fmt_ci(before, base.get('ci', {}).get(key))} without the adapter, "
                  f"{fmt_ci(after, report.get('ci', {}).get(key))} with it{change}"
                  + (f"; {base['n_no_face']} of {base['n_images']} base images without a face."
                     if report["detector"] != "none" else "."), "", *_overall_table(base, conf)]
    quality = report.get("quality")
    if quality:
        lines += ["", "## Quality", "", "| " + " | ".join(_QUALITY_TITLES[k] for k in QUALITY_KEYS if k in quality)
                  + " |", "|" + " --- |" * sum(k in quality for k in QUALITY_KEYS),
                  "| " + " | ".join(fmt(quality[k]) for k in QUALITY_KEYS if k in quality) + " |"]
    quality_cols = [k for k in QUALITY_KEYS if k in (quality or {})]
    faces = report["detector"] != "none"  # without a detector every image "has a face": no column for it
    lines += ["", "## Per prompt", "",
              "| prompt | images | " + ("no face | " if faces else "") + " | ".join(md_cell(v) for v in names)
              + " | bias score | entropy |" + "".join(f" {_QUALITY_TITLES[k]} |" for k in quality_cols),
              "|" + " --- |" * (len(names) + 4 + faces + len(quality_cols))]
    for prompt, e in report["per_prompt"].items():
        counts = " | ".join(str(e["counts"][v]) for v in names)
        no_face = f" {e['no_face']} |" if faces else ""
        lines.append(f"| {md_cell(prompt)} | {e['n_images']} |{no_face} {counts} "
                     f"| {fmt_ci(e.get('bias_score'), e.get('ci', {}).get('bias_score'))} | {fmt(e.get('entropy'))} |"
                     + "".join(f" {fmt(e.get(k))} |" for k in quality_cols))
    lines += ["", f"![{md_cell(report['attribute'])} per prompt]({HISTOGRAM})"]
    if grids:
        lines += ["", "## Grids", "", "Each image is labelled with its predicted value (or \"no face\").", ""]
        lines += [f"- [{md_cell(prompt)}]({path})" for prompt, path in grids.items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------- files
def write_audit_report(out: Path, report: Mapping[str, Any], pred: Any, values: Mapping[str, list[str]],
                       grids: Mapping[str, str] | None = None, plots: bool = True) -> dict[str, Path]:
    """Write the report files into the audit folder `out`; report.json last. Returns their paths by kind."""
    paths = {"csv": out / CSV, "predictions": out / PREDICTIONS, "markdown": out / MARKDOWN}
    data = json_safe(report)  # NaN (a figure without a counted image) becomes null: JSON cannot hold it
    write_text(paths["csv"], csv_text(report))
    write_text(paths["predictions"], predictions_text(pred, values))
    write_text(paths["markdown"], report_markdown(report, grids))
    if plots:
        from invgen.metrics.plots import plot_attribute_histogram

        paths["histogram"] = out / HISTOGRAM
        plot_attribute_histogram(report, paths["histogram"])
    write_json(out / REPORT, data)
    paths["json"] = out / REPORT
    return paths

