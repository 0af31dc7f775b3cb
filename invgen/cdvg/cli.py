"""`invgen eval cdvg RUN --test-sets aligned,conflicting,unbiased`."""

from __future__ import annotations

from pathlib import Path

import typer


def eval_cdvg_command(
    run: Path = typer.Argument(..., help="a CDvG run folder (output_dir of `invgen.train cdvg`)"),
    test_sets: str = typer.Option("aligned,conflicting,unbiased", "--test-sets",
                                  help="comma-separated: aligned, conflicting, unbiased"),
    data: Path | None = typer.Option(None, "--data", help="test imagefolder (default: the run's data root/test)"),
) -> None:
    """Accuracy on bias-aligned, bias-conflicting and unbiased test sets, and worst-group accuracy."""
    from invgen.cdvg.evaluate import evaluate_run, table

    sets = tuple(s.strip() for s in test_sets.split(",") if s.strip())
    result = evaluate_run(run, data, sets)
    typer.echo(table([result]), nl=False)
    typer.echo(f"wrote {run / 'eval.json'} and {run / 'eval.md'}")
