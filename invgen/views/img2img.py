"""Image-to-image with a frozen diffusion pipeline: the one place that knows how each kind of pipeline takes
an image, a noise level, prompts and seeds, shared by every view maker.

    i2i = Img2Img(pipe)   # a text-to-image pipeline becomes its image-to-image sibling (same weights)
    views = i2i(images, prompts, seeds, strength=0.5, num_inference_steps=20)   # uint8 (B, H, W, 3)

Kinds, told apart by what the pipeline's `__call__` accepts rather than by its class name:
- `embedded`: invgen's `PixelTextToImagePipeline`; SDEdit `strength` in [0, 1], one per image, one call;
  it takes images in [-1, 1].
- `img2img`: a diffusers pipeline with `image` and `strength` (Stable Diffusion img2img, SDXL, Flux ...);
  one call per strength; images in [0, 1].
- `unclip`: a diffusers unCLIP image-variation pipeline (`image` and `noise_level`); the level is the integer
  timestep of the noise added to the CLIP image embedding (0..1000), one call per level.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from invgen.errors import InvgenDataError, InvgenModelError
from invgen.fingerprint import weights_digest
from invgen.pixels import to_signed, to_uint8

NOISE_RANGE = {"embedded": 1.0, "img2img": 1.0, "unclip": 1000.0}


def _call_parameters(pipe) -> set[str]:
    try:
        return set(inspect.signature(pipe.__call__).parameters)
    except (TypeError, ValueError):
        return set()


def pipeline_kind(pipe) -> str | None:
    """`embedded`, `img2img` or `unclip` for a pipeline that takes images; None for one that does not."""
    from invgen.pipelines.pixel_t2i import PixelTextToImagePipeline

    if isinstance(pipe, PixelTextToImagePipeline):
        return "embedded"
    params = _call_parameters(pipe)
    if "image" in params and "noise_level" in params:
        return "unclip"
    # An inpainting pipeline also takes `image` and `strength`, but needs a mask no view maker has.
    if "image" in params and "strength" in params and "mask_image" not in params:
        return "img2img"
    return None


def image_pipeline(pipe) -> tuple[Any, str]:
    """`pipe` if it takes images, else its image-to-image sibling sharing its weights, and its kind."""
    kind = pipeline_kind(pipe)
    if kind is not None:
        return pipe, kind
    from diffusers import AutoPipelineForImage2Image

    try:
        sibling = AutoPipelineForImage2Image.from_pipe(pipe)
    except (ValueError, KeyError, AttributeError) as e:
        raise InvgenModelError(f"{type(pipe).__name__} has no image-to-image form in diffusers: {e}") from None
    kind = pipeline_kind(sibling)
    if kind is None:
        raise InvgenModelError(f"{type(pipe).__name__}'s image-to-image form {type(sibling).__name__} takes no "
                               "image strength")
    return sibling, kind


def _as_signed(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(images, np.ndarray) and images.dtype == np.uint8:
        return to_signed(images)
    if isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[1] == 3:
        return images.float().cpu()
    shape = tuple(getattr(images, "shape", ())) or type(images).__name__
    raise InvgenDataError(f"images must be uint8 (B, H, W, 3) or float (B, 3, H, W) in [-1, 1], got {shape}")


def _as_nchw(res) -> torch.Tensor:
    """A pipeline's `output_type="pt"` images as float (B, 3, H, W) in [0, 1] (some return NHWC arrays)."""
    res = torch.as_tensor(np.stack(res) if isinstance(res, list) else res).float()
    if res.ndim == 4 and res.shape[-1] == 3 and res.shape[1] != 3:
        res = res.permute(0, 3, 1, 2)
    return res.cpu()


class Img2Img:
    """A frozen pipeline as an image-to-image function with one seed per image (a view never depends on
    the batch it was made in). See the module's docstring for the kinds and what `strength` means."""

    def __init__(self, pipe):
        self.pipe, self.kind = image_pipeline(pipe)
        if hasattr(self.pipe, "set_progress_bar_config"):
            self.pipe.set_progress_bar_config(disable=True)

    @property
    def noise_range(self) -> float:
        """The largest noise level the pipeline takes (1 for a strength, 1000 for unCLIP's noise_level)."""
        return NOISE_RANGE[self.kind]

    @property
    def weights(self) -> str:
        """A digest of the denoiser's weights (the class name when it has no UNet), for cache keys."""
        unet = getattr(self.pipe, "unet", None)
        return weights_digest(unet) if isinstance(unet, torch.nn.Module) else type(self.pipe).__name__

    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """The conditional prompt embeddings the pipeline would compute for `prompts`."""
        if self.kind == "embedded":
            return self.pipe.encode_prompt(prompts)
        return self.pipe.encode_prompt(prompts, self.pipe._execution_device, 1, False)[0]

    def __call__(
        self,
        images: torch.Tensor | np.ndarray,
        prompts: Sequence[str],
        seeds: Sequence[int],
        strength: float | Sequence[float],
        **kwargs: Any,
    ) -> np.ndarray:
        """uint8 (B, H, W, 3) views of `images` (uint8 (B, H, W, 3) or float (B, 3, H, W) in [-1, 1]), at the
        input's size. `strength` is one noise level or one per image; `kwargs` (num_inference_steps,
        guidance_scale, callbacks ...) go to every pipeline call, and images sharing a level share a call."""
        x = _as_signed(images)
        n = len(x)
        levels = [float(strength)] * n if isinstance(strength, (int, float)) else [float(v) for v in strength]
        if not len(prompts) == len(seeds) == len(levels) == n:
            raise InvgenDataError(f"got {n} images, {len(prompts)} prompts, {len(seeds)} seeds and {len(levels)} "
                                  "noise levels")
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        kwargs.setdefault("output_type", "pt")
        with torch.no_grad():
            if self.kind == "embedded":  # one call: the embedded pipeline takes a strength per image
                y = self.pipe(prompt=list(prompts), image=x, strength=levels, generator=gens, **kwargs).images
                return to_uint8(_as_nchw(y) * 2 - 1)
            y = torch.empty_like(x)
            for level in sorted(set(levels)):
                idx = [i for i, v in enumerate(levels) if v == level]
                noise = {"noise_level": int(level)} if self.kind == "unclip" else {"strength": level}
                res = self.pipe(prompt=[prompts[i] for i in idx], image=(x[idx] + 1) / 2,
                                generator=[gens[i] for i in idx], **noise, **kwargs).images
                res = _as_nchw(res)
                if res.shape[-2:] != x.shape[-2:]:
                    res = F.interpolate(res, size=x.shape[-2:], mode="bilinear", align_corners=False)
                y[idx] = res * 2 - 1
        return to_uint8(y)
