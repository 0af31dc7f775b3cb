"""GenView: positive views from a frozen image-conditioned diffusion model, noise level chosen per image.

    gen = GenViewGenerator(pipe, foreground="saliency", cache_dir="runs/cache/genview")
    views = gen(images, generator=torch.Generator().manual_seed(0))    # (B, 3, H, W) in [-1, 1]
    out = gen.generate(images, generator=...)   # views + each image's noise level and foreground proportion

A larger foreground tolerates more noise (more diversity without losing the subject), so the noise level
rises with the foreground proportion. `noise_levels` is either a `(lo, hi)` tuple, mapped linearly, or a
list of levels, one per equal-width, right-closed proportion bin (GenView's rule: proportions in [0, .2],
(.2, .4], ..., (.8, 1] get 0, 100, 200, 300, 400 on unCLIP's image-embedding noise scale).

What "noise level" means depends on the pipeline:
- the embedded `PixelTextToImagePipeline`: SDEdit `strength` in [0, 1], one per image in one call;
- diffusers img2img pipelines (e.g. `StableDiffusionImg2ImgPipeline`): `strength`, one call per level;
  a strength of 0 leaves the image as it is, so those views are the image and the pipeline is not called;
- unCLIP image variation pipelines (e.g. `StableUnCLIPImg2ImgPipeline`): `noise_level` (integer timestep
  of the noise added to the CLIP image embedding), one call per level.
Every image draws its own seed from `generator`, so its view does not depend on the batch it came in; with
`cache_dir` each view is stored as a PNG keyed by the generator's settings, the image's 8-bit pixels, its
noise level and its seed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from invgen.errors import InvgenDataError, InvgenModelError
from invgen.pixels import to_signed, to_uint8
from invgen.views.cache import CacheCounters, ViewCache, per_image_seeds
from invgen.views.foreground import ForegroundEstimator, build_foreground, check_images, foreground_proportion
from invgen.views.img2img import Img2Img

# GenView's levels on unCLIP's embedding-noise scale (0..1000).
UNCLIP_LEVELS = [0, 100, 200, 300, 400]
# The same levels read on the 1000-step diffusion scale, as SDEdit strengths (level / 1000). Not the same
# operation: unCLIP noises an image embedding and regenerates the whole image, SDEdit keeps the pixels up to
# noise of that strength; 0 is the image itself.
STRENGTH_LEVELS = [0.0, 0.1, 0.2, 0.3, 0.4]
# GenView samples Stable unCLIP with guidance 10. A text-conditioned pipeline under the empty prompt gets
# the same embedding on both guidance branches, so there guidance changes nothing but doubles the cost: 1.
UNCLIP_GUIDANCE, TEXT_GUIDANCE = 10.0, 1.0


def noise_levels_for(proportions: torch.Tensor | Sequence[float], levels) -> list[float]:
    """Per-image noise level, non-decreasing in the foreground proportion.

    `levels` as a 2-tuple `(lo, hi)`: `lo + p * (hi - lo)`. As a list of K levels: `levels[k]` for p in the
    k-th of K equal-width right-closed bins, [0, 1/K], (1/K, 2/K], ..., ((K-1)/K, 1] (GenView's bins)."""
    p = torch.as_tensor(proportions, dtype=torch.float64).clamp(0, 1)
    if isinstance(levels, tuple) and len(levels) == 2:
        lo, hi = float(levels[0]), float(levels[1])
        return [lo + float(v) * (hi - lo) for v in p]
    values = [float(v) for v in levels]
    k = len(values)
    # Bin i holds p in (i/K, (i+1)/K]: ceil(p K) - 1, with p K rounded first so that binary floating point
    # (0.1 + 0.2 is 0.30000000000000004) does not push a proportion on an edge into the bin above.
    bins = [min(max(math.ceil(round(float(v) * k, 9)) - 1, 0), k - 1) for v in p]
    return [values[i] for i in bins]


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


@dataclass
class GenViews:
    views: torch.Tensor  # (B, 3, H, W) in [-1, 1]
    noise_levels: list[float]
    proportions: list[float]
    seeds: list[int]


class GenViewGenerator(CacheCounters):
    """One positive view per image from a frozen image-conditioned pipeline, its noise level chosen from the
    image's foreground proportion (see the module's docstring). Defaults are GenView's: levels 0..400 (unCLIP)
    or strengths 0..0.4, 20 steps; guidance 10 for unCLIP, 1 for text-conditioned pipelines (`guidance_scale`
    None)."""

    def __init__(
        self,
        pipe,
        noise_levels: tuple[float, float] | Sequence[float] | None = None,
        foreground: str | ForegroundEstimator = "saliency",
        prompt: str = "",
        num_inference_steps: int = 20,
        guidance_scale: float | None = None,
        batch_size: int = 128,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = False,
    ):
        self.img2img = Img2Img(pipe)
        kind = self.img2img.kind
        if noise_levels is None:
            noise_levels = UNCLIP_LEVELS if kind == "unclip" else STRENGTH_LEVELS
        _check_levels(noise_levels, kind)
        self.pipe, self.kind = self.img2img.pipe, kind
        self.noise_levels = tuple(noise_levels) if isinstance(noise_levels, tuple) else list(noise_levels)
        self.foreground = build_foreground(foreground)
        self.prompt = prompt
        if guidance_scale is None:
            guidance_scale = UNCLIP_GUIDANCE if kind == "unclip" else TEXT_GUIDANCE
        self.steps, self.guidance_scale = int(num_inference_steps), float(guidance_scale)
        self.batch_size = int(batch_size)
        self.cache = ViewCache(cache_dir, lambda: self.fingerprint)
        self.progress = progress
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = (f"genview|{self.kind}|{self.prompt}|{self.steps}|{self.guidance_scale}|"
                                 f"{self.img2img.weights}")
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

        def make(idx: list[int]) -> np.ndarray:
            out = np.stack([pixels[i] for i in idx])
            # Strength 0 is the image itself (and diffusers' img2img refuses a zero-step schedule); unCLIP's
            # noise_level 0 still regenerates the image from its embedding.
            run = [j for j, i in enumerate(idx) if self.kind == "unclip" or levels[i] > 0]
            if run:
                sel = [idx[j] for j in run]
                out[run] = self.img2img(images[sel], [self.prompt] * len(sel), [seeds[i] for i in sel],
                                        [levels[i] for i in sel], num_inference_steps=self.steps,
                                        guidance_scale=self.guidance_scale)
            return out

        views = self.cache.views(pixels, list(zip(levels, seeds, strict=True)), make, self.batch_size,
                                 progress="genview" if self.progress else None)
        return GenViews(views, levels, proportions, seeds)


def _as_tensor(images) -> torch.Tensor:
    """Float tensors (B, 3, H, W) in [-1, 1] as they are; a list of PIL images (one size) converted."""
    if isinstance(images, list) and images and isinstance(images[0], Image.Image):
        sizes = {im.size for im in images}
        if len(sizes) > 1:
            raise InvgenDataError(f"PIL images must share one size, got {sorted(sizes)}")
        arr = np.stack([np.asarray(im.convert("RGB")) for im in images])
        return to_signed(arr)
    return check_images(images).float().cpu()
