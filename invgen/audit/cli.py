"""`invgen audit`: a reproducible bias audit of a pipeline on a prompt suite, or two audits side by side.

Imported whenever the `invgen` command starts, so nothing heavy is imported at the top.
"""

from __future__ import annotations

from pathlib import Path

import typer

from invgen.errors import InvgenConfigError


def audit_command(
    pipeline: str | None = typer.Option(None, "--pipeline", help="pipeline folder or hub id to audit"),
    suite: str | None = typer.Option(None, "--suite",
                                     help="built-in suite (digits, occupations, occupations-test, "
                                          "occupations-train) or a suite file (.yaml/.json)"),
    attribute: str | None = typer.Option(None, "--attribute", "-a",
                                         help="attribute of the suite, or a joint one such as gender+race"),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help="audit folder (resumed if half-finished); with --compare: where the "
                                         "comparison goes (default: the second folder)"),
    classifier: list[str] | None = typer.Option(
        None, "--classifier", "-c",
        help="oracle:color, clip:PATH or checkpoint:PATH (default: the suite's); repeat for one per part of a "
             "joint attribute"),
    detector: str | None = typer.Option(None, "--detector",
                                        help="default, haar:PATH or none (default: by the attribute: faces or not)"),
    guidance: str | None = typer.Option(None, "--guidance", help="InvDiff adapter folder to attach"),
    scale: float = typer.Option(1.0, "--scale", help="adapter guidance scale s (-10 to 10)"),
    per_prompt: int = typer.Option(60, "--per-prompt", help="images per prompt"),
    seed: int = typer.Option(0, "--seed", help="image i has the seed SEED * 100003 + i"),
    steps: int | None = typer.Option(None, "--steps", help="denoising steps (default: the pipeline's)"),
    guidance_scale: float | None = typer.Option(None, "--guidance-scale",
                                                help="classifier-free guidance (default: the pipeline's)"),
    resolution: int | None = typer.Option(None, "--resolution", help="image side in pixels (default: the pipeline's)"),
    batch_size: int = typer.Option(32, "--batch-size"),
    prompts_limit: int | None = typer.Option(None, "--prompts-limit", help="audit only the suite's first N prompts"),
    clip: Path | None = typer.Option(None, "--clip",
                                     help="local open_clip weights for CLIP-T and CLIP-I (default: a clip: "
                                          "classifier's)"),
    clip_model: str | None = typer.Option(None, "--clip-model", help="open_clip architecture of a weights file"),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="bootstrap resamples for the intervals (0: none)"),
    confidence: float = typer.Option(0.95, "--confidence", help="confidence level of the intervals"),
    grid_images: int = typer.Option(16, "--grid-images", help="images per prompt in the labelled grids (0: none)"),
    device: str | None = typer.Option(None, "--device", help="torch device for the classifiers"),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="write PNG plots"),
    compare: tuple[Path, Path] | None = typer.Option(
        None, "--compare", metavar="DIR1 DIR2", help="put two audits side by side (DIR1 first, e.g. the base)"),
) -> None:
    """Audit a pipeline's bias on a prompt suite: sample, detect faces, classify, report (DIR/report.json)."""
    if compare:
        _compare(compare, out, plots)
        return
    missing = [name for name, value in (("--pipeline", pipeline), ("--suite", suite), ("--attribute", attribute),
                                        ("--out", out)) if not value]
    if missing:
        raise InvgenConfigError(f"give {', '.join(missing)} (or --compare DIR1 DIR2 to compare two audits)")
    from invgen.audit.plan import AuditRequest
    from invgen.audit.run import run_audit
    from invgen.distributed import process_state

    request = AuditRequest(suite, attribute, out, classifier=classifier or None, detector=detector,
                           guidance=guidance, scale=scale, per_prompt=per_prompt, seed=seed, steps=steps,
                           guidance_scale=guidance_scale, resolution=resolution, batch_size=batch_size,
                           prompts_limit=prompts_limit, clip=str(clip) if clip else None, clip_model=clip_model,
                           device=device, n_boot=bootstrap, confidence=confidence, grid_images=grid_images)
    report = run_audit(pipeline, request, plots=plots)
    if report is None or not process_state().is_main_process:
        return
    score = report.get("bias_score")
    shown_score = f"{score:.3f}" if isinstance(score, float) and score == score else "none (no image counted)"
    typer.echo(f"{report['attribute']} bias score {shown_score} over {report['n_prompts']} prompts; "
               f"{report['n_no_face']} of {report['n_images']} images without a face")
    typer.echo(f"wrote {out}/report.json, report.md, per_prompt.csv, predictions.jsonl and grids/")


def _compare(folders: tuple[Path, Path], out: Path | None, plots: bool) -> None:
    from invgen.audit.compare import audit_comparison_markdown, compare_audits, write_audit_comparison

    comparison = compare_audits(*folders)
    paths = write_audit_comparison(comparison, out or folders[1], plots=plots)
    typer.echo(audit_comparison_markdown(comparison).split("\n\n![")[0])
    typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))
