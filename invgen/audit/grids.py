"""Image grids of an audit: the first images of each prompt, each labelled with its predicted value (or
"no face"), the face kept outlined. One PNG per prompt under `grids/`, written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from invgen.atomic import atomic_file

CELL = 128  # px a side: tiny images are enlarged (nearest neighbour) so that the label stays readable
LABEL_HEIGHT = 16
COLUMNS = 8


def image_label(pred: Any, i: int, values: dict[str, Sequence[str]]) -> str:
    """The label of image i: its value ("male|White" for a joint attribute), "no face" or "unreadable"."""
    if not pred.found[i]:
        return "no face"
    parts = [values[name][idx[i]] if idx[i] >= 0 else "?" for name, idx in pred.parts.items()]
    return "unreadable" if all(p == "?" for p in parts) else "|".join(parts)


def _cell(image: np.ndarray, box: np.ndarray, label: str, font: Any) -> Image.Image:
    h, w = image.shape[:2]
    scale = CELL / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.NEAREST if scale >= 2 else Image.BILINEAR
    picture = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).convert("RGB").resize(size, resample)
    cell = Image.new("RGB", (CELL, CELL + LABEL_HEIGHT), "white")
    cell.paste(picture, ((CELL - size[0]) // 2, (CELL - size[1]) // 2))
    draw = ImageDraw.Draw(cell)
    if box[0] >= 0:
        x, y, bw, bh = (float(v) * scale for v in box)
        ox, oy = (CELL - size[0]) // 2, (CELL - size[1]) // 2
        draw.rectangle([ox + x, oy + y, ox + x + bw, oy + y + bh], outline=(255, 215, 0), width=2)
    color = (160, 0, 0) if label in ("no face", "unreadable") else (0, 0, 0)
    draw.text((3, CELL + 2), label[:24], fill=color, font=font)
    return cell


def write_grid(path: Path, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray], labels: Sequence[str]) -> None:
    """One grid PNG of labelled cells, COLUMNS to a row."""
    font = ImageFont.load_default()
    cols = min(COLUMNS, len(images))
    rows = -(-len(images) // cols)
    grid = Image.new("RGB", (cols * CELL, rows * (CELL + LABEL_HEIGHT)), "white")
    for k, (image, box, label) in enumerate(zip(images, boxes, labels, strict=True)):
        grid.paste(_cell(image, box, label, font), ((k % cols) * CELL, (k // cols) * (CELL + LABEL_HEIGHT)))
    with atomic_file(path, "wb") as f:
        grid.save(f, format="PNG")


def write_grids(out: Path, root: Path, pred: Any, values: dict[str, Sequence[str]], per_prompt: int,
                progress: bool = True) -> dict[str, str]:
    """A grid of the first `per_prompt` images of every prompt in `out/grids/`; returns prompt → relative path."""
    from tqdm.auto import tqdm

    from invgen.data.imagefolder import load_image_array

    if per_prompt <= 0:
        return {}
    by_prompt: dict[str, list[int]] = {}
    for i, prompt in enumerate(pred.prompts):
        by_prompt.setdefault(prompt, []).append(i)
    written = {}
    for k, (prompt, index) in enumerate(tqdm(by_prompt.items(), desc="grids", disable=not progress, leave=False)):
        chosen = index[:per_prompt]
        images = [load_image_array(root / pred.file_names[i], str(root)) for i in chosen]
        rel = f"grids/{k:03d}.png"
        write_grid(out / rel, images, [pred.boxes[i] for i in chosen], [image_label(pred, i, values) for i in chosen])
        written[prompt] = rel
    return written
