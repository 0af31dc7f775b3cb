"""An on-disk cache of generated views, one 8-bit PNG per view, shared by the CDvG translators and GenView.

Views are stored as 8-bit PNGs, like the images they come from, so a cached view equals a fresh one exactly
(callers quantise fresh views with `to_uint8` before returning them). Keys are chosen by the caller; entries
are written atomically, and an unreadable entry counts as missing.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from invgen.atomic import atomic_file
from invgen.pixels import to_signed, to_uint8


def per_image_seeds(n: int, generator: torch.Generator | None) -> list[int]:
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    return [int(s) for s in torch.randint(0, 2**62, (n,), generator=g)]


def entry_path(cache_dir: Path, fingerprint: str, pixels: np.ndarray, *parts) -> Path:
    """Where the view of `pixels` (8-bit) made by `fingerprint` with settings `parts` is cached."""
    h = hashlib.sha256(fingerprint.encode())
    h.update(pixels.tobytes())
    h.update((f"|{pixels.shape}|" + "|".join(repr(p) for p in parts)).encode())
    d = h.hexdigest()
    return cache_dir / d[:2] / f"{d}.png"


def read_cached(paths: Sequence[Path | None]) -> tuple[list[torch.Tensor | None], list[int]]:
    """The cached views (None where missing) and the indices still to compute."""
    out: list[torch.Tensor | None] = [None] * len(paths)
    todo = []
    for i, path in enumerate(paths):
        if path is not None and path.is_file():
            try:
                out[i] = to_signed(np.asarray(Image.open(path).convert("RGB")))
                continue
            except OSError:
                pass  # unreadable entry: compute it again
        todo.append(i)
    return out, todo


def store(path: Path | None, view: torch.Tensor) -> torch.Tensor:
    """Quantise `view` to 8 bits, write it to `path` (when given) and return the quantised view."""
    a = to_uint8(view)
    if path is not None:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        with atomic_file(path, "wb") as f:
            f.write(buf.getvalue())
    return to_signed(a)
