"""Image sets on disk in the `datasets` imagefolder layout: image files plus `metadata.jsonl`.

Each metadata line is a JSON object with at least `file_name` and `prompt`; `label` (int) is optional.
Every other key is a column, as `datasets.load_dataset("imagefolder", data_dir=...)` reads it back:
`{"file_name": "0.png", "prompt": "a photo of a nurse", "gender": "woman"}` has the attribute `gender`.
An attribute is read with `ImageRecord.attribute` / `ImageSet.attribute`, never from a dict directly.

Two forms are read. Besides top-level columns, the form invgen wrote before, a nested `attributes`
mapping (`{"attributes": {"gender": "woman"}}`), still reads, so old sets and old runs keep working;
a name in both places with different values is an error naming the line and the column.

On read, the nested mapping lands in `ImageRecord.attributes` and every other top-level column in
`ImageRecord.extra` (provenance such as `seed` as well as attributes: a file cannot tell them apart).
Writers set image attributes in `attributes` and provenance in `extra`; both are written as top-level
columns, so a set round-trips byte for byte and loads with `datasets` with one column per attribute. The
reserved names `file_name`, `prompt`, `label` and `attributes` cannot be columns of either. Reading
validates everything and raises `InvgenDataError` naming the file and line; writing is atomic.
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
# Keys with a fixed meaning in a metadata line; no attribute or provenance column may take one of them.
RESERVED = ("file_name", "prompt", "label", "attributes")
_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    # JSON tells 1, 1.0 and true apart, so the same column must not hold them in two places either; NaN
    # (which Python's json reads) equals itself here.
    return type(a) is type(b) and (a == b or (a != a and b != b))


@dataclass
class ImageRecord:
    """One image of a set: its file, prompt, optional class label and further columns.

    `attributes` are what the image shows (color, gender), `extra` is provenance (seed, index); both are
    written as top-level columns. On read, the older nested `attributes` mapping lands in `attributes` and
    every other column in `extra`, so read an attribute with `attribute(name)`, which looks in both.
    """

    file_name: str
    prompt: str
    label: int | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    line: int | None = field(default=None, compare=False, repr=False)  # its line in metadata.jsonl, when read

    def where(self, meta: str = METADATA) -> str:
        """`meta` and this record's line (or its file name for a record not read from a file), for errors."""
        return f"{meta}:{self.line}" if self.line is not None else f"{meta} ({shown(self.file_name)})"

    def has_attribute(self, name: str) -> bool:
        """Whether `name` is a column of this record, in either form."""
        return name in self.extra or name in self.attributes

    def attribute(self, name: str, where: str | None = None, default: Any = _MISSING) -> Any:
        """The value of attribute `name`: a top-level column or, in the older form, under `attributes`.

        Without `default`, a missing attribute raises `InvgenDataError` starting with `where` (default:
        metadata.jsonl and the record's line); so does a name whose two places hold different values.
        """
        if name in self.extra:
            value = self.extra[name]
            if name in self.attributes and not _same(value, self.attributes[name]):
                raise InvgenDataError(
                    f"{where or self.where()}: column {name!r} is {value!r} at the top level but "
                    f"{self.attributes[name]!r} under 'attributes'"
                )
            return value
        if name in self.attributes:
            return self.attributes[name]
        if default is not _MISSING:
            return default
        raise InvgenDataError(
            f"{where or self.where()}: no attribute {name!r} (neither a top-level column nor under 'attributes')"
        )

    def to_json(self, where: str | None = None) -> dict[str, Any]:
        """The metadata line: `file_name`, `prompt`, `label`, then attributes and extra as top-level columns."""
        out: dict[str, Any] = {"file_name": self.file_name, "prompt": self.prompt}
        if self.label is not None:
            out["label"] = self.label
        columns: dict[str, Any] = {}
        for source, mapping in (("attributes", self.attributes), ("extra", self.extra)):
            for name, value in mapping.items():
                if not isinstance(name, str):
                    raise InvgenDataError(f"{where or self.where()}: column name {name!r} in {source} is not a string")
                if name in RESERVED:
                    raise InvgenDataError(
                        f"{where or self.where()}: {source} column {name!r} clashes with the reserved key {name!r} "
                        f"of metadata.jsonl ({', '.join(RESERVED)}); rename it"
                    )
                if name in columns and not _same(columns[name], value):
                    raise InvgenDataError(
                        f"{where or self.where()}: column {name!r} is {columns[name]!r} in attributes but "
                        f"{value!r} in extra"
                    )
                columns[name] = value
        out.update(columns)
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

    def where(self, i: int) -> str:
        """The metadata file and line of record `i`, for errors."""
        line = self.records[i].line
        return f"{shown(self.root / METADATA)}:{i + 1 if line is None else line}"

    def has_attribute(self, name: str) -> bool:
        """Whether every record has attribute `name` (in either form)."""
        return all(r.has_attribute(name) for r in self.records)

    def attribute(self, name: str) -> list[Any]:
        """Attribute `name` of every record (see `ImageRecord.attribute`); a record without it is an error."""
        return [r.attribute(name, self.where(i)) for i, r in enumerate(self.records)]

    def tensor(self):
        """Images as a float tensor (N, C, H, W) in [-1, 1], the range diffusion models train on."""
        from invgen.pixels import to_signed

        if self.images is None:
            raise InvgenDataError(f"{self.root}: images were not loaded")
        return to_signed(self.images)


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
    record = ImageRecord(name, prompt, label, attributes, obj, line=lineno)
    for key in attributes:
        record.attribute(key, f"{meta}:{lineno}")  # a column in both forms must agree
    return record


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
    # Made before the temporary folder, so that an error names the set's own metadata.jsonl.
    lines = _metadata_lines(out / METADATA, records)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for image, rec in zip(images, records, strict=True):
            target = tmp / rec.file_name
            target.parent.mkdir(parents=True, exist_ok=True)
            _save_png(image, target)
        _write_lines(tmp / METADATA, lines)
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


def _metadata_lines(meta: Path, records: Iterable[ImageRecord]) -> list[str]:
    """The JSON lines of `records`; a value JSON cannot hold (NaN, infinity) or a bad column raises, naming `meta`."""
    return [json_text(rec.to_json(f"{shown(meta)}:{i}"), f"{meta}:{i}") for i, rec in enumerate(records, start=1)]


def _write_lines(meta: Path, lines: list[str]) -> None:
    with atomic_file(meta, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")


def write_metadata(root: str | os.PathLike, records: Iterable[ImageRecord]) -> None:
    meta = Path(root) / METADATA
    # Every line is made first, so a bad line is refused before anything is written.
    _write_lines(meta, _metadata_lines(meta, records))


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
