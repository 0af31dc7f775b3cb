"""The audit folder: what it holds, and which folders an audit may write into (or resume).

An audit folder is marked by `.invgen-audit.json`, which records the sampling settings (pipeline, adapter,
prompts, seeds, pipeline call). A run into a folder with the same sampling settings resumes it (the sampler
skips the images already there; detection, classification and the report are recomputed, deterministically);
a folder of another audit, or one holding files an audit did not write, is refused before anything is written.
Analysis settings (attribute, classifier, detector) may change between runs: the report is replaced.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from invgen.errors import InvgenDataError, shown

MARKER = ".invgen-audit.json"
FORMAT = "invgen-audit/1"
IMAGES, BASE_IMAGES, GRIDS = "images", "base_images", "grids"
REPORT, MARKDOWN, CSV, PREDICTIONS = "report.json", "report.md", "per_prompt.csv", "predictions.jsonl"
HISTOGRAM = "report_attributes.png"
COMPARISON = "comparison.json"
OWNED = {MARKER, IMAGES, BASE_IMAGES, GRIDS, REPORT, MARKDOWN, CSV, PREDICTIONS, HISTOGRAM, COMPARISON,
         "comparison.md", "comparison_bars.png"}
_OWN_TEMP = re.compile(r"^\..+\.(tmp|old)$")  # invgen.atomic's temporaries, left by a killed run


def read_marker(out: Path) -> dict[str, Any] | None:
    """The marker of the audit folder `out`, or None when there is none; a marker invgen did not write is refused."""
    path = out / MARKER
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        marker = None
    if not isinstance(marker, dict) or marker.get("format") != FORMAT or not isinstance(marker.get("sampling"), dict):
        raise InvgenDataError(f"{shown(path)} is not an audit marker invgen wrote; choose another --out")
    return marker


def check_folder(out: Path) -> dict[str, Any] | None:
    """Refuse an `out` that is a file or a folder of someone else's files; return its marker (None if new)."""
    if out.exists() and not out.is_dir():
        raise InvgenDataError(f"{shown(out)} is a file, not a folder for the audit; choose another --out")
    if not out.is_dir():
        return None
    marker = read_marker(out)
    if marker is None:
        foreign = sorted(p.name for p in out.iterdir() if not _OWN_TEMP.match(p.name))
        if foreign:
            raise InvgenDataError(f"{shown(out)} already holds files that invgen audit did not write "
                                  f"({shown(foreign[0])}); choose an empty or new --out")
    return marker


def _difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    for key in new:
        if old.get(key) != new.get(key):
            if key == "prompts":
                return "other prompts"
            return f"{key} {old.get(key)!r} there, {new.get(key)!r} now"
    return "other settings"


def check_resumable(out: Path, sampling: dict[str, Any]) -> None:
    """Refuse an audit folder whose images were sampled with other settings (a rerun must match to resume)."""
    marker = check_folder(out)
    if marker is not None and marker["sampling"] != sampling:
        raise InvgenDataError(f"{shown(out)} holds another audit ({_difference(marker['sampling'], sampling)}); "
                              "choose another --out")


def claim_folder(out: Path, sampling: dict[str, Any]) -> None:
    """Check `out` once more and mark it as this audit's folder (written atomically, once)."""
    from invgen.atomic import write_json

    check_resumable(out, sampling)
    if read_marker(out) is None:
        write_json(out / MARKER, {"format": FORMAT, "sampling": sampling})
