"""`invgen metrics SAMPLES_DIR ...`: bias metrics of an image set, optionally side by side with others.

This module is imported whenever the `invgen` command starts, so it imports nothing heavy at the top:
the work happens in `invgen.metrics.report` (computing), `.compare` and `.render`, loaded when the command runs.
"""

from __future__ import annotations

from pathlib import Path

import typer

from invgen.config import check_seed
from invgen.errors import InvgenConfigError, shown

MAX_BOOTSTRAP = 100_000
"""Resamples are held in memory at once (prompts x resamples x values): more would only exhaust it."""


def _split(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    return items or None


def _what_to_read(samples: Path, attribute: str | None, classifier: str | None) -> tuple[str, str]:
    """The attribute and classifier given, else those the sampling pipeline's training set names."""
    if classifier is not None and attribute is not None:
        return attribute, classifier
    from invgen.runs import samples_defaults

    found = samples_defaults(samples)
    if found is None or not found.classifier:
        missing = " and ".join(f for f, v in (("--attribute", attribute), ("--classifier", classifier)) if v is None)
        raise InvgenConfigError(f"give {missing}: {shown(samples)} was not sampled by a pipeline whose training set "
                                "names a classifier")
    return attribute or found.attribute, classifier or found.classifier


def metrics_command(
    samples: Path = typer.Argument(..., help="image set: a folder with images and metadata.jsonl"),
    attribute: str | None = typer.Option(
        None, "--attribute", "-a",
        help="the attribute whose balance is measured (default: the one the sampling pipeline's classifier reads)",
    ),
    classifier: str | None = typer.Option(
        None,
        "--classifier",
        "-c",
        help="clip:PATH, checkpoint:PATH, metadata (the value in metadata.jsonl) or a plug-in's (the digits: "
        "oracle:color[:PALETTE]); default: the sampling pipeline's own, when its training set names one",
    ),
    target: str | None = typer.Option(
        None,
        "--target",
        help="target distribution p*, e.g. 0.75,0.25 or red=0.75,green=0.25 (default uniform)",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="report JSON path (default SAMPLES/report.json)"
    ),
    compare: list[Path] | None = typer.Option(
        None, "--compare", help="another image set (or its report.json) to compare with; repeat for more"
    ),
    labels: str | None = typer.Option(
        None, "--labels", help="attribute values, comma-separated (clip, metadata)"
    ),
    prompts_file: Path | None = typer.Option(
        None, "--prompts-file", help="YAML/JSON: attribute value → prompt(s), for clip:PATH"
    ),
    reference: Path | None = typer.Option(
        None, "--reference", help="real image set for FID and precision/recall"
    ),
    features: str | None = typer.Option(
        None, "--features", help="feature space for FID/PR: digit-cnn:DIR, clip:PATH or inception:PATH"
    ),
    clip: Path | None = typer.Option(
        None, "--clip", help="local open_clip weights: CLIP score and the M_G judge"
    ),
    clip_model: str | None = typer.Option(
        None, "--clip-model", help="open_clip architecture of a weights file"
    ),
    t2i: bool = typer.Option(False, "--t2i", help="add Vice et al.'s B_D, H_J and M_G"),
    captioner: Path | None = typer.Option(None, "--captioner", help="local BLIP folder for the T2I measures"),
    synonyms: Path | None = typer.Option(
        None, "--synonyms", help="YAML/JSON synonym table for the T2I measures"
    ),
    bootstrap: int = typer.Option(
        1000, "--bootstrap", help="bootstrap resamples for the intervals (0: none)"
    ),
    confidence: float = typer.Option(0.95, "--confidence", help="confidence level of the intervals"),
    seed: int = typer.Option(0, "--seed", help="seed of the bootstrap"),
    device: str | None = typer.Option(None, "--device", help="torch device for model classifiers"),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="write PNG plots beside the report"),
) -> None:
    """Compute bias metrics of an image set: JSON, markdown and plots; --compare puts sets side by side."""
    from invgen.metrics.compare import compare_reports, load_report
    from invgen.metrics.report import ReportOptions, bias_report
    from invgen.metrics.t2i import read_synonyms

    _check_statistics(bootstrap, confidence, seed)
    options = ReportOptions(
        names=_split(labels), prompts_file=prompts_file, clip_model=clip_model, device=device,
        reference=reference, features=features, clip=clip, t2i=t2i, captioner=captioner,
        synonyms=read_synonyms(synonyms) if synonyms is not None else None,
        n_boot=bootstrap, confidence=confidence, seed=seed,
    )
    attribute, classifier = _what_to_read(samples, attribute, classifier)
    measure = dict(attribute=attribute, classifier=classifier, target=target, options=options)
    report = bias_report(samples, **measure)
    # Every set to compare is read (and checked) before anything is written: a bad --compare leaves no file.
    others = [load_report(p) if p.suffix == ".json" else bias_report(p, **measure) for p in compare or []]
    comparison = compare_reports([report, *others]) if others else None
    _write_and_print(report, comparison, out or samples / "report.json", plots)


def _check_statistics(bootstrap: int, confidence: float, seed: int) -> None:
    if bootstrap < 0:
        raise InvgenConfigError(f"--bootstrap must be 0 or more, got {bootstrap}")
    if bootstrap > MAX_BOOTSTRAP:
        raise InvgenConfigError(f"--bootstrap must be {MAX_BOOTSTRAP} or less, got {bootstrap}")
    if not 0.0 < confidence < 1.0:  # also refuses NaN
        raise InvgenConfigError(f"--confidence must lie between 0 and 1, got {confidence}")
    check_seed(seed, "--seed")


def _write_and_print(report: dict, comparison: dict | None, out: Path, plots: bool) -> None:
    from invgen.metrics.render import comparison_markdown, report_markdown, write_comparison, write_report

    written = write_report(report, out, plots=plots)
    if comparison is None:
        typer.echo(report_markdown(report))
        typer.echo("wrote " + ", ".join(str(p) for p in written.values()))
        return
    cmp_written = write_comparison(comparison, out.with_name("comparison.json"), plots=plots)
    typer.echo(comparison_markdown(comparison))
    typer.echo("wrote " + ", ".join(str(p) for p in [*written.values(), *cmp_written.values()]))
