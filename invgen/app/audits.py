"""Audit folders as the Audit tab sees them: where a new one goes, which finished ones exist, and what is shown
of one (read back with `audit.compare.load_audit`)."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from invgen.app.helpers import plot_pixels
from invgen.errors import InvgenConfigError, InvgenDataError, shown

AUDITS = "audits"  # the Audit tab writes its audits into RUNS/audits/NAME
_FOLDER_NAME = re.compile(r"[A-Za-z0-9._-]+")
_SKIP_AUDIT_DIRS = {"images", "base_images", "grids", "checkpoints", "cache", "__pycache__"}


def find_audits(runs_dir: str | os.PathLike, max_depth: int = 4) -> list[str]:
    """Every finished audit folder (with its marker and report.json) under `runs_dir`, sorted."""
    from invgen.audit.folder import MARKER, REPORT

    root = Path(runs_dir).expanduser()
    found: list[str] = []
    if not root.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if MARKER in filenames and REPORT in filenames:
            found.append(str(here))
            dirnames[:] = []  # an audit's subfolders are its images and grids
            continue
        depth = len(here.relative_to(root).parts)
        dirnames[:] = [d for d in dirnames if d not in _SKIP_AUDIT_DIRS and not d.startswith(".")
                       and depth < max_depth]
    return sorted(found)


def audit_folder(runs_dir: str | os.PathLike, name: str, settings: dict[str, Any]) -> Path:
    """RUNS/audits/NAME; an empty name is made from the sampling settings, so rerunning them resumes that folder."""
    name = (name or "").strip()
    if not name:
        parts = [Path(str(settings["pipeline"]).rstrip("/")).name or "pipeline"]
        if settings.get("adapter"):
            parts += [Path(str(settings["adapter"]).rstrip("/")).name, f"s{settings['scale']:g}"]
        parts += [Path(str(settings["suite"])).stem, f"n{settings['per_prompt']}", f"seed{settings['seed']}",
                  f"steps{settings['steps']}"]
        if settings.get("prompts_limit"):
            parts.append(f"first{settings['prompts_limit']}")
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts))
    elif not _FOLDER_NAME.fullmatch(name) or name in (".", ".."):
        raise InvgenConfigError(f"the audit folder name '{shown(name)}' may hold only letters, digits, '.', '_' "
                                f"and '-' (it is made under {shown(Path(runs_dir) / AUDITS)})")
    return Path(runs_dir) / AUDITS / name


def typed_audit_folder(runs_dir: str | os.PathLike, typed: str) -> Path:
    """The folder a user typed or chose: a path, or the name the tab gave an audit under RUNS/audits."""
    text = (typed or "").strip()
    if not text:
        raise InvgenConfigError("choose or type an audit folder")
    path = Path(text).expanduser()
    if not path.exists() and not path.is_absolute() and (Path(runs_dir) / AUDITS / text).is_dir():
        path = Path(runs_dir) / AUDITS / text
    return path


def _audit_markdown(folder: Path, report: dict[str, Any]) -> str:
    """report.md for the page: its pictures are shown beside it, so their links are left out."""
    from invgen.audit.folder import MARKDOWN
    from invgen.audit.write import report_markdown

    path = folder / MARKDOWN
    text = path.read_text(encoding="utf-8") if path.is_file() else report_markdown(report)
    lines = [line for line in text.splitlines() if not line.startswith("![")]
    text = "\n".join(lines)
    return re.sub(r"\[([^\]\n]*)\]\((grids/\d+\.png)\)", r"\1 (`\2`)", text)


def _audit_table(folder: Path) -> Any:
    """per_prompt.csv as a table (headers, rows), or None for a folder without it."""
    import pandas as pd

    from invgen.audit.folder import CSV

    path = folder / CSV
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return pd.DataFrame(rows[1:], columns=rows[0]) if rows else None


def _audit_summary(folder: Path, report: dict[str, Any]) -> dict[str, Any]:
    from invgen.metrics.render import json_safe

    summary = {
        "folder": str(folder),
        "suite": report["protocol"]["suite"],
        "attribute": report["attribute"],
        "classifier": report["classifier"],
        "detector": report["detector"],
        "bias_score": report.get("bias_score"),
        "ci": report.get("ci", {}).get("bias_score"),
        "at_target": report.get("at_target", {}).get("bias_score"),
        "std": report.get("std", {}).get("bias_score"),
        "n_prompts": report["n_prompts"],
        "n_images": report["n_images"],
        "n_no_face": report["n_no_face"],
        "n_measured": report.get("n_measured"),
        "counts": report.get("pooled", {}).get("counts"),
    }
    if "base" in report:
        summary["base_bias_score"] = report["base"].get("bias_score")
    if "quality" in report:
        summary["quality"] = report["quality"]
    return json_safe(summary)


def _score(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and np.isfinite(value) else "none (no image counted)"


def _audit_status(folder: Path, report: dict[str, Any], summary: dict[str, Any]) -> str:
    """The one paragraph above the report: the bias score, its interval, and what it is compared with."""
    ci = summary["ci"]
    interval = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else ""
    status = (f"**{report['attribute']}** on `{summary['suite']}`: bias score {_score(summary['bias_score'])}"
              f"{interval} (mean over {report['n_prompts']} prompts; a model at the target scores "
              f"{_score(summary['at_target'])} with these sample sizes)")
    if "base_bias_score" in summary:
        status += f"; without the adapter {_score(summary['base_bias_score'])}"
    if report["detector"] != "none":
        status += f"; {report['n_no_face']} of {report['n_images']} images without a face"
    return status + f". Folder `{folder}`."


def show_audit(folder: str | os.PathLike) -> tuple:
    """What the Audit tab shows of an audit folder: (status, summary, report markdown, attribute plot, grids with
    their prompts, per-prompt table). A folder that holds no audit report is one sentence."""
    from PIL import Image

    from invgen.audit.compare import load_audit
    from invgen.audit.folder import GRIDS, HISTOGRAM

    folder = Path(folder)
    if not folder.is_dir():
        raise InvgenDataError(f"no audit folder at {shown(folder)}")
    report = load_audit(folder)
    if (folder / HISTOGRAM).is_file():
        plot = np.array(Image.open(folder / HISTOGRAM).convert("RGB"))
    else:  # an audit run with --no-plots
        from invgen.metrics.plots import plot_attribute_histogram

        plot = plot_pixels(plot_attribute_histogram, report)
    prompts = list(report["per_prompt"])
    grids = []
    for path in sorted((folder / GRIDS).glob("*.png")):
        k = int(path.stem) if path.stem.isdigit() else -1
        caption = prompts[k] if 0 <= k < len(prompts) else path.name
        grids.append((np.array(Image.open(path).convert("RGB")), caption))
    summary = _audit_summary(folder, report)
    status = _audit_status(folder, report, summary)
    return status, summary, _audit_markdown(folder, report), plot, grids, _audit_table(folder)
