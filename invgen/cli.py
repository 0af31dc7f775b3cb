"""The `invgen` command."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from invgen.errors import InvgenError

app = typer.Typer(help="invgen: debias generative image models without bias labels.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Build the embedded benchmark sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("digits")
def data_digits(
    out: Path = typer.Option(..., "--out", help="folder to write train/ and test/ into"),
    p_align: float = typer.Option(0.95, "--p-align", help="share of training images in their digit's majority color"),
    size: int = typer.Option(16, "--size", help="image side in pixels"),
    palette: str = typer.Option("two", "--palette", help="two (binary bias) or ten (Colored-MNIST setting)"),
    seed: int = typer.Option(0, "--seed"),
    overwrite: bool = typer.Option(False, "--overwrite", help="rebuild even if a matching set exists"),
) -> None:
    """Build the colored-digits benchmark (train: biased, test: every digit in every color)."""
    from invgen.data.digits import make_colored_digits

    path = make_colored_digits(out, p_align=p_align, size=size, palette_name=palette, seed=seed, overwrite=overwrite)
    typer.echo(f"wrote {path}/train and {path}/test")


def _register_commands() -> None:
    # Each feature owns its command in its own module; importing them is cheap (heavy imports are lazy).
    from invgen.metrics.cli import metrics_command

    app.command("metrics")(metrics_command)


_register_commands()


@app.command("sample")
def sample(
    pipeline: str = typer.Option(..., "--pipeline", help="pipeline folder or hub id"),
    prompts: Path = typer.Option(..., "--prompts", help="text file, one prompt per line"),
    out: Path = typer.Option(..., "--out", help="imagefolder to write (resumed if half-finished)"),
    per_prompt: int = typer.Option(50, "--per-prompt"),
    seed: int = typer.Option(0, "--seed"),
    guidance: str | None = typer.Option(None, "--guidance", help="InvDiff adapter folder to attach"),
    scale: float = typer.Option(1.0, "--scale", help="adapter guidance scale s"),
    steps: int = typer.Option(25, "--steps", help="denoising steps"),
    guidance_scale: float = typer.Option(2.0, "--guidance-scale", help="classifier-free guidance"),
    batch_size: int = typer.Option(64, "--batch-size"),
) -> None:
    """Generate an image set (imagefolder + metadata.jsonl); split across `accelerate launch` processes."""
    from accelerate import PartialState

    from invgen.models.loading import load_pipeline
    from invgen.sampling import read_prompts, sample_to_imagefolder

    texts = read_prompts(prompts)
    pipe = load_pipeline(pipeline)
    pipe.to(PartialState().device)
    if guidance:
        from invgen.invdiff.guidance import InvariantGuidance

        InvariantGuidance.from_pretrained(guidance).attach(pipe, scale=scale)
    info = {"pipeline": pipeline, "guidance": guidance, "scale": scale if guidance else None,
            "num_inference_steps": steps, "guidance_scale": guidance_scale}
    sample_to_imagefolder(pipe, texts, per_prompt, out, seed=seed, batch_size=batch_size, info=info,
                          num_inference_steps=steps, guidance_scale=guidance_scale)
    if PartialState().is_main_process:
        typer.echo(f"wrote {len(texts) * per_prompt} images to {out}")


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="run folder"),
    quick: bool = typer.Option(False, "--quick", help="a few steps only (for smoke tests)"),
) -> None:
    """Run the whole story on the embedded benchmark and write OUT/report.md."""
    from invgen.demo import run_demo

    run_demo(out, quick=quick)


def main(argv: list[str] | None = None) -> int:
    try:
        app(args=argv, standalone_mode=False)
    except InvgenError as e:
        typer.echo(f"error: {e}", err=True)
        return 2
    except (typer.Exit, SystemExit) as e:
        return int(getattr(e, "exit_code", getattr(e, "code", 0)) or 0)
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            return e.exit_code
        if isinstance(e, click.exceptions.Abort):
            return 130
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
