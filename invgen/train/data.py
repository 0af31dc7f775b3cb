"""Training data as tensors (latents memory-mapped from their cache), with prompts encoded once by the frozen
text encoder."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from invgen.config import check, check_seed
from invgen.data.builders import DATASETS, ForeignDataError, build_dataset
from invgen.data.imagefolder import ImageSet, read_imagefolder
from invgen.errors import InvgenConfigError, InvgenDataError, shown
from invgen.train.conditioning import PROMPT_EMBEDS, encode_conditions, encode_prompts, text_encoders


@dataclass
class DataConfig:
    """Where the training set lives. With `builder: NAME` (a registered dataset builder, such as the embedded
    benchmark's `colored_digits`) a missing set is built first, with the builder's own `options`."""

    root: str = "data"
    split: str = "train"
    builder: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    size: int = 16
    seed: int = 0
    # Latent-space pipelines (with a VAE) only: how images become latents, and where latents are cached
    # (null: in the run's own folder, `OUTPUT_DIR/latents`, encoded again by each new run; a shared folder
    # lets runs reuse each other's). `size` is then the training resolution; images of other sizes are
    # resized (shorter side) and center-cropped to it.
    latents: Literal["sample", "mean"] = "sample"
    latent_cache: str | None = None
    encode_batch_size: int = 16

    def validate(self, prefix: str = "data") -> None:
        check(self.size >= 8, f"{prefix}.size", f"must be at least 8, got {self.size}")
        check(self.encode_batch_size > 0, f"{prefix}.encode_batch_size", "must be positive")
        check_seed(self.seed, f"{prefix}.seed")
        if self.builder is None:  # a recipe's options stay harmless when an override turns its builder off
            return
        try:
            builder = DATASETS.resolve(self.builder)
        except InvgenConfigError as e:
            raise InvgenConfigError(f"{prefix}.builder: {e}") from None
        builder.check_options(self.options, f"{prefix}.options")

    @property
    def split_dir(self) -> Path:
        return Path(self.root) / self.split


def prepare_dataset(cfg: DataConfig, is_main: bool = True) -> Path:
    """Build the configured set if asked and missing (main process only), return the split folder."""
    if cfg.builder is not None and is_main:
        try:
            build_dataset(cfg.builder, cfg.root, size=cfg.size, seed=cfg.seed, options=cfg.options)
        except ForeignDataError as e:
            # The user's own data under data.root: train on it only if asked (builder: null), never replace it.
            raise InvgenConfigError(
                f"data.root {shown(cfg.root)} holds data that invgen did not build ({shown(e.path)}); set "
                f"data.builder=null to train on it, or choose an empty data.root for the {cfg.builder} set"
            ) from None
    return cfg.split_dir


def start_run(trainer, cfg, resume: bool = False) -> Path:
    """What every trainer does first: `trainer.start(resume)` loads the newest checkpoint (or, for a fresh run,
    refuses a folder holding another run's checkpoints), then the main process creates `cfg.output_dir` and
    records the config there (`train_config.yaml`), the data set `cfg.data` is built if asked, and all
    processes wait for it. Returns the training split's folder.

    The checkpoint is loaded first so that a resume refused (another model, a damaged checkpoint) leaves the
    folder, and the config recorded in it, as it was."""
    from invgen.atomic import reporting_write_errors
    from invgen.config import dump_config

    out = Path(cfg.output_dir)
    trainer.start(resume)
    if trainer.is_main:
        with reporting_write_errors(out):
            out.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, out / "train_config.yaml")
    split = prepare_dataset(cfg.data, trainer.is_main)
    trainer.accelerator.wait_for_everyone()
    return split


@dataclass
class EncodedSet:
    """What the trainers and the grouper read, in the space the denoiser works in.

    `x0` holds pixels in [-1, 1] for a pixel-space pipeline, or scaled VAE latents (`space == "latent"`)
    for a latent one: everything downstream (denoising loss, grouper, objective) is the same code.
    Latent `x0` is a memory-mapped view of the cache file
    (`invgen.train.latents.cached_latents`): consumers index rows (`x0[idx]`, `x0[a:b]`) and only those are read,
    so memory does not grow with the set.
    `embeddings` holds the per-prompt conditions of the pipeline's family (`invgen.train.conditioning`):
    `prompt_embeds` always, `pooled_prompt_embeds` for SDXL, SD3 and Flux; row i is `prompts[i]` and the
    last row is the empty prompt (for classifier-free guidance).
    """

    x0: torch.Tensor  # (N, C, H, W)
    prompt_index: torch.Tensor  # (N,) index into the rows of `embeddings`
    embeddings: dict[str, torch.Tensor]  # name -> (P + 1, ...)
    prompts: list[str]
    image_set: ImageSet
    space: Literal["pixel", "latent"] = "pixel"
    cache_file: Path | None = None
    from_cache: bool = False

    @property
    def empty_index(self) -> int:
        return len(self.prompts)

    def conditions(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The conditions of samples `index` (one row per sample)."""
        return {k: v[self.prompt_index[index]] for k, v in self.embeddings.items()}


@torch.no_grad()
def encode_image_set(
    root: str | os.PathLike,
    tokenizer,
    text_encoder,
    size: int | None = None,
    vae=None,
    data: DataConfig | None = None,
    progress: bool = True,
) -> EncodedSet:
    """Prompts (from metadata.jsonl) through one CLIP text encoder; images as pixels, or through `vae` if given.

    With a VAE, images are streamed and encoded to latents at resolution `size` (cached under
    `data.latent_cache` when set); without one they are read whole at `size` (all must have that size).
    """
    def conditions(prompts: list[str]) -> dict[str, torch.Tensor]:
        return {PROMPT_EMBEDS: encode_prompts(tokenizer, text_encoder, prompts)}

    return _encode(root, conditions, size, vae, data, progress)


def _encode(root, conditions, size, vae, data, progress) -> EncodedSet:
    """The images of `root` as pixels or latents, and `conditions(prompts)` for its distinct prompts + ""."""
    if vae is None:
        image_set = read_imagefolder(root, mode="RGB", size=size)
        x0, space = image_set.tensor(), "pixel"
        cache_file, from_cache = None, False
    else:
        from invgen.train.latents import cached_latents

        data = data or DataConfig()
        image_set = read_imagefolder(root, load_images=False)
        x0, cache_file, from_cache = cached_latents(
            image_set, vae, size or data.size, data.latent_cache, data.latents, data.seed,
            data.encode_batch_size, progress,
        )
        space = "latent"
    if not len(image_set):
        raise InvgenDataError(f"{root}: the image set is empty")
    prompts = sorted(set(image_set.prompts))
    index = {p: i for i, p in enumerate(prompts)}
    return EncodedSet(
        x0=x0,
        prompt_index=torch.tensor([index[p] for p in image_set.prompts]),
        embeddings=conditions(prompts + [""]),
        prompts=prompts,
        image_set=image_set,
        space=space,
        cache_file=cache_file,
        from_cache=from_cache,
    )


def encode_for_pipeline(pipe, split: str | os.PathLike, data: DataConfig, accelerator,
                        run_dir: str | os.PathLike | None = None) -> EncodedSet:
    """The image set encoded with a pipeline's own prompt encoding (`encode_prompt`) and VAE, if it has one.

    Latents always go through an on-disk cache, read memory-mapped, so memory does not grow with the set:
    `data.latent_cache` when set (shared between runs), else `run_dir/latents` (this run's jobs share it).
    The frozen encoders visit the accelerator's device only while encoding. The main process encodes
    first, so the other processes read its cache file instead of encoding again.
    """
    if data.latent_cache is None and run_dir is not None:
        data = replace(data, latent_cache=str(Path(run_dir) / "latents"))

    vae = getattr(pipe, "vae", None)
    parts = [m for m in (*text_encoders(pipe), vae) if m is not None]
    homes = [m.device for m in parts]
    with accelerator.main_process_first():
        for m in parts:
            m.to(accelerator.device)
        try:
            return _encode(split, lambda prompts: encode_conditions(pipe, prompts, accelerator.device), data.size,
                           vae, data, accelerator.is_main_process)
        finally:
            for m, home in zip(parts, homes, strict=True):
                m.to(home)
