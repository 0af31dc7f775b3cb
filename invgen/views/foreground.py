"""Foreground estimation behind one interface: `estimator(images, names=None) -> masks`.

Images are float tensors (B, 3, H, W) in [-1, 1]; masks are (B, 1, H, W) in [0, 1] (1 = foreground).
GenView uses the foreground proportion of each image to pick its noise level, and foreground/background
masks to score the quality of a positive pair.

- `SaliencyForeground`: a pixel is foreground when it differs from the image's background color (the
  median of its border pixels) by more than `threshold`. On the synthetic sets (a colored digit on black)
  that is "the bright pixels".
- `MaskFolderForeground`: user-supplied masks, one grayscale image per input image, found by file name.
- `ClipForeground`: open_clip patch tokens compared with the image embedding (local weights only).
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from invgen.errors import InvgenDataError, InvgenModelError
from invgen.registry import Registry

MASK_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def check_images(images: torch.Tensor) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InvgenDataError(f"images must be a float tensor (B, 3, H, W) in [-1, 1], got {shape}")
    return images


def foreground_proportion(masks: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Share of each image's pixels whose mask value is at least `threshold`: (B,) in [0, 1]."""
    return (masks >= threshold).flatten(1).float().mean(dim=1)


class ForegroundEstimator(ABC):
    """`__call__(images, names=None) -> masks (B, 1, H, W) in [0, 1]`; `names` are the images' file names
    (only estimators that look masks up on disk need them)."""

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """Identifies the estimator and its settings (view caches key on it)."""

    @abstractmethod
    def _masks(self, images: torch.Tensor, names: Sequence[str] | None) -> torch.Tensor: ...

    def __call__(self, images: torch.Tensor, names: Sequence[str] | None = None) -> torch.Tensor:
        images = check_images(images)
        if names is not None and len(names) != len(images):
            raise InvgenDataError(f"got {len(images)} images but {len(names)} names")
        with torch.no_grad():
            return self._masks(images, names).clamp(0, 1)


class SaliencyForeground(ForegroundEstimator):
    """Foreground = pixels whose largest channel difference from the border's median color exceeds
    `threshold` (in [0, 1] units of the pixel range). Binary masks."""

    def __init__(self, threshold: float = 0.25):
        if not 0.0 < threshold < 1.0:
            raise InvgenDataError(f"saliency threshold must be in (0, 1), got {threshold}")
        self.threshold = float(threshold)

    @property
    def fingerprint(self) -> str:
        return f"saliency|{self.threshold}"

    def _masks(self, images, names):
        x = (images.float() + 1) / 2
        border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1)  # (B, 3, 4W)
        background = border.median(dim=-1).values[..., None, None]
        distance = (x - background).abs().amax(dim=1, keepdim=True)
        return (distance > self.threshold).float()


class MaskFolderForeground(ForegroundEstimator):
    """Masks from a folder: for image `a/b.png` the mask is `folder/a/b.<png|jpg|...>` (same stem), read as
    grayscale, resized to the image and scaled to [0, 1]."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InvgenDataError(f"mask folder {self.folder} does not exist")

    @property
    def fingerprint(self) -> str:
        return f"masks|{self.folder.resolve()}"

    def find(self, name: str) -> Path:
        stem = Path(name).with_suffix("")
        for suffix in MASK_SUFFIXES:
            path = self.folder / stem.with_suffix(suffix)
            if path.is_file():
                return path
        raise InvgenDataError(f"no mask for image {name} in {self.folder} (expected {stem}.png or .jpg)")

    def _masks(self, images, names):
        if names is None:
            raise InvgenDataError("the mask-folder estimator needs the images' file names (names=...)")
        h, w = images.shape[-2:]
        out = []
        for name in names:
            path = self.find(name)
            try:
                with Image.open(path) as im:
                    mask = im.convert("L").resize((w, h), Image.NEAREST)
            except (UnidentifiedImageError, OSError) as e:
                raise InvgenDataError(f"mask {path} cannot be read: {e}") from None
            out.append(torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0))
        return torch.stack(out)[:, None]


class ClipForeground(ForegroundEstimator):
    """CLIP patch saliency: each patch token (projected to the joint space) is compared with the image
    embedding by cosine similarity; the map is min-max normalised per image and upsampled to the image.

    GenView takes the first principal component of CLIP patch features (PCA fitted on ImageNet); comparing
    patches with the pooled embedding needs no fitted PCA and highlights the same object-centric patches.
    Weights come from a local open_clip folder or file (`invgen.models.clip.load_open_clip`).
    """

    def __init__(self, path: str | os.PathLike, model_name: str | None = None, device: str | None = None):
        from invgen.models.clip import load_open_clip

        self.path = Path(path)
        self.bundle = load_open_clip(path, model_name=model_name, device=device)
        visual = self.bundle.model.visual
        if not hasattr(visual, "output_tokens") or getattr(visual, "proj", None) is None:
            raise InvgenModelError(f"{path}: the CLIP foreground needs a ViT image tower with patch tokens")
        self._digest = hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:16]

    @property
    def fingerprint(self) -> str:
        return f"clip|{self._digest}"

    def _masks(self, images, names):
        visual = self.bundle.model.visual
        size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
        # CLIP's own normalisation, applied to the [0, 1] images resized to the tower's input size.
        mean = torch.tensor(getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073))
        std = torch.tensor(getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711))
        x = F.interpolate((images.float() + 1) / 2, size=(size, size), mode="bilinear", align_corners=False)
        x = ((x - mean[:, None, None]) / std[:, None, None]).to(self.bundle.device)
        visual.output_tokens = True
        try:
            pooled, tokens = visual(x)
        finally:
            visual.output_tokens = False
        tokens = tokens @ visual.proj  # (B, N, D): patches in the joint space, like the pooled embedding
        sim = F.cosine_similarity(tokens, pooled[:, None, :], dim=-1)  # (B, N)
        g = int(round(sim.shape[1] ** 0.5))
        sim = sim.reshape(-1, 1, g, g).float().cpu()
        lo = sim.amin(dim=(2, 3), keepdim=True)
        hi = sim.amax(dim=(2, 3), keepdim=True)
        sim = (sim - lo) / (hi - lo + 1e-7)
        return F.interpolate(sim, size=images.shape[-2:], mode="bilinear", align_corners=False)


FOREGROUNDS: Registry[ForegroundEstimator] = Registry("foreground estimator")


def _saliency(arg: str) -> SaliencyForeground:
    try:
        return SaliencyForeground(float(arg)) if arg else SaliencyForeground()
    except ValueError:
        raise InvgenDataError(f"foreground 'saliency:{arg}': the saliency threshold must be a number") from None


FOREGROUNDS.register("saliency", _saliency, arg="THRESHOLD", arg_required=False,
                     help="pixels unlike the border's median color (threshold in [0, 1], default 0.25)")
FOREGROUNDS.register("masks", lambda arg: MaskFolderForeground(arg), arg="FOLDER",
                     help="one grayscale mask per image, found by file name")
FOREGROUNDS.register("clip", lambda arg: ClipForeground(arg), arg="PATH",
                     help="open_clip patch saliency, local weights")


def build_foreground(spec: str | ForegroundEstimator) -> ForegroundEstimator:
    """An estimator as it is, or the one a spec names in `FOREGROUNDS` (`saliency[:THRESHOLD]`,
    `masks:FOLDER`, `clip:PATH`, or a plug-in's)."""
    if isinstance(spec, ForegroundEstimator):
        return spec
    return FOREGROUNDS.resolve(spec)
