"""Labelled image sets for the classifier trainers, held in memory as tensors."""

from __future__ import annotations

import os

import numpy as np
import torch

from invgen.data.imagefolder import METADATA, ImageSet, read_imagefolder
from invgen.errors import InvgenDataError


def load_labelled_images(
    root: str | os.PathLike, num_classes: int, size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, ImageSet]:
    """Images in [-1, 1], integer labels (checked against `num_classes`) and the set's records."""
    image_set = read_imagefolder(root, size=size)
    labels = image_set.labels
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        i = int(bad[0])
        raise InvgenDataError(
            f"{image_set.root / METADATA}:{i + 1}: label {labels[i]} is outside 0..{num_classes - 1} (num_classes)"
        )
    return image_set.tensor(), torch.from_numpy(labels), image_set
