"""The `invgen` command."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from invgen.errors import InvgenError, one_line

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
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="rebuild even if a matching set exists; replace train/ and test/ as they are"),
) -> None:
    """Build the colored-digits benchmark (train: biased, test: every digit in every color)."""
    from invgen.benchmarks.digits.data import make_colored_digits
    from invgen.config import check_number, check_seed

    check_number(p_align, "--p-align", 0.0, 1.0)
    check_seed(seed, "--seed")
    path = make_colored_digits(out, p_align=p_align, size=size, palette_name=palette, seed=seed, overwrite=overwrite)
    typer.echo(f"wrote {path}/train and {path}/test")


def _register_commands() -> None:
    # Each feature owns its command in its own module; importing them is cheap (heavy imports are lazy).
    from invgen.metrics.cli import metrics_command

    app.command("metrics")(metrics_command)
    from invgen.views.cli import genview_command

    views_app = typer.Typer(help="Generative views (GenView) for contrastive learning.", no_args_is_help=True)
    views_app.command("genview")(genview_command)
    app.add_typer(views_app, name="views")
    from invgen.cdvg.cli import eval_cdvg_command

    eval_app = typer.Typer(help="Evaluate trained models.", no_args_is_help=True)
    eval_app.command("cdvg")(eval_cdvg_command)
    app.add_typer(eval_app, name="eval")
    from invgen.audit.cli import audit_command

    app.command("audit")(audit_command)


_register_commands()


def _check_sample_numbers(scale: float, guidance_scale: float, seed: int) -> None:
    # NaN or huge scales used to give black images with exit 0 and NaN in metadata.jsonl.
    from invgen.config import GUIDANCE_SCALE_LIMIT, SCALE_LIMIT, check_number, check_seed

    check_number(scale, "--scale", -SCALE_LIMIT, SCALE_LIMIT)
    check_number(guidance_scale, "--guidance-scale", 0.0, GUIDANCE_SCALE_LIMIT)
    check_seed(seed, "--seed")


@app.command("sample")
def sample(
    pipeline: str = typer.Option(..., "--pipeline", help="pipeline folder or hub id"),
    prompts: Path = typer.Option(..., "--prompts", help="text file, one prompt per line"),
    out: Path = typer.Option(..., "--out", help="imagefolder to write (resumed if half-finished)"),
    per_prompt: int = typer.Option(50, "--per-prompt"),
    seed: int = typer.Option(0, "--seed"),
    guidance: str | None = typer.Option(None, "--guidance", help="InvDiff adapter folder to attach"),
    scale: float = typer.Option(1.0, "--scale", help="adapter guidance scale s (-10 to 10)"),
    steps: int = typer.Option(25, "--steps", help="denoising steps"),
    guidance_scale: float = typer.Option(2.0, "--guidance-scale",
                                         help="classifier-free guidance (0 to 100; up to 1: none)"),
    batch_size: int = typer.Option(64, "--batch-size"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace the images of another sampling job in --out"),
) -> None:
    """Generate an image set (imagefolder + metadata.jsonl); split across `accelerate launch` processes."""
    from invgen.distributed import process_state
    from invgen.errors import InvgenConfigError
    from invgen.models.loading import load_pipeline
    from invgen.sampling import read_prompts, sample_to_imagefolder

    for option, value in (("--per-prompt", per_prompt), ("--steps", steps), ("--batch-size", batch_size)):
        if value <= 0:
            raise InvgenConfigError(f"{option} must be positive, got {value}")
    _check_sample_numbers(scale, guidance_scale, seed)
    texts = read_prompts(prompts)
    pipe = load_pipeline(pipeline)
    train_steps = getattr(getattr(pipe, "scheduler", None), "config", {}).get("num_train_timesteps")
    if isinstance(train_steps, int) and steps > train_steps:
        raise InvgenConfigError(f"--steps {steps} is more than the {train_steps} steps the scheduler was trained with")
    pipe.to(process_state().device)
    if guidance:
        from invgen.invdiff.guidance import InvariantGuidance

        InvariantGuidance.from_pretrained(guidance).attach(pipe, scale=scale)
    info = {"pipeline": pipeline, "guidance": guidance, "scale": scale if guidance else None,
            "num_inference_steps": steps, "guidance_scale": guidance_scale}
    sample_to_imagefolder(pipe, texts, per_prompt, out, seed=seed, batch_size=batch_size, info=info,
                          overwrite=overwrite, num_inference_steps=steps, guidance_scale=guidance_scale)
    if process_state().is_main_process:
        typer.echo(f"wrote {len(texts) * per_prompt} images to {out}")


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="run folder"),
    quick: bool = typer.Option(False, "--quick", help="a few steps only (for smoke tests)"),
) -> None:
    """Run the whole story on the embedded benchmark and write OUT/report.md."""
    from invgen.benchmarks.digits.demo import run_demo

    run_demo(out, quick=quick)


_BOOL_WORDS = {"true": True, "yes": True, "1": True, "on": True, "false": False, "no": False, "0": False, "off": False}


_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _check_runs(runs: Path | None, pipeline: str | None) -> Path:
    # An app over a folder that is not there would start with empty menus and no word why.
    from invgen.errors import InvgenConfigError, shown

    if runs is None:
        runs = Path("runs")
        if pipeline is not None or runs.is_dir():
            return runs
        raise InvgenConfigError("there is no runs folder here: give --runs FOLDER or --pipeline, or run "
                                "`invgen demo` first")
    if not runs.is_dir():
        what = "is a file, not a folder" if runs.exists() else "does not exist"
        raise InvgenConfigError(f"--runs {shown(runs)} {what}")
    return runs


@app.command("app")
def app_command(
    runs: Path | None = typer.Option(None, "--runs", show_default="runs",
                                     help="folder to list pipelines and InvDiff adapters from"),
    port: int | None = typer.Option(None, "--port", help="port (default: the first free one from 7860)"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (0.0.0.0: the whole network)"),
    share: str = typer.Option("false", "--share", metavar="true|false", help="a public gradio.live link"),
    pipeline: str | None = typer.Option(None, "--pipeline", help="pipeline to start with (folder or hub id)"),
    adapter: str | None = typer.Option(None, "--adapter", help="adapter to start with"),
    clip: Path | None = typer.Option(None, "--clip", help="local open_clip weights for zero-shot attributes"),
) -> None:
    """Open the Gradio app: base and debiased grids side by side, attribute histograms, metrics, views."""
    from invgen.app import launch
    from invgen.errors import InvgenConfigError

    if share.strip().lower() not in _BOOL_WORDS:
        raise InvgenConfigError(f"--share must be true or false, got '{share}'")
    public = _BOOL_WORDS[share.strip().lower()]
    runs = _check_runs(runs, pipeline)
    if port is not None and not 0 <= port <= 65535:
        raise InvgenConfigError(f"--port must be from 0 to 65535, got {port}")
    if public or host.strip().lower() not in _LOOPBACK:
        where = "a public gradio.live link" if public else f"--host {host}"
        typer.echo(f"warning: with {where} the app is reachable from the network: anyone who reaches it can "
                   "generate images and load models from any local path this user can read", err=True)
    launch(runs, pipeline=pipeline, adapter=adapter, host=host, port=port, share=public, clip=clip)


def main(argv: list[str] | None = None) -> int:
    try:
        app(args=argv, standalone_mode=False)
    except InvgenError as e:
        typer.echo(f"error: {one_line(e)}", err=True)
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
