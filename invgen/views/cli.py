"""`invgen views genview --images DIR --out DIR`: GenView views of an image set, as an imagefolder.

Imported when the `invgen` command starts, so nothing heavy at the top.
"""

from __future__ import annotations

from pathlib import Path

import typer

from invgen.errors import InvgenConfigError


def parse_noise_levels(text: str | None):
    """`lo:hi` → a (lo, hi) range; `a,b,c` → per-bin levels; None → the pipeline's default."""
    if text is None:
        return None
    try:
        if ":" in text:
            lo, hi = text.split(":", 1)
            return (float(lo), float(hi))
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise InvgenConfigError(f"--noise-levels {text!r}: use LO:HI (a range) or a comma-separated list")
    return values


def genview_command(
    images: Path = typer.Option(..., "--images", help="imagefolder (images + metadata.jsonl) to make views of"),
    out: Path = typer.Option(..., "--out", help="imagefolder to write the views to"),
    model: str = typer.Option("runs/demo/base", "--model", help="image-conditioned diffusers pipeline folder"),
    seed: int = typer.Option(0, "--seed"),
    noise_levels: str | None = typer.Option(
        None, "--noise-levels", help="LO:HI (linear in the foreground proportion) or a,b,c (one per bin)"
    ),
    foreground: str = typer.Option(
        "saliency", "--foreground", help="saliency[:THRESHOLD], masks:FOLDER or clip:PATH (local open_clip)"
    ),
    prompt: str = typer.Option("", "--prompt", help="prompt for text-conditioned pipelines (default none)"),
    steps: int = typer.Option(20, "--steps", help="denoising steps"),
    guidance_scale: float = typer.Option(1.0, "--guidance-scale"),
    batch_size: int = typer.Option(64, "--batch-size"),
    cache: Path | None = typer.Option(None, "--cache", help="view cache folder (reruns reuse the views)"),
) -> None:
    """Write one GenView view per image; metadata.jsonl gets each view's noise level and foreground share."""
    import torch

    from invgen.data.imagefolder import ImageRecord, read_imagefolder, write_imagefolder
    from invgen.models.loading import load_pipeline
    from invgen.views.genview import GenViewGenerator

    src = read_imagefolder(images, mode="RGB")
    pipe = load_pipeline(model)
    gen = GenViewGenerator(pipe, noise_levels=parse_noise_levels(noise_levels), foreground=foreground,
                           prompt=prompt, num_inference_steps=steps, guidance_scale=guidance_scale,
                           batch_size=batch_size, cache_dir=cache, progress=True)
    res = gen.generate(src.tensor(), generator=torch.Generator().manual_seed(seed),
                       names=[r.file_name for r in src.records])
    arrays = ((res.views.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    records = [
        ImageRecord(r.file_name, r.prompt, r.label, dict(r.attributes),
                    {**r.extra, "noise_level": level, "foreground_proportion": round(p, 6), "view_seed": s,
                     "source": str(images / r.file_name)})
        for r, level, p, s in zip(src.records, res.noise_levels, res.proportions, res.seeds, strict=True)
    ]
    write_imagefolder(out, list(arrays), records)
    typer.echo(f"wrote {len(records)} views to {out} (noise levels {sorted(set(res.noise_levels))})")
