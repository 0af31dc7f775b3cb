"""The figures of an audit, from its per-image readings: no file is read or written here.

The bias figures are `invgen.metrics.report.attribute_figures` (the code behind `invgen metrics`), fed with
the attribute value of every image and `UNREADABLE` for an image without a face, so they equal what
`invgen metrics` reports on the same images (on the face crops, when faces are detected). On top of them an
audit reports images without a face apart (`no_face`, per prompt and overall; they are excluded from every
count), the spread of each figure over prompts (`std`), each part of a joint attribute alone (`parts`), and the
quality scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import product
from typing import Any

import numpy as np

from invgen.audit.plan import VALUE_SEPARATOR
from invgen.metrics.fairness import UNREADABLE
from invgen.metrics.report import REPORT_METRICS, attribute_figures

REPORT_FORMAT = "invgen-audit-report/1"
QUALITY_KEYS = ("clip_score", "clip_i_to_base", "pixel_similarity_to_base", "ssim_to_base")
"""Per-image quality scores, averaged per prompt and overall (`clip_score` is CLIP-T, as `invgen metrics`)."""


def joint_values(parts: dict[str, np.ndarray], names: dict[str, Sequence[str]]) -> tuple[np.ndarray, list[str]]:
    """Joint value indices (row-major over the parts, in their order) and names ("male|White")."""
    keys = list(parts)
    sizes = [len(names[k]) for k in keys]
    joint = np.zeros(len(parts[keys[0]]), dtype=np.int64)
    unreadable = np.zeros(len(joint), dtype=bool)
    for key, size in zip(keys, sizes, strict=True):
        joint = joint * size + np.maximum(parts[key], 0)
        unreadable |= parts[key] == UNREADABLE
    labels = [VALUE_SEPARATOR.join(combo) for combo in product(*(names[k] for k in keys))]
    return np.where(unreadable, UNREADABLE, joint), labels


def _spread(per_prompt: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Standard deviation of each figure over the prompts that have it (None with fewer than two)."""
    out: dict[str, float | None] = {}
    for key in REPORT_METRICS:
        values = [e.get(key) for e in per_prompt.values()]
        finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
        out[key] = float(finite.std(ddof=1)) if len(finite) >= 2 else None
    return out


def bias_figures(values: np.ndarray, names: Sequence[str], prompts: Sequence[str], found: np.ndarray,
                 plan: Any) -> dict[str, Any]:
    """`attribute_figures` with images without a face counted apart, and the spread over prompts."""
    fig = attribute_figures(values, prompts, names, None, plan.n_boot, plan.confidence, plan.bootstrap_seed)
    no_face = dict.fromkeys(fig["per_prompt"], 0)
    images = dict.fromkeys(fig["per_prompt"], 0)
    for prompt, has_face in zip(prompts, found, strict=True):
        images[prompt] += 1
        no_face[prompt] += int(not has_face)
    for prompt, entry in fig["per_prompt"].items():
        entry["n_images"] = images[prompt]
        entry["no_face"] = no_face[prompt]
        entry["unreadable"] -= no_face[prompt]  # attribute_figures counted them as unreadable
    n_no_face = int((~found).sum())
    fig["n_no_face"] = n_no_face
    fig["n_unreadable"] -= n_no_face
    fig["n_measured"] = int(sum(fig["pooled"]["counts"].values()))
    fig["no_face_share"] = n_no_face / fig["n_images"]
    fig["std"] = _spread(fig["per_prompt"])
    return fig


def _mean(x: np.ndarray) -> float | None:
    return float(x.mean()) if len(x) else None


def quality_figures(pred: Any) -> dict[str, Any] | None:
    """Mean of each per-image quality score overall and per prompt; None when there is none."""
    scores = {"clip_score": pred.clip_score, "clip_i_to_base": pred.clip_i,
              "pixel_similarity_to_base": pred.pixel, "ssim_to_base": pred.ssim}
    scores = {k: v for k, v in scores.items() if v is not None}
    if not scores:
        return None
    prompts = np.asarray(pred.prompts, dtype=object)
    section: dict[str, Any] = {key: _mean(v) for key, v in scores.items()}
    section["per_prompt"] = {
        p: {key: _mean(v[prompts == p]) for key, v in scores.items()} for p in dict.fromkeys(pred.prompts)
    }
    return section


def bias_section(pred: Any, plan: Any) -> dict[str, Any]:
    """The bias figures of one image set's readings: the attribute (joint or single) and, if joint, each part."""
    names = {p.name: list(p.values) for p in plan.parts}
    if plan.joint:
        values, labels = joint_values(pred.parts, names)
    else:
        (name,) = names
        values, labels = pred.parts[name], names[name]
    section = bias_figures(values, labels, pred.prompts, pred.found, plan)
    if plan.joint:
        section["parts"] = {
            name: bias_figures(pred.parts[name], names[name], pred.prompts, pred.found, plan) for name in names
        }
    return section


def audit_report(pred: Any, plan: Any, protocol: dict[str, Any], samples: str, base: Any = None,
                 base_samples: str | None = None) -> dict[str, Any]:
    """The whole report: protocol, bias figures (joint and per part), no-face counts and quality; with the
    readings of the base model's images (`base`, an audit with an adapter), their bias figures under `base`."""
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "samples": samples,
        "attribute": plan.attribute,
        "classifier": plan.classifiers[0] if not plan.joint else
        ", ".join(f"{p}={c}" for p, c in zip(plan.part_names, plan.classifiers, strict=True)),
        "detector": plan.detector,
        "image_size": list(pred.image_size),
    }
    report.update(bias_section(pred, plan))
    quality = quality_figures(pred)
    if quality is not None:
        per_prompt = quality.pop("per_prompt")
        for prompt, entry in report["per_prompt"].items():
            entry.update(per_prompt[prompt])
        report["quality"] = quality
    if base is not None:
        report["base"] = {"samples": base_samples, **bias_section(base, plan)}
    report["protocol"] = protocol
    return report
