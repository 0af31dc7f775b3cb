"""The bias report of an image set: attribute fairness per prompt and overall, with optional T2I-bias and
quality figures. Comparing reports is `invgen.metrics.compare`, writing them `invgen.metrics.render`.

`bias_report` reads the set once, classifies it in batches and leaves all arithmetic to numpy, so its
cost is reading the images (and the classifier, when it is a model).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from invgen.errors import InvgenConfigError, InvgenDataError, InvgenError, shown
from invgen.metrics.fairness import UNREADABLE, counts_by_prompt, fairness_metrics, fairness_summary
from invgen.metrics.results import BiasReport

REPORT_METRICS = ("bias_score", "fairness_discrepancy", "kl_uniform", "kl_target", "entropy", "delta")

# ------------------------------------------------------------------------------------------- inputs
def parse_target(target: Any, names: Sequence[str]) -> np.ndarray | None:
    """A target distribution p* from numbers, a mapping value → share, or text ("0.75,0.25",
    "red=0.75,green=0.25", percentages "75,25"). Shares must sum to 1 (or 100 for percentages)."""
    if target is None:
        return None
    k = len(names)
    if isinstance(target, str):
        parts = [p.strip() for p in target.replace(";", ",").replace("/", ",").split(",") if p.strip()]
        if parts and all("=" in p for p in parts):
            target = {p.split("=", 1)[0].strip(): p.split("=", 1)[1].strip() for p in parts}
        else:
            target = parts
    if isinstance(target, Mapping):
        unknown = [n for n in target if n not in names]
        if unknown:
            raise InvgenConfigError(
                f"the target names {', '.join(map(str, unknown))}, which are not values of the attribute "
                f"({', '.join(names)})"
            )
        target = [target.get(n, 0.0) for n in names]
    try:
        t = np.asarray([float(v) for v in target], dtype=np.float64)
    except (TypeError, ValueError):
        raise InvgenConfigError(f"the target must be numbers, got {target!r}") from None
    if len(t) != k:
        raise InvgenConfigError(
            f"the target has {len(t)} shares but the attribute has {k} values ({', '.join(names)})"
        )
    if np.isclose(t.sum(), 100.0) and k > 1:
        t = t / 100.0
    if not np.all(np.isfinite(t)) or (t <= 0).any() or not np.isclose(t.sum(), 1.0, atol=1e-6):
        raise InvgenConfigError(f"the target shares must be positive and sum to 1, got {t.tolist()}")
    return t / t.sum()


def _check_folder(root: Path) -> None:
    if not root.exists():
        raise InvgenDataError(f"{shown(root)}: no such image folder")
    if not root.is_dir():
        raise InvgenDataError(f"{shown(root)} is a file, not an image folder")
    if not any(root.iterdir()):
        raise InvgenDataError(f"{shown(root)} is an empty folder (expected images and a metadata.jsonl)")


def _classify(
    clf: Callable[[np.ndarray], np.ndarray], images: np.ndarray, k: int, batch_size: int
) -> np.ndarray:
    out = [
        np.asarray(clf(images[i : i + batch_size]), dtype=np.int64) for i in range(0, len(images), batch_size)
    ]
    values = np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
    if values.shape != (len(images),) or (len(values) and (values.min() < UNREADABLE or values.max() >= k)):
        raise InvgenError(
            f"the classifier returned {values.shape} values outside 0..{k - 1} for {len(images)} images"
        )
    return values


def _metadata_agreement(
    records: Sequence[Any], attribute: str, names: list[str], values: np.ndarray
) -> float | None:
    """Share of images whose classified value equals the one in metadata.jsonl, when every record has one."""
    truth = [r.attribute(attribute, default=None) for r in records]
    if any(t is None for t in truth):
        return None
    index = {n: i for i, n in enumerate(names)}
    known = np.array([index.get(str(t), -1) for t in truth])
    read = values != UNREADABLE
    if (known < 0).any() or not read.any():
        return None
    return float((known[read] == values[read]).mean())


# ------------------------------------------------------------------------------------------- report
def attribute_figures(
    values: Sequence[int] | np.ndarray,
    prompts: Sequence[str],
    names: Sequence[str],
    target: Any = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """The fairness part of a report from attribute indices (one per image) and prompts; no I/O.

    Overall figures are means over prompts, with bootstrap intervals (`ci`), the floor a model exactly at
    the target reaches with the same sample sizes (`at_target`), and the pooled counts of all prompts.
    Images the classifier could not read (`UNREADABLE`) are counted (`n_unreadable`, and `unreadable` per
    prompt) and left out of every figure; a prompt with no readable image has no figures (null).
    """
    names = [str(n) for n in names]
    if len(names) < 2:
        raise InvgenConfigError(f"an attribute needs at least two values, got {names}")
    values = np.asarray(values, dtype=np.int64)
    if len(values) == 0:
        raise InvgenDataError("there are no images to measure")
    if len(values) != len(prompts):
        raise InvgenDataError(f"{len(values)} attribute values but {len(prompts)} prompts")
    p_star = parse_target(target, names)
    read = values != UNREADABLE
    counts = counts_by_prompt([p for p, r in zip(prompts, read, strict=True) if r], values[read], len(names))
    # Prompts whose images are all unreadable keep their row (of zeros), in the order prompts came.
    counts = {p: counts.get(p, np.zeros(len(names), dtype=np.int64)) for p in dict.fromkeys(prompts)}
    unreadable = dict.fromkeys(counts, 0)
    for p in np.asarray(prompts, dtype=object)[~read]:
        unreadable[p] += 1
    summary = fairness_summary(counts, p_star, n_boot=n_boot, confidence=confidence, seed=seed)
    pooled_counts = np.bincount(values[read], minlength=len(names))
    per_prompt = {}
    for prompt, entry in summary["per_prompt"].items():
        entry = dict(entry)
        entry["counts"] = dict(zip(names, entry["counts"], strict=True))
        entry["unreadable"] = unreadable[prompt]
        per_prompt[prompt] = entry
    uniform = np.full(len(names), 1 / len(names))
    return {
        "values": names,
        "target": (p_star if p_star is not None else uniform).tolist(),
        "n_images": len(values),
        "n_unreadable": int((~read).sum()),
        "n_prompts": len(counts),
        **{key: summary["overall"][key] for key in REPORT_METRICS},
        "ci": summary["ci"],
        "at_target": summary["at_target"],
        "confidence": confidence,
        "n_boot": n_boot,
        "pooled": {
            "counts": dict(zip(names, pooled_counts.tolist(), strict=True)),
            **fairness_metrics(pooled_counts, p_star),
        },
        "per_prompt": per_prompt,
    }


def _check_options(features: Any, reference: Any) -> None:
    if features is not None and reference is None:
        raise InvgenConfigError(
            "a feature space (--features) is used only against a reference set (--reference)"
        )


@dataclass
class ReportOptions:
    """How `images_report` / `bias_report` read the set and what they add to the fairness figures."""

    # reading the attribute (when the classifier is given as a spec)
    names: Sequence[str] | None = None
    prompts_file: str | os.PathLike | None = None
    clip_model: str | None = None
    device: str | None = None
    # quality: FID and precision/recall against `reference` in the space of `features`; CLIP score
    reference: str | os.PathLike | np.ndarray | None = None
    features: str | Callable[[np.ndarray], np.ndarray] | None = None
    clip: Any = None
    k: int = 3
    # Vice et al.'s T2I measures
    t2i: bool = False
    extractor: Callable[[np.ndarray], Any] | None = None
    captioner: str | os.PathLike | None = None
    judge: Callable[..., Any] | None = None
    synonyms: Mapping[str, Sequence[str]] | None = None
    # statistics
    n_boot: int = 1000
    confidence: float = 0.95
    seed: int = 0
    batch_size: int = 1024

    @classmethod
    def of(cls, options: ReportOptions | None, **overrides: Any) -> ReportOptions:
        """`options` (or the defaults) with the keywords given one by one, as the report functions took them."""
        return dataclasses.replace(options or cls(), **overrides)

    @property
    def extras_need_images(self) -> bool:
        return self.t2i or any(v is not None for v in (self.extractor, self.captioner, self.reference, self.clip))


def _check_options(opts: ReportOptions) -> None:
    if opts.features is not None and opts.reference is None:
        raise InvgenConfigError(
            "a feature space (--features) is used only against a reference set (--reference)"
        )


def _load(classifier: Any, attribute: str, opts: ReportOptions) -> tuple[str, Any]:
    from invgen.metrics.classifiers import load_classifier

    if isinstance(classifier, str):
        clf = load_classifier(
            classifier, attribute=attribute, names=opts.names, prompts_file=opts.prompts_file,
            model_name=opts.clip_model, device=opts.device,
        )
        return classifier, clf
    return getattr(classifier, "spec", type(classifier).__name__), classifier


def _attribute_values(clf: Any, spec: str, images: np.ndarray | None, prompts: Sequence[str],
                      records: Sequence[Any] | None, name: str, batch_size: int) -> np.ndarray:
    from invgen.metrics.classifiers.metadata import MetadataAttribute

    if isinstance(clf, MetadataAttribute):
        if records is None:
            raise InvgenConfigError("the 'metadata' classifier needs the records of metadata.jsonl")
        return clf.from_records(records, where=f"{name}/metadata.jsonl")
    if images is None:
        raise InvgenConfigError(f"the classifier '{spec}' needs the images")
    if len(images) != len(prompts):
        raise InvgenDataError(f"{len(images)} images but {len(prompts)} prompts")
    return _classify(clf, images, len(clf.names), batch_size)


def images_report(
    images: np.ndarray | None,
    prompts: Sequence[str],
    attribute: str,
    classifier: str | Callable[[np.ndarray], np.ndarray],
    target: Any = None,
    *,
    records: Sequence[Any] | None = None,
    name: str = "images",
    classifier_label: str | None = None,
    options: ReportOptions | None = None,
    **option_keywords: Any,
) -> BiasReport:
    """`bias_report` for images already in memory (uint8 (N, H, W, C)) with their prompts.

    `records` (ImageRecords) are needed only by the `metadata` classifier and for the agreement check;
    `classifier_label` names the classifier in the report (default: its spec, or its `spec` attribute or
    class name for an object). `options` (a `ReportOptions`) may also be given field by field as keywords
    (`reference=`, `t2i=True`, `n_boot=`...); `reference` may be an array of images or an image folder.
    """
    from invgen.metrics.classifiers.metadata import MetadataAttribute

    opts = ReportOptions.of(options, **option_keywords)
    t0 = time.perf_counter()
    _check_options(opts)
    spec, clf = _load(classifier, attribute, opts)
    spec = classifier_label or spec
    clip = _bundle(opts.clip, opts.clip_model, opts.device)  # once, for both the judge and the CLIP score
    values = _attribute_values(clf, spec, images, prompts, records, name, opts.batch_size)
    t_classify = time.perf_counter()
    report: dict[str, Any] = {"samples": name, "attribute": attribute, "classifier": spec}
    report.update(attribute_figures(values, prompts, clf.names, target, opts.n_boot, opts.confidence, opts.seed))
    if records is not None and not isinstance(clf, MetadataAttribute):
        agreement = _metadata_agreement(records, attribute, report["values"], values)
        if agreement is not None:
            report["metadata_agreement"] = agreement
    t_metrics = time.perf_counter()
    if opts.t2i or opts.extractor is not None or opts.captioner is not None:
        report["t2i"] = _t2i_section(images, prompts, clf, clip, opts)
    if opts.reference is not None or clip is not None:
        report["quality"] = _quality_section(images, prompts, clip, opts)
    report["timing"] = {
        "classify_s": t_classify - t0,
        "metrics_s": t_metrics - t_classify,
        "extra_s": time.perf_counter() - t_metrics,
    }
    return BiasReport.from_dict(report)


def bias_report(
    samples_dir: str | os.PathLike,
    attribute: str,
    classifier: str | Callable[[np.ndarray], np.ndarray],
    target: Any = None,
    options: ReportOptions | None = None,
    *,
    classifier_label: str | None = None,
    **option_keywords: Any,
) -> BiasReport:
    """Bias figures of the image set in `samples_dir` (imagefolder with metadata.jsonl), as a `BiasReport`.

    `classifier` is a spec resolved through `invgen.metrics.classifiers.CLASSIFIERS` (`clip:PATH`,
    `checkpoint:PATH`, `metadata`, `oracle:color` of the digits...) or an object with `names` and
    `__call__(images) → indices`; `target` is p* (default uniform; "0.75,0.25", a list or a mapping
    value → share). Keys: `bias_score`, `fairness_discrepancy`, `kl_uniform`, `kl_target`, `entropy`,
    `delta` (means over prompts), `ci`, `at_target`, `pooled`, `per_prompt`, `n_images`. Options are a
    `ReportOptions` or its fields as keywords: `t2i=True` (or an extractor/captioner) adds Vice et al.'s
    measures; `reference` with `features` adds FID and precision/recall; `clip` adds the CLIP score.
    """
    from invgen.data.imagefolder import read_imagefolder, read_metadata
    from invgen.metrics.classifiers.metadata import MetadataAttribute

    opts = ReportOptions.of(options, **option_keywords)
    t0 = time.perf_counter()
    root = Path(samples_dir)
    _check_folder(root)
    records = read_metadata(root)
    _check_options(opts)
    # Loaded here, before reading any image, so that a bad spec fails fast and `metadata` can skip images.
    spec, classifier_obj = _load(classifier, attribute, opts)
    needs_images = not isinstance(classifier_obj, MetadataAttribute) or opts.extras_need_images
    images = read_imagefolder(root).images if needs_images else None
    t_read = time.perf_counter()
    report = images_report(
        images, [r.prompt for r in records], attribute, classifier_obj, target,
        records=records, name=str(root), classifier_label=classifier_label or spec, options=opts,
    )
    report.timing = {"read_s": t_read - t0, **report.timing, "total_s": time.perf_counter() - t0}
    return report


def _bundle(clip: Any, clip_model: str | None, device: str | None):
    if clip is None or not isinstance(clip, (str, os.PathLike)):
        return clip
    from invgen.models.clip import load_open_clip

    return load_open_clip(clip, model_name=clip_model, device=device)


def _t2i_section(images: np.ndarray, prompts: Sequence[str], clf: Any, clip: Any, opts: ReportOptions) -> dict:
    from invgen.metrics.t2i import BlipCaptioner, ClipJudge, TokenFilter, t2i_bias

    extractor, judge = opts.extractor, opts.judge

    if extractor is None and opts.captioner is not None:
        extractor = BlipCaptioner(opts.captioner, device=opts.device)
    if extractor is None and hasattr(clf, "object_extractor"):
        extractor = clf.object_extractor()
    if extractor is None:
        raise InvgenConfigError(
            "the T2I measures need a captioner (--captioner PATH) or an object extractor; "
            "only the colored digits have a built-in one (with --classifier oracle:color)"
        )
    if judge is None and clip is not None:
        judge = ClipJudge(clip)
    section = t2i_bias(images, prompts, extractor, judge=judge, token_filter=TokenFilter(synonyms=opts.synonyms))
    if judge is None:
        section["M_G"] = None
        section["note"] = "M_G needs a judge (--clip PATH)"
    return section


def _quality_section(images: np.ndarray, prompts: Sequence[str], clip: Any, opts: ReportOptions) -> dict:
    from invgen.data.imagefolder import read_imagefolder
    from invgen.metrics.quality import FEATURES, clip_score, load_feature_extractor, quality_report

    reference, features, k = opts.reference, opts.features, opts.k
    section: dict[str, Any] = {}
    if reference is not None:
        if features is None:
            raise InvgenConfigError(
                f"FID and precision/recall need a feature extractor (--features {FEATURES.usages()})"
            )
        if isinstance(reference, np.ndarray):
            ref, ref_name = reference, f"{len(reference)} images in memory"
        else:
            ref_root = Path(reference)
            _check_folder(ref_root)
            ref, ref_name = read_imagefolder(ref_root).images, str(ref_root)
        extract = load_feature_extractor(features, model_name=opts.clip_model, device=opts.device)
        if min(len(ref), len(images)) <= k:
            raise InvgenDataError(
                f"precision/recall with k = {k} need more than {k} images in each set "
                f"(reference {len(ref)}, samples {len(images)})"
            )
        section.update(quality_report(images, ref, extract, k=k))
        section["features"] = features if isinstance(features, str) else section["features"]
        section["reference"] = ref_name
    if clip is not None:
        scores = clip_score(images, prompts, clip)
        section["clip_score"] = scores["clip_score"]
        section["clip_score_per_prompt"] = scores["per_prompt"]
    return section


__all__ = ["REPORT_METRICS", "ReportOptions", "attribute_figures", "bias_report", "images_report", "parse_target"]
