"""The embedded benchmark: colored digits built from scikit-learn's bundled handwritten digits.

Target = digit (prompt "a photo of the digit 3"), bias = foreground color. Each digit has a majority
color (`d % K` for a palette of K colors); a training image gets it with probability `p_align` and one of
the other colors otherwise. The test set shows every test digit in every color, so it is balanced
(unbiased) and splits into bias-aligned and bias-conflicting subsets. The true color is kept as a
metadata column (`color`, with `color_index` and `bias_aligned`) for evaluation only: trainers never read
it (except for oracle groups, an upper bound).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from invgen.atomic import write_json
from invgen.data.builders import ForeignDataError
from invgen.data.imagefolder import METADATA, ImageRecord, write_imagefolder
from invgen.errors import InvgenDataError, shown

PALETTES: dict[str, list[tuple[str, tuple[int, int, int]]]] = {
    # Two hues far apart on the color wheel, both bright enough for the digit CNN.
    "two": [("red", (235, 45, 45)), ("green", (45, 215, 60))],
    # The ten hues of the Colored-MNIST debiasing literature.
    "ten": [
        ("red", (230, 25, 75)),
        ("green", (60, 180, 75)),
        ("yellow", (255, 225, 25)),
        ("blue", (0, 130, 200)),
        ("orange", (245, 130, 48)),
        ("purple", (145, 30, 180)),
        ("cyan", (70, 240, 240)),
        ("magenta", (240, 50, 230)),
        ("lime", (210, 245, 60)),
        ("pink", (250, 190, 212)),
    ],
}

PROMPT_TEMPLATE = "a photo of the digit {}"


def digit_prompt(d: int) -> str:
    return PROMPT_TEMPLATE.format(d)


def digit_prompts() -> list[str]:
    return [digit_prompt(d) for d in range(10)]


def palette(name: str) -> list[tuple[str, tuple[int, int, int]]]:
    if name not in PALETTES:
        raise InvgenDataError(f"unknown palette '{name}' (known: {', '.join(PALETTES)})")
    return PALETTES[name]


def majority_color(digit: int, num_colors: int) -> int:
    return digit % num_colors


def grayscale_digits(size: int) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as float arrays in [0, 1] of shape (N, size, size), and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x[:, 0].clamp(0, 1).numpy(), digits.target.astype(np.int64)


def split_indices(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train, test = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=labels)
    return np.sort(train), np.sort(test)


def colorize(gray: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    """Paint a [0, 1] grayscale digit in `color` on black: uint8 (H, W, 3)."""
    rgb = gray[..., None] * np.asarray(color, dtype=np.float32)[None, None, :]
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


@dataclass
class DigitsSplit:
    images: np.ndarray  # (N, H, W, 3) uint8
    records: list[ImageRecord]


def build_splits(
    p_align: float = 0.95,
    size: int = 16,
    palette_name: str = "two",
    seed: int = 0,
    test_fraction: float = 0.2,
) -> dict[str, DigitsSplit]:
    """Build the biased train split and the all-colors test split in memory (deterministic for a seed)."""
    if not 0.0 <= p_align <= 1.0:
        raise InvgenDataError(f"p_align must be in [0, 1], got {p_align}")
    if size < 8:
        raise InvgenDataError(f"size must be at least 8 pixels, got {size}")
    colors = palette(palette_name)
    k = len(colors)
    gray, labels = grayscale_digits(size)
    train_idx, test_idx = split_indices(labels, test_fraction, seed)
    rng = np.random.default_rng(seed)

    def record(i: int, d: int, c: int, tag: str) -> ImageRecord:
        return ImageRecord(
            file_name=f"{tag}_{i:04d}_{colors[c][0]}.png",
            prompt=digit_prompt(d),
            label=d,
            attributes={
                "color": colors[c][0],
                "color_index": c,
                "bias_aligned": c == majority_color(d, k),
                "source_index": i,
            },
        )

    train_images, train_records = [], []
    for i in train_idx:
        d = int(labels[i])
        major = majority_color(d, k)
        if rng.random() < p_align:
            c = major
        else:
            others = [j for j in range(k) if j != major]
            c = int(others[rng.integers(len(others))])
        train_images.append(colorize(gray[i], colors[c][1]))
        train_records.append(record(int(i), d, c, "train"))
    test_images, test_records = [], []
    for i in test_idx:
        d = int(labels[i])
        for c in range(k):
            test_images.append(colorize(gray[i], colors[c][1]))
            test_records.append(record(int(i), d, c, "test"))
    return {
        "train": DigitsSplit(np.stack(train_images), train_records),
        "test": DigitsSplit(np.stack(test_images), test_records),
    }


SPLITS = ("train", "test")
STAMP = "dataset.json"


def _read_stamp(stamp: Path) -> dict | None:
    try:
        built = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return built if isinstance(built, dict) and built.get("builder") == "colored_digits" else None


def _check_replaceable(out: Path, built: dict | None) -> None:
    """Raise `ForeignDataError` unless everything a rebuild replaces was written by this builder.

    Proof is the stamp it writes last plus split folders that hold exactly what their metadata lists;
    an empty folder loses nothing when replaced.
    """
    from invgen.data.imagefolder import unlisted_files

    if (out / STAMP).exists() and built is None:
        raise ForeignDataError(out / STAMP)
    for name in SPLITS:
        split = out / name
        if not split.exists() or (split.is_dir() and not any(split.iterdir())):
            continue
        if built is None or not split.is_dir() or unlisted_files(split):
            raise ForeignDataError(split)


def make_colored_digits(
    out: str | os.PathLike,
    p_align: float = 0.95,
    size: int = 16,
    palette_name: str = "two",
    seed: int = 0,
    test_fraction: float = 0.2,
    overwrite: bool = False,
) -> Path:
    """Write `out/train` and `out/test` as imagefolders; an existing complete set is reused.

    A set this builder made with other parameters is rebuilt. Folders it did not make are replaced only
    with `overwrite=True`; otherwise `ForeignDataError` names the first one.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvgenDataError(f"{shown(out)} is a file, not a folder to build the digits set in")
    params = {
        "builder": "colored_digits",
        "p_align": p_align,
        "size": size,
        "palette": palette_name,
        "seed": seed,
        "test_fraction": test_fraction,
    }
    stamp = out / STAMP
    built = _read_stamp(stamp)
    if not overwrite and built == params and all((out / name / METADATA).is_file() for name in SPLITS):
        return out
    if not overwrite:
        _check_replaceable(out, built)
    splits = build_splits(p_align, size, palette_name, seed, test_fraction)
    try:
        for name, split in splits.items():
            write_imagefolder(out / name, list(split.images), split.records)
        # The stamp is written last: its presence means both splits are complete.
        write_json(stamp, params)
    except OSError as e:
        from invgen.atomic import write_error

        raise write_error(out, e) or InvgenDataError(f"cannot write {shown(out)}: {e.strerror or e}") from None
    return out
