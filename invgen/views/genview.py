"""GenView: positive views from a frozen image-conditioned diffusion model, noise level chosen per image.

    gen = GenViewGenerator(pipe, foreground="saliency", cache_dir="runs/cache/genview")
    views = gen(images, generator=torch.Generator().manual_seed(0))    # (B, 3, H, W) in [-1, 1]
    out = gen.generate(images, generator=...)   # views + each image's noise level and foreground proportion

A larger foreground tolerates more noise (more diversity without losing the subject), so the noise level
rises with the foreground proportion. `noise_levels` is either a `(lo, hi)` tuple, mapped linearly, or a
list of levels, one per equal-width proportion bin (GenView's rule: proportions in [0, .2), [.2, .4), ...
get 0, 100, 200, 300, 400 on unCLIP's image-embedding noise scale).

What "noise level" means depends on the pipeline:
- the embedded `PixelTextToImagePipeline`: SDEdit `strength` in [0, 1], one per image in one call;
- diffusers img2img pipelines (e.g. `StableDiffusionImg2ImgPipeline`): `strength`, one call per level;
- unCLIP image variation pipelines (e.g. `StableUnCLIPImg2ImgPipeline`): `noise_level` (integer timestep
  of the noise added to the CLIP image embedding), one call per level.
Every image draws its own seed from `generator`, so its view does not depend on the batch it came in; with
`cache_dir` each view is stored as a PNG keyed by the generator's settings, the image's 8-bit pixels, its
noise level and its seed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from invgen.errors import InvgenDataError, InvgenModelError
from invgen.fingerprint import weights_digest
from invgen.pixels import to_signed, to_uint8
from invgen.view_cache import (
    entry_path,
    per_image_seeds,
    read_cached,
    store,
)
from invgen.views.foreground import ForegroundEstimator, build_foreground, check_images, foreground_proportion

# GenView's levels on unCLIP's embedding-noise scale (0..1000).
UNCLIP_LEVELS = [0, 100, 200, 300, 400]
# Ours for SDEdit strength: the same five bins on the strength scale.
STRENGTH_LEVELS = [0.1, 0.2, 0.3, 0.4, 0.5]


def noise_levels_for(proportions: torch.Tensor | Sequence[float], levels) -> list[float]:
    """Per-image noise level, non-decreasing in the foreground proportion.

    `levels` as a 2-tuple `(lo, hi)`: `lo + p * (hi - lo)`. As a list: `levels[k]` for p in the k-th of
    `len(levels)` equal-width bins of [0, 1] (p = 1 falls in the last bin)."""
    p = torch.as_tensor(proportions, dtype=torch.float64).clamp(0, 1)
    if isinstance(levels, tuple) and len(levels) == 2:
        lo, hi = float(levels[0]), float(levels[1])
        return [lo + float(v) * (hi - lo) for v in p]
    values = [float(v) for v in levels]
    k = (p * len(values)).floor().long().clamp(max=len(values) - 1)
    return [values[int(i)] for i in k]


def _check_levels(levels, kind: str):
    values = [float(v) for v in levels]
    if not values or (isinstance(levels, tuple) and len(levels) == 2 and values[1] < values[0]):
        raise InvgenModelError(f"noise_levels must be (lo, hi) with lo <= hi or a non-empty list, got {levels}")
    if not isinstance(levels, tuple) and values != sorted(values):
        raise InvgenModelError(f"noise_levels must be increasing (more foreground, more noise), got {levels}")
    hi = 1000 if kind == "unclip" else 1
    if min(values) < 0 or max(values) > hi:
        what = "unCLIP noise_level" if kind == "unclip" else "img2img strength"
        raise InvgenModelError(f"noise_levels {levels} are outside [0, {hi}], the range of the {what}")


def _pipeline_kind(pipe) -> str:
    from invgen.pipelines.pixel_t2i import PixelTextToImagePipeline

    if isinstance(pipe, PixelTextToImagePipeline):
        return "embedded"
    name = type(pipe).__name__
    if "UnCLIP" in name:
        return "unclip"
    if name.endswith("Img2ImgPipeline"):
        return "img2img"
    return "other"


@dataclass
class GenViews:
    views: torch.Tensor  # (B, 3, H, W) in [-1, 1]
    noise_levels: list[float]
    proportions: list[float]
    seeds: list[int]


class GenViewGenerator:
    def __init__(
        self,
        pipe,
        noise_levels: tuple[float, float] | Sequence[float] | None = None,
        foreground: str | ForegroundEstimator = "saliency",
        prompt: str = "",
        num_inference_steps: int = 20,
        guidance_scale: float = 1.0,
        batch_size: int = 128,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = False,
    ):
        kind = _pipeline_kind(pipe)
        if kind == "other":
            # A text-to-image pipeline: switch to its img2img sibling, sharing the weights.
            from diffusers import AutoPipelineForImage2Image

            try:
                pipe = AutoPipelineForImage2Image.from_pipe(pipe)
            except (ValueError, KeyError) as e:
                raise InvgenModelError(f"{type(pipe).__name__} has no image-conditioned form: {e}") from None
            kind = _pipeline_kind(pipe)
        if noise_levels is None:
            noise_levels = UNCLIP_LEVELS if kind == "unclip" else STRENGTH_LEVELS
        _check_levels(noise_levels, kind)
        self.pipe, self.kind = pipe, kind
        self.noise_levels = tuple(noise_levels) if isinstance(noise_levels, tuple) else list(noise_levels)
        self.foreground = build_foreground(foreground)
        self.prompt = prompt
        self.steps, self.guidance_scale = int(num_inference_steps), float(guidance_scale)
        self.batch_size = int(batch_size)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.progress = progress
        self.hits = self.misses = 0
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            weights = weights_digest(self.pipe.unet) if hasattr(self.pipe, "unet") else type(self.pipe).__name__
            self._fingerprint = (f"genview|{self.kind}|{self.prompt}|{self.steps}|{self.guidance_scale}|"
                                 f"{weights}")
        return self._fingerprint

    # ------------------------------------------------------------------ public
    def __call__(self, images, generator: torch.Generator | None = None, **kw) -> torch.Tensor:
        return self.generate(images, generator=generator, **kw).views

    def generate(
        self,
        images,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | None = None,
        names: Sequence[str] | None = None,
        masks: torch.Tensor | None = None,
    ) -> GenViews:
        """One view per image. `names` are file names (for mask-folder estimators); `masks` skips estimation."""
        images = _as_tensor(images)
        # Work on the 8-bit image, as the cache stores it, so a cold and a warm run start from the same input.
        pixels = [to_uint8(x) for x in images]
        images = torch.stack([to_signed(p) for p in pixels])
        seeds = list(seeds) if seeds is not None else per_image_seeds(len(images), generator)
        if len(seeds) != len(images):
            raise InvgenDataError(f"got {len(images)} images but {len(seeds)} seeds")
        if masks is None:
            masks = self.foreground(images, names)
        proportions = [float(v) for v in foreground_proportion(masks)]
        levels = noise_levels_for(proportions, self.noise_levels)
        if self.kind == "unclip":
            levels = [float(round(v)) for v in levels]

        paths = [self._key(p, lv, s) for p, lv, s in zip(pixels, levels, seeds, strict=True)]
        out, todo = read_cached(paths)
        self.hits += len(images) - len(todo)
        self.misses += len(todo)
        bar = tqdm(total=len(todo), desc="genview", disable=not self.progress or not todo, dynamic_ncols=True)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            fresh = self._generate(images[chunk], [levels[i] for i in chunk], [seeds[i] for i in chunk])
            for j, i in enumerate(chunk):
                out[i] = store(paths[i], fresh[j])
            bar.update(len(chunk))
        bar.close()
        return GenViews(torch.stack(out), levels, proportions, seeds)

    # ------------------------------------------------------------------ internals
    def _key(self, pixels: np.ndarray, level: float, seed: int) -> Path | None:
        if self.cache_dir is None:
            return None
        return entry_path(self.cache_dir, self.fingerprint, pixels, level, seed)

    def _generate(self, x: torch.Tensor, levels: list[float], seeds: list[int]) -> torch.Tensor:
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        common = dict(num_inference_steps=self.steps, guidance_scale=self.guidance_scale, output_type="pt")
        with torch.no_grad():
            if self.kind == "embedded":
                # One call: the embedded pipeline takes a strength per image.
                y = self.pipe(prompt=[self.prompt] * len(x), image=x, strength=levels, generator=gens,
                              **common).images
                return y.float().cpu() * 2 - 1
            # diffusers pipelines take one strength / noise_level per call: group the images by level.
            y = torch.empty_like(x)
            for level in sorted(set(levels)):
                idx = [i for i, v in enumerate(levels) if v == level]
                kw = {"noise_level": int(level)} if self.kind == "unclip" else {"strength": level}
                res = self.pipe(prompt=[self.prompt] * len(idx), image=(x[idx].float() + 1) / 2,
                                generator=[gens[i] for i in idx], **kw, **common).images
                res = torch.as_tensor(np.stack(res) if isinstance(res, list) else res).float()
                if res.ndim == 4 and res.shape[-1] == 3 and res.shape[1] != 3:  # NHWC numpy output
                    res = res.permute(0, 3, 1, 2)
                res = F.interpolate(res, size=x.shape[-2:], mode="bilinear", align_corners=False)
                y[idx] = res.cpu() * 2 - 1
            return y


def _as_tensor(images) -> torch.Tensor:
    """Float tensors (B, 3, H, W) in [-1, 1] as they are; a list of PIL images (one size) converted."""
    if isinstance(images, list) and images and isinstance(images[0], Image.Image):
        sizes = {im.size for im in images}
        if len(sizes) > 1:
            raise InvgenDataError(f"PIL images must share one size, got {sorted(sizes)}")
        arr = np.stack([np.asarray(im.convert("RGB")) for im in images])
        return to_signed(arr)
    return check_images(images).float().cpu()
