"""A small CNN that reads digits from grayscale, used to measure the fidelity of generated digits.

It is trained on the bundled digits in grayscale (color removed by taking the brightest channel), so it
reads the shape whatever the color, and is cached under the run folder with `save_pretrained`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from invgen.metrics.classifiers.checkpoint import fit_classifier


class DigitCNN(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, size: int = 16, width: int = 32, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(2 * width * 16, 128),
            nn.ReLU(),
        )
        self.head = nn.Linear(128, num_classes)

    @staticmethod
    def to_gray(images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, C) or float (N, 1, H, W) in [0, 1] → float (N, 1, H, W) in [0, 1]."""
        if isinstance(images, np.ndarray):
            x = torch.from_numpy(images).float() / 255.0
            x = x.amax(dim=-1, keepdim=True) if x.ndim == 4 else x[..., None]
            return x.permute(0, 3, 1, 2)
        return images.float()

    def embed(self, gray: torch.Tensor) -> torch.Tensor:
        # Contrast-normalise each image: generated digits vary in brightness, the shape is what counts.
        top = gray.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
        return self.features(gray / top)

    def forward(self, gray: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(gray))

    @torch.no_grad()
    def _batched(self, fn, images: np.ndarray, batch_size: int) -> torch.Tensor:
        self.eval()
        x = self.to_gray(images)
        if x.shape[-1] != self.config.size:
            x = F.interpolate(x, size=(self.config.size, self.config.size), mode="bilinear", align_corners=False)
        return torch.cat([fn(x[i : i + batch_size].to(self.device)).cpu() for i in range(0, len(x), batch_size)])

    def predict(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        return self._batched(lambda x: self(x).argmax(1), images, batch_size).numpy()

    def features_of(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Penultimate features, the feature space of FID / precision-recall on the embedded benchmark."""
        return self._batched(self.embed, images, batch_size).numpy()


def _jitter(batch: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Small shifts and brightness changes, so that generated digits (never perfectly centred) read well."""
    shift = torch.randint(-1, 2, (2,), generator=g).tolist()
    batch = torch.roll(batch, shifts=shift, dims=(2, 3))
    return batch * (0.6 + 0.4 * torch.rand(len(batch), 1, 1, 1, generator=g))


def train_digit_cnn(
    size: int = 16, steps: int = 600, seed: int = 0, test_fraction: float = 0.2
) -> tuple[DigitCNN, float]:
    """Train on the train split of the bundled digits; returns the model and its held-out accuracy."""
    from invgen.benchmarks.digits.data import grayscale_digits, split_indices

    gray, labels = grayscale_digits(size)
    train_idx, test_idx = split_indices(labels, test_fraction, seed)
    x = torch.from_numpy(gray)[:, None]
    y = torch.from_numpy(labels)
    torch.manual_seed(seed)
    model = DigitCNN(size=size)
    fit_classifier(model, x, y, steps=steps, batch_size=128, lr=2e-3, seed=seed, weight_decay=1e-4, one_cycle=True,
                   pool=torch.from_numpy(train_idx), augment=_jitter)
    with torch.no_grad():
        acc = (model(x[test_idx]).argmax(1) == y[test_idx]).float().mean().item()
    return model, acc


def load_or_train_digit_cnn(cache_dir: str | os.PathLike, size: int = 16, seed: int = 0) -> DigitCNN:
    """The digit classifier cached in `cache_dir` (trained once, in about half a minute on 2 cores)."""
    from invgen.atomic import atomic_dir

    cache_dir = Path(cache_dir)
    if (cache_dir / "config.json").is_file():
        model = DigitCNN.from_pretrained(cache_dir)
        if model.config.size == size:
            return model.eval()
    model, acc = train_digit_cnn(size=size, seed=seed)
    with atomic_dir(cache_dir) as tmp:
        model.save_pretrained(tmp)
        (tmp / "accuracy.txt").write_text(f"{acc:.4f}\n")
    return model.eval()
