"""Bias transformations: turn an image of class a into "the same content with class b's bias".

A generative model trained on biased data learns the bias first, so translating a sample from its class
to another class mostly changes the bias (the color of a digit) and keeps the content (its shape).

    t = DiffusionTranslator(pipe, ["a red car", "a blue car"], strength=0.5)   # a frozen pipeline (SDEdit)
    views = t.transform(images, labels, generator=torch.Generator().manual_seed(0))
    cached = CachedTransform(t, "runs/cache/views")        # same views, computed once

Images are float tensors (B, 3, H, W) in [-1, 1], labels integer class indices. Every view is drawn from
its own seed (and, unless given, its own target class b != a drawn from that seed), so a view does not
depend on the batch it was computed in: that is what lets the cache key a view by (image, target, seed).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch

from invgen.errors import InvgenDataError, InvgenModelError
from invgen.pixels import to_signed, to_uint8
from invgen.views.cache import CacheCounters, ViewCache, per_image_seeds
from invgen.views.img2img import Img2Img


def draw_targets(labels: Sequence[int], seeds: Sequence[int], num_classes: int) -> list[int]:
    """A class b != a for each image, drawn from that image's seed."""
    out = []
    for a, s in zip(labels, seeds, strict=True):
        k = int(torch.randint(0, num_classes - 1, (1,), generator=torch.Generator().manual_seed(s)))
        out.append((int(a) + 1 + k) % num_classes)
    return out


def _check_batch(images: torch.Tensor, labels: Sequence[int] | torch.Tensor) -> list[int]:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InvgenDataError(f"images must be a float tensor (B, 3, H, W) in [-1, 1], got {shape}")
    labels = [int(v) for v in (labels.tolist() if isinstance(labels, torch.Tensor) else labels)]
    if len(labels) != len(images):
        raise InvgenDataError(f"got {len(images)} images but {len(labels)} labels")
    return labels


class BiasTransform(ABC):
    """`transform(images, labels, target_labels=None, generator=None, seeds=None) -> images`."""

    num_classes: int

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """Identifies the transform and its settings (the cache keys views by it)."""

    @abstractmethod
    def _translate(self, images: torch.Tensor, targets: list[int], seeds: list[int], labels: list[int]):
        """Images (B, 3, H, W) in [-1, 1] of classes `labels` to their views of classes `targets`."""

    def transform(
        self,
        images: torch.Tensor,
        labels: Sequence[int] | torch.Tensor,
        target_labels: Sequence[int] | None = None,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | None = None,
    ) -> torch.Tensor:
        labels = _check_batch(images, labels)
        seeds = list(seeds) if seeds is not None else per_image_seeds(len(images), generator)
        targets = list(target_labels) if target_labels is not None else draw_targets(labels, seeds, self.num_classes)
        bad = [t for t in targets if not 0 <= int(t) < self.num_classes]
        if bad:
            raise InvgenDataError(f"target class {bad[0]} is outside 0..{self.num_classes - 1}")
        with torch.no_grad():
            return self._translate(images, [int(t) for t in targets], seeds, labels).clamp(-1, 1)

    __call__ = transform


