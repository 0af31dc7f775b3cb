"""Image sets on disk in the `datasets` imagefolder layout: image files plus `metadata.jsonl`.

Each metadata line is a JSON object with at least `file_name` and `prompt`; `label` (int) and
`attributes` (a mapping) are optional, and any other key is kept as is. Reading validates everything and
raises `InvgenDataError` naming the file and line; writing is atomic.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from invgen.atomic import atomic_dir, atomic_file, json_text
from invgen.errors import InvgenDataError, shown

METADATA = "metadata.jsonl"


@dataclass
class ImageRecord:
    file_name: str
    prompt: str
    label: int | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file_name": self.file_name, "prompt": self.prompt}
        if self.label is not None:
            out["label"] = self.label
        if self.attributes:
            out["attributes"] = self.attributes
        out.update(self.extra)
        return out


@dataclass
class ImageSet:
    """A validated image set: records plus (optionally) the decoded images as uint8 HxWxC arrays."""

    root: Path
    records: list[ImageRecord]
    images: np.ndarray | None = None  # (N, H, W, C) uint8 when loaded

    def __len__(self) -> int:
        return len(self.records)

    @property
    def prompts(self) -> list[str]:
        return [r.prompt for r in self.records]

    @property
    def labels(self) -> np.ndarray:
        if any(r.label is None for r in self.records):
            raise InvgenDataError(f"{shown(self.root / METADATA)}: some records have no 'label'")
        return np.array([r.label for r in self.records], dtype=np.int64)

    def attribute(self, name: str) -> list[Any]:
        values = []
        for i, r in enumerate(self.records):
            if name not in r.attributes:
                raise InvgenDataError(f"{shown(self.root / METADATA)}:{i + 1}: no attribute {name!r}")
            values.append(r.attributes[name])
        return values

    def tensor(self):
        """Images as a float tensor (N, C, H, W) in [-1, 1], the range diffusion models train on."""
        import torch

        if self.images is None:
            raise InvgenDataError(f"{self.root}: images were not loaded")
        return torch.from_numpy(self.images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _parse_record(line: str, meta: str, lineno: int) -> ImageRecord:
    """One metadata line as a record; `meta` is the metadata path as shown in messages."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise InvgenDataError(f"{meta}:{lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise InvgenDataError(f"{meta}:{lineno}: expected a JSON object, got {type(obj).__name__}")
    name = obj.pop("file_name", None)
    if not isinstance(name, str) or not name:
        raise InvgenDataError(f"{meta}:{lineno}: missing or empty 'file_name'")
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise InvgenDataError(f"{meta}:{lineno}: 'file_name' must be a path inside the folder, got {name!r}")
    prompt = obj.pop("prompt", None)
    if not isinstance(prompt, str):
        raise InvgenDataError(f"{meta}:{lineno}: missing 'prompt' (a string) for {shown(name)}")
    label = obj.pop("label", None)
    if label is not None and (isinstance(label, bool) or not isinstance(label, int)):
        raise InvgenDataError(f"{meta}:{lineno}: 'label' must be an integer, got {label!r}")
    attributes = obj.pop("attributes", {})
    if not isinstance(attributes, dict):
        raise InvgenDataError(f"{meta}:{lineno}: 'attributes' must be a mapping, got {attributes!r}")
    return ImageRecord(name, prompt, label, attributes, obj)


def read_metadata(root: str | os.PathLike) -> list[ImageRecord]:
    root = Path(root)
    if not root.is_dir():
        raise InvgenDataError(f"{shown(root)}: no such image folder")
    meta = root / METADATA
    if not meta.is_file():
        raise InvgenDataError(f"{shown(root)}: no {METADATA} (an image set needs one line per image)")
    where = shown(meta)  # a newline in a folder name must not split the one-line error
    records = []
    seen: dict[str, int] = {}
    with open(meta, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InvgenDataError(f"{where}:{lineno}: not UTF-8 text (byte {e.start + 1})") from None
            if not line.strip():
                continue
            rec = _parse_record(line, where, lineno)
            if rec.file_name in seen:
                raise InvgenDataError(
                    f"{where}:{lineno}: {shown(rec.file_name)} is listed twice (first on line {seen[rec.file_name]})"
                )
            seen[rec.file_name] = lineno
            records.append(rec)
    if not records:
        raise InvgenDataError(f"{where}: the image set is empty")
    return records


def _load_image(path: Path, where: str) -> Image.Image:
    if not path.is_file():
        raise InvgenDataError(f"{where}: image {shown(path.name)} does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InvgenDataError(f"{where}: image {shown(path.name)} is unreadable or truncated ({e})") from None


def _to_array(im: Image.Image, mode: str) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: scale to 8 bit instead of clipping, so bright pixels stay bright.
        arr = np.asarray(im, dtype=np.float64)
        # A 16-bit PNG spans 0..65535 even when it is dark; only 32-bit "I" images need a guess of their range.
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if im.mode in ("RGBA", "LA", "P"):
        # Transparent pixels become black, the background of every embedded set.
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(bg, im)
    arr = np.asarray(im.convert(mode), dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def read_imagefolder(
    root: str | os.PathLike,
    load_images: bool = True,
    mode: str | None = "RGB",
    size: int | tuple[int, int] | None = None,
    strict_size: bool = True,
) -> ImageSet:
    """Read and validate an image set.

    `mode` converts every image ("RGB" or "L"); with `mode=None` all images must already share one mode.
    All images must share one size (or equal `size` when given) unless `strict_size=False`, in which case
    they are resized to `size`.
    """
    root = Path(root)
    records = read_metadata(root)
    if not load_images:
        for lineno, rec in enumerate(records, start=1):
            if not (root / rec.file_name).is_file():
                raise InvgenDataError(f"{shown(root / METADATA)}:{lineno}: image {shown(rec.file_name)} does not exist")
        return ImageSet(root, records)
    want = (size, size) if isinstance(size, int) else size
    arrays = []
    first_mode = None
    for lineno, rec in enumerate(records, start=1):
        where = f"{shown(root / METADATA)}:{lineno}"
        im = _load_image(root / rec.file_name, where)
        if mode is None:
            first_mode = first_mode or im.mode
            if im.mode != first_mode:
                raise InvgenDataError(
                    f"{where}: image {shown(rec.file_name)} has mode {im.mode}, the set has {first_mode}"
                )
        if want is None:
            want = im.size
        if im.size != want:
            if strict_size:
                raise InvgenDataError(
                    f"{where}: image {shown(rec.file_name)} is {im.size[0]}x{im.size[1]}, expected {want[0]}x{want[1]}"
                )
            im = im.resize(want, Image.BICUBIC)
        arrays.append(_to_array(im, mode or im.mode))
    return ImageSet(root, records, np.stack(arrays))


def _save_png(image: Image.Image | np.ndarray, path: Path) -> None:
    if isinstance(image, np.ndarray):
        arr = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
        image = Image.fromarray(arr)
    with atomic_file(path, "wb") as f:
        image.save(f, format="PNG")


def write_imagefolder(
    out: str | os.PathLike,
    images: Sequence[Image.Image | np.ndarray],
    records: Sequence[ImageRecord],
    overwrite: bool = True,
) -> Path:
    """Write a whole image set atomically: the folder appears complete or not at all."""
    if len(images) != len(records):
        raise ValueError(f"{len(images)} images but {len(records)} records")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvgenDataError(f"{shown(out)} is a file, not a folder for an image set")
    if out.exists() and not overwrite:
        raise InvgenDataError(f"{shown(out)} already exists; pass overwrite=True to replace it")
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for image, rec in zip(images, records, strict=True):
            target = tmp / rec.file_name
            target.parent.mkdir(parents=True, exist_ok=True)
            _save_png(image, target)
        write_metadata(tmp, records)
    return out


def unlisted_files(root: str | os.PathLike) -> list[Path]:
    """Files under the set `root` that its `metadata.jsonl` does not list: what replacing the set would lose.

    Without a readable metadata file every file counts. Writers call this before replacing a folder, so
    that an image set is replaced only when it holds nothing but what its metadata describes.
    """
    root = Path(root)
    try:
        listed = {rec.file_name for rec in read_metadata(root)} | {METADATA}
    except InvgenDataError:
        listed = set()
    return sorted(p for p in root.rglob("*") if not p.is_dir() and p.relative_to(root).as_posix() not in listed)


def write_metadata(root: str | os.PathLike, records: Iterable[ImageRecord]) -> None:
    meta = Path(root) / METADATA
    # Every line is made first, so a value JSON cannot hold (NaN, infinity) is refused before anything is written.
    lines = [json_text(rec.to_json(), f"{meta}:{i}") for i, rec in enumerate(records, start=1)]
    with atomic_file(meta, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")


def save_image(image: Image.Image | np.ndarray, path: str | os.PathLike) -> None:
    """Write one PNG atomically (used by resumable writers that add images one by one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_png(image, path)


def load_image_array(path: str | os.PathLike, where: str, mode: str = "RGB", transform=None) -> np.ndarray:
    """One image as uint8 (H, W, C) in `mode`, after an optional PIL `transform` (e.g. resize and crop).

    For readers that stream large sets instead of holding every image (`read_imagefolder` does); a
    missing or unreadable file raises `InvgenDataError` naming `where` (the metadata file and line).
    """
    im = _load_image(Path(path), where)
    if transform is not None:
        im = transform(im)
    return _to_array(im, mode)
