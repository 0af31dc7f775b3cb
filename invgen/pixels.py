"""8-bit images and the [-1, 1] tensors diffusion models work in, one image or a batch.

Arrays are channels-last (..., H, W, 3) uint8, as PIL and imagefolders hold them; tensors channels-first
(..., 3, H, W) float32 in [-1, 1], as diffusers' models take them. `to_uint8(to_signed(a))` is `a` exactly.
"""

from __future__ import annotations

import numpy as np
import torch


def to_signed(images: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W) in [-1, 1] (a new tensor: read-only arrays are fine)."""
    x = torch.from_numpy(np.asarray(images, dtype=np.float32))
    return x.div_(127.5).sub_(1.0).movedim(-1, -3)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (..., 3, H, W) in [-1, 1] (clipped) -> uint8 (..., H, W, 3), rounded to the nearest level."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).movedim(-3, -1).cpu().numpy()