class DiffusionTranslator(BiasTransform):
    """A frozen text-conditioned diffusion pipeline as a class-to-class translator (SDEdit).

    The image is noised to `strength` and denoised under class b's prompt. With `switch` set, only the
    steps above timestep `switch * 1000` use class b's prompt and the rest use the source class's prompt:
    a diffusion model decides coarse, global properties (a digit's color) at high noise and the
    content (its shape) later, so the early steps carry b's bias and the late ones keep a's content.
    `switch=None` is plain SDEdit. `class_prompts[c]` is the prompt of class c.

    Works with the embedded `PixelTextToImagePipeline` and with Stable Diffusion (a text-to-image
    pipeline is switched to its img2img sibling with `AutoPipelineForImage2Image.from_pipe`).
    """

    def __init__(
        self,
        pipe,
        class_prompts: Sequence[str],
        strength: float = 1.0,
        switch: float | None = 0.8,
        num_inference_steps: int = 20,
        guidance_scale: float = 2.0,
        batch_size: int = 256,
    ):
        if not 0.0 < strength <= 1.0:
            raise InvgenModelError(f"strength must be in (0, 1], got {strength}")
        if switch is not None and not 0.0 <= switch <= 1.0:
            raise InvgenModelError(f"switch must be in [0, 1] or None, got {switch}")
        self.class_prompts = list(class_prompts)
        if len(self.class_prompts) < 2:
            raise InvgenModelError(f"a translator needs one prompt per class, at least two; got {self.class_prompts}")
        self.num_classes = len(self.class_prompts)
        self.strength, self.switch = float(strength), switch
        self.steps, self.guidance_scale = int(num_inference_steps), float(guidance_scale)
        self.batch_size = batch_size
        self.img2img = Img2Img(pipe)
        self.pipe = self.img2img.pipe
        self._fingerprint = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            settings = (f"diffusion|{self.class_prompts}|{self.strength}|{self.switch}|{self.steps}|"
                        f"{self.guidance_scale}")
            self._fingerprint = f"{settings}|{self.img2img.weights}"
        return self._fingerprint

    def _switch_callback(self, source: torch.Tensor):
        limit = None if self.switch is None else self.switch * 1000

        def callback(pipe, i, t, state):
            if limit is None or float(t) > limit or "prompt_embeds" not in state:
                return state
            embeds = state["prompt_embeds"]
            n = len(source)
            # Under classifier-free guidance the rows are [uncond; cond]: replace the conditional half.
            state["prompt_embeds"] = torch.cat([embeds[:-n], source.to(embeds)]) if len(embeds) > n else source
            return state

        return callback

    def _translate(self, images: torch.Tensor, targets: list[int], seeds: list[int], labels: list[int]):
        out = []
        for i in range(0, len(images), self.batch_size):
            sl = slice(i, i + self.batch_size)
            kw = {}
            if self.switch is not None:
                source = self.img2img.encode_prompt([self.class_prompts[a] for a in labels[sl]])
                kw = dict(callback_on_step_end=self._switch_callback(source),
                          callback_on_step_end_tensor_inputs=["prompt_embeds"])
            out.append(self.img2img(images[sl], [self.class_prompts[t] for t in targets[sl]], seeds[sl],
                                    self.strength, num_inference_steps=self.steps,
                                    guidance_scale=self.guidance_scale, **kw))
        return to_signed(np.concatenate(out))


class CachedTransform(BiasTransform, CacheCounters):
    """Wraps a transform; each view is stored as a PNG under `cache_dir`, keyed by the transform's
    fingerprint, the image's 8-bit pixels, its class, the target class and the seed. Views are 8-bit like the images
    they come from, so a cached view equals a fresh one exactly."""

    def __init__(self, inner: BiasTransform, cache_dir: str | os.PathLike):
        self.inner = inner
        self.num_classes = inner.num_classes
        self.cache = ViewCache(cache_dir, lambda: self.fingerprint)

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    def _translate(self, images: torch.Tensor, targets: list[int], seeds: list[int], labels: list[int]):
        pixels = [to_uint8(x) for x in images]

        def make(idx: list[int]) -> torch.Tensor:
            # The inner transform sees the 8-bit image too, so cold and warm runs start from the same input.
            x = torch.stack([to_signed(pixels[i]) for i in idx])
            return self.inner.transform(x, [labels[i] for i in idx], [targets[i] for i in idx],
                                        seeds=[seeds[i] for i in idx])

        return self.cache.views(pixels, list(zip(labels, targets, seeds, strict=True)), make)


class GenViewTransform(BiasTransform):
    """GenView's views (`invgen.views.GenViewGenerator`, label-free, noise level from the foreground share)
    behind the `BiasTransform` interface, so the contrastive trainer can take them as positives. The
    generator keeps its own cache."""

    def __init__(self, generator, num_classes: int):
        self.generator = generator
        self.num_classes = num_classes

    @property
    def fingerprint(self) -> str:
        return self.generator.fingerprint

    def _translate(self, images: torch.Tensor, targets: list[int], seeds: list[int], labels: list[int]):
        return self.generator.generate(images, seeds=seeds).views
