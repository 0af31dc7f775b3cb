"""The bias report of an image set: attribute fairness per prompt and overall, with optional T2I-bias and
quality figures; writers for JSON, markdown and PNG; and the side-by-side comparison of several sets.

`bias_report` reads the set once, classifies it in batches and leaves all arithmetic to numpy, so its
cost is reading the images (and the classifier, when it is a model).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from invgen.atomic import write_json, write_text
from invgen.errors import InvgenConfigError, InvgenDataError, InvgenError, shown
from invgen.metrics.fairness import UNREADABLE, counts_by_prompt, fairness_metrics, fairness_summary

REPORT_METRICS = ("bias_score", "fairness_discrepancy", "kl_uniform", "kl_target", "entropy", "delta")
METRIC_TITLES = {
    "bias_score": "bias score ↓",
    "fairness_discrepancy": "FD ↓",
    "kl_uniform": "KL(p‖u) ↓",
    "kl_target": "KL(p‖p*) ↓",
    "entropy": "norm. entropy",
    "delta": "Δ ↓",
}


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


def _load(classifier, attribute, names, prompts_file, palette, clip_model, device):
    from invgen.metrics.classifiers import load_classifier

    if isinstance(classifier, str):
        clf = load_classifier(
            classifier,
            attribute=attribute,
            names=names,
            prompts_file=prompts_file,
            palette=palette,
            model_name=clip_model,
            device=device,
        )
        return classifier, clf
    return getattr(classifier, "spec", type(classifier).__name__), classifier


def images_report(
    images: np.ndarray | None,
    prompts: Sequence[str],
    attribute: str = "color",
    classifier: str | Callable[[np.ndarray], np.ndarray] = "oracle:color",
    target: Any = None,
    *,
    records: Sequence[Any] | None = None,
    name: str = "images",
    classifier_label: str | None = None,
    names: Sequence[str] | None = None,
    prompts_file: str | os.PathLike | None = None,
    palette: str = "two",
    clip_model: str | None = None,
    device: str | None = None,
    reference: str | os.PathLike | np.ndarray | None = None,
    features: str | Callable[[np.ndarray], np.ndarray] | None = None,
    clip: Any = None,
    t2i: bool = False,
    extractor: Callable[[np.ndarray], Any] | None = None,
    captioner: str | os.PathLike | None = None,
    judge: Callable[..., Any] | None = None,
    synonyms: Mapping[str, Sequence[str]] | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    batch_size: int = 1024,
    k: int = 3,
) -> dict[str, Any]:
    """`bias_report` for images already in memory (uint8 (N, H, W, C)) with their prompts.

    `records` (ImageRecords) are needed only by the `metadata` classifier and for the agreement check;
    `reference` may be an array of images or an image folder. `classifier_label` names the classifier in
    the report (default: its spec, or its `spec` attribute or class name for an object).
    """
    from invgen.metrics.classifiers.metadata import MetadataAttribute

    t0 = time.perf_counter()
    _check_options(features, reference)
    spec, clf = _load(classifier, attribute, names, prompts_file, palette, clip_model, device)
    spec = classifier_label or spec
    clip = _bundle(clip, clip_model, device)  # once, for both the judge and the CLIP score
    if isinstance(clf, MetadataAttribute):
        if records is None:
            raise InvgenConfigError("the 'metadata' classifier needs the records of metadata.jsonl")
        values = clf.from_records(records, where=f"{name}/metadata.jsonl")
    else:
        if images is None:
            raise InvgenConfigError(f"the classifier '{spec}' needs the images")
        if len(images) != len(prompts):
            raise InvgenDataError(f"{len(images)} images but {len(prompts)} prompts")
        values = _classify(clf, images, len(clf.names), batch_size)
    t_classify = time.perf_counter()
    report: dict[str, Any] = {"samples": name, "attribute": attribute, "classifier": spec}
    report.update(attribute_figures(values, prompts, clf.names, target, n_boot, confidence, seed))
    if records is not None and not isinstance(clf, MetadataAttribute):
        agreement = _metadata_agreement(records, attribute, report["values"], values)
        if agreement is not None:
            report["metadata_agreement"] = agreement
    t_metrics = time.perf_counter()
    if t2i or extractor is not None or captioner is not None:
        report["t2i"] = _t2i_section(
            images, prompts, clf, extractor, captioner, judge, clip, synonyms, clip_model, device
        )
    if reference is not None or clip is not None:
        report["quality"] = _quality_section(
            images, prompts, reference, features, clip, clip_model, device, k
        )
    report["timing"] = {
        "classify_s": t_classify - t0,
        "metrics_s": t_metrics - t_classify,
        "extra_s": time.perf_counter() - t_metrics,
    }
    return report


def bias_report(
    samples_dir: str | os.PathLike,
    attribute: str = "color",
    classifier: str | Callable[[np.ndarray], np.ndarray] = "oracle:color",
    target: Any = None,
    **options: Any,
) -> dict[str, Any]:
    """Bias figures of the image set in `samples_dir` (imagefolder with metadata.jsonl).

    `classifier` is a spec (`oracle:color`, `clip:PATH`, `checkpoint:PATH`, `metadata`) or an object with
    `names` and `__call__(images) → indices`; `target` is p* (default uniform; "0.75,0.25", a list or a
    mapping value → share). Keys: `bias_score`, `fairness_discrepancy`, `kl_uniform`, `kl_target`,
    `entropy`, `delta` (means over prompts), `ci`, `at_target`, `pooled`, `per_prompt`, `n_images`.
    Options are those of `images_report`: `t2i=True` (or an extractor/captioner) adds Vice et al.'s
    measures; `reference` with `features` adds FID and precision/recall; `clip` adds the CLIP score.
    """
    from invgen.data.imagefolder import read_imagefolder, read_metadata
    from invgen.metrics.classifiers.metadata import MetadataAttribute

    t0 = time.perf_counter()
    root = Path(samples_dir)
    _check_folder(root)
    records = read_metadata(root)
    _check_options(options.get("features"), options.get("reference"))
    # Loaded here, before reading any image, so that a bad spec fails fast and `metadata` can skip images.
    spec, classifier_obj = _load(
        classifier,
        attribute,
        options.get("names"),
        options.get("prompts_file"),
        options.get("palette", "two"),
        options.get("clip_model"),
        options.get("device"),
    )
    needs_images = not isinstance(classifier_obj, MetadataAttribute) or any(
        options.get(key) not in (None, False)
        for key in ("t2i", "extractor", "captioner", "reference", "clip")
    )
    images = read_imagefolder(root).images if needs_images else None
    t_read = time.perf_counter()
    report = images_report(
        images,
        [r.prompt for r in records],
        attribute,
        classifier_obj,
        target,
        records=records,
        name=str(root),
        classifier_label=spec,
        **options,
    )
    report["timing"] = {"read_s": t_read - t0, **report["timing"], "total_s": time.perf_counter() - t0}
    return report


def _bundle(clip: Any, clip_model: str | None, device: str | None):
    if clip is None or not isinstance(clip, (str, os.PathLike)):
        return clip
    from invgen.models.clip import load_open_clip

    return load_open_clip(clip, model_name=clip_model, device=device)


def _t2i_section(
    images, prompts, clf, extractor, captioner, judge, clip, synonyms, clip_model, device
) -> dict:
    from invgen.metrics.t2i import BlipCaptioner, ClipJudge, TokenFilter, t2i_bias

    if extractor is None and captioner is not None:
        extractor = BlipCaptioner(captioner, device=device)
    if extractor is None and hasattr(clf, "object_extractor"):
        extractor = clf.object_extractor()
    if extractor is None:
        raise InvgenConfigError(
            "the T2I measures need a captioner (--captioner PATH) or an object extractor; "
            "only the colored digits have a built-in one (with --classifier oracle:color)"
        )
    if judge is None and clip is not None:
        judge = ClipJudge(_bundle(clip, clip_model, device))
    section = t2i_bias(images, prompts, extractor, judge=judge, token_filter=TokenFilter(synonyms=synonyms))
    if judge is None:
        section["M_G"] = None
        section["note"] = "M_G needs a judge (--clip PATH)"
    return section


def _quality_section(images, prompts, reference, features, clip, clip_model, device, k) -> dict:
    from invgen.data.imagefolder import read_imagefolder
    from invgen.metrics.quality import clip_score, load_feature_extractor, quality_report

    section: dict[str, Any] = {}
    if reference is not None:
        if features is None:
            raise InvgenConfigError(
                "FID and precision/recall need a feature extractor (--features digit-cnn:DIR, clip:PATH "
                "or inception:PATH)"
            )
        if isinstance(reference, np.ndarray):
            ref, ref_name = reference, f"{len(reference)} images in memory"
        else:
            ref_root = Path(reference)
            _check_folder(ref_root)
            ref, ref_name = read_imagefolder(ref_root).images, str(ref_root)
        extract = load_feature_extractor(features, model_name=clip_model, device=device)
        if min(len(ref), len(images)) <= k:
            raise InvgenDataError(
                f"precision/recall with k = {k} need more than {k} images in each set "
                f"(reference {len(ref)}, samples {len(images)})"
            )
        section.update(quality_report(images, ref, extract, k=k))
        section["features"] = features if isinstance(features, str) else section["features"]
        section["reference"] = ref_name
    if clip is not None:
        scores = clip_score(images, prompts, _bundle(clip, clip_model, device))
        section["clip_score"] = scores["clip_score"]
        section["clip_score_per_prompt"] = scores["per_prompt"]
    return section


# ------------------------------------------------------------------------------------------ writers
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
    out = Path(out)
    paths = {"json": out, "markdown": out.with_suffix(".md")}
    write_json(out, json_safe(report))
    write_text(paths["markdown"], report_markdown(report))
    if plots:
        from invgen.metrics.plots import plot_attribute_histogram

        paths["histogram"] = out.with_name(out.stem + "_attributes.png")
        plot_attribute_histogram(report, paths["histogram"])
    return paths


# --------------------------------------------------------------------------------------- comparison
def load_report(path: str | os.PathLike) -> dict[str, Any]:
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
    return report


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
) -> dict[str, Any]:
    """Side-by-side figures of several reports; the first is the baseline the ratios are taken against.

    Reports are dicts from `bias_report` or paths of report.json files (or their folders). They must
    measure the same attribute with the same values, or the comparison would be meaningless.
    """
    loaded = [dict(r) if isinstance(r, Mapping) else load_report(r) for r in reports]
    if len(loaded) < 2:
        raise InvgenConfigError("a comparison needs at least two reports")
    first = loaded[0]
    for r in loaded[1:]:
        if r["attribute"] != first["attribute"] or list(r["values"]) != list(first["values"]):
            raise InvgenConfigError(
                f"cannot compare {r['samples']} ({r['attribute']}: {', '.join(r['values'])}) with "
                f"{first['samples']} ({first['attribute']}: {', '.join(first['values'])})"
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
    return {
        "attribute": first["attribute"],
        "values": list(first["values"]),
        "labels": labels,
        "baseline": labels[0],
        "confidence": first.get("confidence", 0.95),
        "metrics": metrics,
        "ratio_to_baseline": ratios,
        "per_prompt": per_prompt,
        "reports": loaded,
    }


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
    out = Path(out)
    paths = {"json": out, "markdown": out.with_suffix(".md")}
    write_json(out, json_safe(comparison))
    write_text(paths["markdown"], comparison_markdown(comparison))
    if plots:
        from invgen.metrics.plots import plot_comparison

        paths["bars"] = out.with_name(out.stem + "_bars.png")
        plot_comparison(comparison, paths["bars"])
    return paths


__all__ = [
    "attribute_figures",
    "bias_report",
    "compare_reports",
    "images_report",
    "comparison_markdown",
    "json_safe",
    "load_report",
    "parse_target",
    "report_markdown",
    "write_comparison",
    "write_report",
]
