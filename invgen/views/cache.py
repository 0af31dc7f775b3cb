"""An on-disk cache of generated views, one 8-bit PNG per view, shared by every view maker.

Views are stored as 8-bit PNGs, like the images they come from, so a cached view equals a fresh one exactly
(fresh views are quantised the same way before they are returned). Keys are chosen by the caller; entries
are written atomically, and an unreadable entry counts as missing.

    cache = ViewCache(cache_dir, fingerprint)   # cache_dir None: nothing stored, every view computed
    views = cache.views(pixels, keys, make, batch_size=64)
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from invgen.atomic import atomic_file
from invgen.pixels import to_signed, to_uint8


def per_image_seeds(n: int, generator: torch.Generator | None) -> list[int]:
    """One seed per image drawn from `generator` (seed 0 when None), so a view never depends on its batch."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    return [int(s) for s in torch.randint(0, 2**62, (n,), generator=g)]


def entry_path(cache_dir: Path, fingerprint: str, pixels: np.ndarray, *parts) -> Path:
    """Where the view of `pixels` (8-bit) made by `fingerprint` with settings `parts` is cached."""
    h = hashlib.sha256(fingerprint.encode())
    h.update(pixels.tobytes())
    h.update((f"|{pixels.shape}|" + "|".join(repr(p) for p in parts)).encode())
    d = h.hexdigest()
    return cache_dir / d[:2] / f"{d}.png"


def _read(path: Path | None) -> np.ndarray | None:
    if path is None or not path.is_file():
        return None
    try:
        return np.asarray(Image.open(path).convert("RGB"))
    except OSError:
        return None  # unreadable entry: compute it again


def _write(path: Path, view: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(view).save(buf, format="PNG")
    with atomic_file(path, "wb") as f:
        f.write(buf.getvalue())


ViewsFor = Callable[[list[int]], "torch.Tensor | np.ndarray"]
"""`make(indices)`: the views of those images, float (B, 3, H, W) in [-1, 1] or uint8 (B, H, W, 3)."""


class ViewCache:
    """Looks views up by (maker fingerprint, 8-bit image, key parts), computes only the misses, in batches,
    and stores them. Counts `hits` and `misses` over its lifetime."""

    def __init__(self, cache_dir: str | os.PathLike | None, fingerprint: Callable[[], str] | str):
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._fingerprint = fingerprint
        self.hits = 0
        self.misses = 0

    @property
    def fingerprint(self) -> str:
        return self._fingerprint() if callable(self._fingerprint) else self._fingerprint

    def paths(self, pixels: Sequence[np.ndarray], keys: Sequence[tuple]) -> list[Path | None]:
        if self.cache_dir is None:
            return [None] * len(pixels)
        fp = self.fingerprint
        return [entry_path(self.cache_dir, fp, p, *k) for p, k in zip(pixels, keys, strict=True)]

    def views(
        self,
        pixels: Sequence[np.ndarray],
        keys: Sequence[tuple],
        make: ViewsFor,
        batch_size: int | None = None,
        progress: str | None = None,
    ) -> torch.Tensor:
        """The (quantised) views, float (B, 3, H, W) in [-1, 1]: cached ones read, the rest made by `make`
        `batch_size` at a time and stored. `progress`: the label of a progress bar over the views made."""
        from tqdm.auto import tqdm

        paths = self.paths(pixels, keys)
        out: list[np.ndarray | None] = [_read(p) for p in paths]
        todo = [i for i, v in enumerate(out) if v is None]
        self.hits += len(out) - len(todo)
        self.misses += len(todo)
        step = batch_size or max(1, len(todo))
        bar = tqdm(total=len(todo), desc=progress, disable=progress is None or not todo, dynamic_ncols=True)
        for start in range(0, len(todo), step):
            chunk = todo[start : start + step]
            fresh = make(chunk)
            fresh = to_uint8(fresh) if isinstance(fresh, torch.Tensor) else np.asarray(fresh, dtype=np.uint8)
            for j, i in enumerate(chunk):
                out[i] = fresh[j]
                if paths[i] is not None:
                    _write(paths[i], fresh[j])
            bar.update(len(chunk))
        bar.close()
        return to_signed(np.stack(out)) if out else torch.empty(0)


class CacheCounters:
    """`cache_dir`, `hits` and `misses` of a view maker's `self.cache` (a `ViewCache`), read-only."""

    cache: ViewCache

    @property
    def cache_dir(self) -> Path | None:
        return self.cache.cache_dir

    @property
    def hits(self) -> int:
        return self.cache.hits

    @property
    def misses(self) -> int:
        return self.cache.misses
