"""`invgen views genview --images DIR --out DIR`: GenView views of an image set, as an imagefolder.

Imported when the `invgen` command starts, so nothing heavy at the top.
"""

from __future__ import annotations

from pathlib import Path

import typer

from invgen.config import GUIDANCE_SCALE_LIMIT, check_number, check_seed
from invgen.errors import InvgenConfigError, InvgenDataError, shown


def parse_noise_levels(text: str | None):
    """`lo:hi` → a (lo, hi) range; `a,b,c` → per-bin levels; None → the pipeline's default."""
    if text is None:
        return None
    try:
        if ":" in text:
            lo, hi = text.split(":", 1)
            values = [float(lo), float(hi)]
        else:
            values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise InvgenConfigError(f"--noise-levels {text!r}: use LO:HI (a range) or a comma-separated list")
    for v in values:  # float() reads "nan" and "inf", which no noise level can be
        check_number(v, "--noise-levels")
    return tuple(values) if ":" in text else values


def _written_by_genview(out: Path) -> bool:
    from invgen.data.imagefolder import read_metadata, unlisted_files

    try:
        records = read_metadata(out)
    except InvgenDataError:
        return False
    return all("view_seed" in r.extra and "noise_level" in r.extra for r in records) and not unlisted_files(out)


def check_out_folder(images: Path, out: Path, overwrite: bool) -> None:
    """Refuse, before any work, an --out whose replacement would lose the inputs or files genview did not write."""
    src, dst = images.resolve(), out.resolve()
    if dst == src or dst in src.parents:
        raise InvgenConfigError(f"--out {shown(out)} holds the --images set; writing views there would replace the "
                                "images they are made from, so choose another --out")
    if out.exists() and not out.is_dir():
        raise InvgenConfigError(f"--out {shown(out)} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite and not _written_by_genview(out):
        raise InvgenDataError(f"{shown(out)} holds files that invgen views genview did not write; pass --overwrite to "
                              "replace it")


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
    guidance_scale: float | None = typer.Option(
        None, "--guidance-scale", help="default 10 for unCLIP (GenView's), 1 for text-conditioned pipelines"
    ),
    batch_size: int = typer.Option(64, "--batch-size"),
    cache: Path | None = typer.Option(None, "--cache", help="view cache folder (reruns reuse the views)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an --out folder genview did not write"),
) -> None:
    """Write one GenView view per image; metadata.jsonl gets each view's noise level and foreground share."""
    import torch

    from invgen.data.imagefolder import ImageRecord, read_imagefolder, write_imagefolder
    from invgen.models.loading import load_pipeline
    from invgen.pixels import to_uint8
    from invgen.views.genview import GenViewGenerator

    for option, value in (("--steps", steps), ("--batch-size", batch_size)):
        if value <= 0:
            raise InvgenConfigError(f"{option} must be positive, got {value}")
    if guidance_scale is not None:
        check_number(guidance_scale, "--guidance-scale", 0.0, GUIDANCE_SCALE_LIMIT)
    check_seed(seed, "--seed")
    levels = parse_noise_levels(noise_levels)
    check_out_folder(images, out, overwrite)
    src = read_imagefolder(images, mode="RGB")
    pipe = load_pipeline(model)
    gen = GenViewGenerator(pipe, noise_levels=levels, foreground=foreground,
                           prompt=prompt, num_inference_steps=steps, guidance_scale=guidance_scale,
                           batch_size=batch_size, cache_dir=cache, progress=True)
    res = gen.generate(src.tensor(), generator=torch.Generator().manual_seed(seed),
                       names=[r.file_name for r in src.records])
    arrays = to_uint8(res.views)
    records = [
        ImageRecord(r.file_name, r.prompt, r.label, dict(r.attributes),
                    {**r.extra, "noise_level": level, "foreground_proportion": round(p, 6), "view_seed": s,
                     "source": str(images / r.file_name)})
        for r, level, p, s in zip(src.records, res.noise_levels, res.proportions, res.seeds, strict=True)
    ]
    try:
        write_imagefolder(out, list(arrays), records)
    except OSError as e:
        raise InvgenDataError(f"cannot write the views to {shown(out)}: {e.strerror or e}") from None
    typer.echo(f"wrote {len(records)} views to {out} (noise levels {sorted(set(res.noise_levels))})")
