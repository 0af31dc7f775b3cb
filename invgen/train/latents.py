"""Images to the latent space of a pipeline's VAE, for latent diffusion models (Stable Diffusion).

Images are streamed from the image folder in batches (a 512-px set does not fit in memory as floats),
resized so the shorter side is `size` and center-cropped (as diffusers' training scripts do), encoded by
`vae.encode(x).latent_dist` (its mean, or one draw seeded per image so batching does not matter), then
shifted and scaled as the UNet expects: `(z - shift_factor) * scaling_factor`.

Encoding a large set costs minutes on a GPU, so the latents can be cached in a safetensors file keyed by
the image set (metadata and every file's size and modification time), the VAE (its config and a hash of
its weights), the resolution and the encoding mode. A changed set, VAE or resolution is a new key, never
a stale cache. The file is written atomically, batch by batch as the images are encoded, and read back
memory-mapped: the trainers index it like a tensor, and only the rows they touch are read, so memory does not
grow with the set (200,000 latents at 512 px are 13 GB in float32).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from invgen.data.imagefolder import METADATA, ImageSet, load_image_array
from invgen.errors import InvgenDataError
from invgen.pixels import to_signed

LatentMode = Literal["sample", "mean"]


def vae_scale_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def resize_center_crop(size: int):
    """A PIL transform: shorter side to `size` (bicubic), then the central `size` × `size` square."""
    from PIL import Image

    def transform(im):
        w, h = im.size
        if (w, h) == (size, size):
            return im
        scale = size / min(w, h)
        im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
        w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        return im.crop((left, top, left + size, top + size))

    return transform


def vae_fingerprint(vae) -> str:
    """sha256 of the VAE's config and weights: two VAEs share a cache only if they compute the same thing."""
    h = hashlib.sha256(json.dumps(dict(vae.config), sort_keys=True, default=str).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def image_set_fingerprint(image_set: ImageSet) -> str:
    """sha256 of metadata.jsonl and each image file's name, size and modification time (no pixel reads)."""
    root = Path(image_set.root)
    h = hashlib.sha256((root / METADATA).read_bytes())
    for rec in image_set.records:
        st = (root / rec.file_name).stat()
        h.update(f"{rec.file_name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_key(image_set: ImageSet, vae, size: int, mode: LatentMode, seed: int) -> str:
    draw = str(seed) if mode == "sample" else "-"
    parts = [image_set_fingerprint(image_set), vae_fingerprint(vae), str(size), mode, draw]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _latent_seed(seed: int, index: int) -> int:
    return seed * 1_000_003 + index


def latent_shape(vae, size: int) -> tuple[int, int, int]:
    """(C, H, W) of one image's latents at resolution `size`."""
    side = size // vae_scale_factor(vae)
    return (int(vae.config.latent_channels), side, side)


@torch.no_grad()
def iter_latents(
    image_set: ImageSet,
    vae,
    size: int,
    mode: LatentMode = "sample",
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
) -> Iterator[torch.Tensor]:
    """Scaled latents of `image_set`'s records in order, one float32 CPU batch at a time (images are read per
    batch, so nothing grows with the set)."""
    factor = vae_scale_factor(vae)
    if size % factor:
        raise InvgenDataError(f"{image_set.root}: resolution {size} is not a multiple of the VAE's factor {factor}")
    root = Path(image_set.root)
    transform = resize_center_crop(size)
    device, dtype = vae.device, vae.dtype
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    scale = vae.config.scaling_factor
    n = len(image_set.records)
    for start in tqdm(range(0, n, batch_size), desc="encoding latents", disable=not progress, leave=False):
        idx = range(start, min(start + batch_size, n))
        arrays = [
            load_image_array(root / image_set.records[i].file_name, f"{root / METADATA}:{i + 1}", "RGB", transform)
            for i in idx
        ]
        x = to_signed(np.stack(arrays))
        dist = vae.encode(x.to(device, dtype)).latent_dist
        if mode == "mean":
            z = dist.mean
        else:
            # One draw per image from its own generator, so the latents do not depend on batch_size.
            eps = torch.stack([
                torch.randn(dist.mean.shape[1:], generator=torch.Generator().manual_seed(_latent_seed(seed, i)))
                for i in idx
            ]).to(device, dist.mean.dtype)
            z = dist.mean + dist.std * eps
        yield ((z.float() - shift) * scale).cpu().contiguous()


def encode_latents(
    image_set: ImageSet,
    vae,
    size: int,
    mode: LatentMode = "sample",
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
) -> torch.Tensor:
    """Scaled latents (N, C, size / f, size / f) float32 on the CPU for every record of `image_set`, in memory
    (`cached_latents` with a cache folder keeps them on disk instead)."""
    batches = list(iter_latents(image_set, vae, size, mode, seed, batch_size, progress))
    return torch.cat(batches) if batches else torch.zeros(0, *latent_shape(vae, size))


# A latent cache is a safetensors file with one F32 tensor, "latents". It is written here rather than by
# `safetensors.torch.save` so that the rows can be streamed in as they are encoded; `safe_open` reads it.
_HEADER_ALIGN = 8


def _write_streamed(f: BinaryIO, shape: tuple[int, ...], batches: Iterator[torch.Tensor], meta: dict[str, str]) -> None:
    nbytes = 4 * math.prod(shape)
    header = json.dumps({"latents": {"dtype": "F32", "shape": list(shape), "data_offsets": [0, nbytes]},
                         "__metadata__": meta}, separators=(",", ":")).encode()
    header += b" " * (-len(header) % _HEADER_ALIGN)
    f.write(struct.pack("<Q", len(header)) + header)
    rows, written = shape[0], 0
    for batch in batches:
        if tuple(batch.shape[1:]) != tuple(shape[1:]) or written + len(batch) > rows:
            raise InvgenDataError(f"the VAE returned latents of shape {tuple(batch.shape)}, expected rows of "
                                  f"{shape[1:]}")
        f.write(batch.numpy().astype("<f4", copy=False).tobytes())
        written += len(batch)
    if written != rows:
        raise InvgenDataError(f"{written} latents encoded for {rows} images")


def _open_cache(path: Path, key: str, names: list[str]) -> torch.Tensor | None:
    """The cached latents of `path`, memory-mapped (read-only on disk), or None if the file is not this key's
    complete cache."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:  # checks the header against the file's length
            meta = f.metadata() or {}
            if meta.get("key") != key or json.loads(meta.get("file_names", "null")) != names:
                return None
            view = f.get_slice("latents")
            if view.get_dtype() != "F32":
                return None
            shape = tuple(view.get_shape())
        with open(path, "rb") as raw:
            (header_len,) = struct.unpack("<Q", raw.read(8))
        if path.stat().st_size != 8 + header_len + 4 * math.prod(shape) or shape[0] != len(names):
            return None
        # Copy-on-write: the array is writable for torch (no warning), and nothing written to it reaches the file.
        array = np.memmap(path, dtype="<f4", mode="c", offset=8 + header_len, shape=shape)
    except (SafetensorError, OSError, KeyError, ValueError, struct.error):
        return None  # unreadable or foreign: encode again and replace it
    return torch.from_numpy(array)


def cached_latents(
    image_set: ImageSet,
    vae,
    size: int,
    cache_dir: str | os.PathLike | None,
    mode: LatentMode = "sample",
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
) -> tuple[torch.Tensor, Path | None, bool]:
    """`encode_latents`, read from (or written to) `cache_dir` when given.

    Returns (latents, cache file or None, whether it was read from the cache). With a cache the latents are a
    memory-mapped view of the file: index them (`x[idx]`, `x[a:b]`) to read rows.
    """
    if cache_dir is None:
        return encode_latents(image_set, vae, size, mode, seed, batch_size, progress), None, False
    from invgen.atomic import atomic_file

    key = cache_key(image_set, vae, size, mode, seed)
    path = Path(cache_dir) / f"latents-{key[:24]}.safetensors"
    names = [r.file_name for r in image_set.records]
    if path.is_file():
        latents = _open_cache(path, key, names)
        if latents is not None:
            return latents, path, True
    meta = {"key": key, "file_names": json.dumps(names), "size": str(size), "mode": mode,
            "root": str(image_set.root)}
    # Written to a temporary file renamed into place when complete: a killed encode leaves no cache behind.
    batches = iter_latents(image_set, vae, size, mode, seed, batch_size, progress)
    with atomic_file(path, "wb") as f:
        _write_streamed(f, (len(names), *latent_shape(vae, size)), batches, meta)
    latents = _open_cache(path, key, names)
    if latents is None:
        raise InvgenDataError(f"{path}: the latent cache just written could not be read back")
    return latents, path, False


__all__ = ["cached_latents", "encode_latents", "iter_latents", "latent_shape", "resize_center_crop", "vae_fingerprint",
           "vae_scale_factor"]
