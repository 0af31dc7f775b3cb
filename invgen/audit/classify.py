"""Per-image readings of an audit: the face (largest, cropped with a margin), each attribute part's value, and
the quality scores (CLIP score against the prompt; closeness to the base model's image from the same seed).

Images are read back from the audit's imagefolder in fixed chunks, so memory stays flat on large audits and
the readings are the same whichever process count or resume produced the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from invgen.errors import InvgenConfigError, InvgenDataError, InvgenError, shown
from invgen.metrics.fairness import UNREADABLE

CHUNK = 256
"""Images read, detected and classified at a time."""


@dataclass
class AuditModels:
    """What reads the images: the face detector (None: whole images), one classifier per attribute part, and
    the open_clip bundle for the quality scores (None: no CLIP score)."""

    detector: Any
    classifiers: dict[str, Any]
    clip: Any = None


@dataclass
class Predictions:
    """One reading per image, in the order of the image set's metadata.jsonl."""

    file_names: list[str]
    prompts: list[str]
    seeds: list[int | None]
    found: np.ndarray  # (N,) bool: a face was found (always True without a detector)
    boxes: np.ndarray  # (N, 4) int x, y, w, h of the face kept; -1 without one
    parts: dict[str, np.ndarray]  # part -> (N,) value index in the suite's order; UNREADABLE without a value
    clip_score: np.ndarray | None = None  # (N,) CLIP-T, torchmetrics' scale (100 · cos)
    clip_i: np.ndarray | None = None  # (N,) cosine of CLIP image features to the base image
    pixel: np.ndarray | None = None  # (N,) 1 − mean |image − base| on [0, 1] pixels
    ssim: np.ndarray | None = None  # (N,) SSIM to the base image
    image_size: tuple[int, int] = (0, 0)
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.file_names)


# ----------------------------------------------------------------------------------------------- loading
def _suite_order(clf: Any, part: Any, spec: str) -> np.ndarray:
    """Index map from the classifier's values to the suite attribute's order (reports list values that way)."""
    names = [str(n) for n in clf.names]
    if sorted(names) != sorted(part.values):
        raise InvgenConfigError(f"the classifier '{spec}' reads the values {', '.join(names)}, but the attribute "
                                f"'{part.name}' has {', '.join(part.values)}")
    return np.array([part.values.index(n) for n in names], dtype=np.int64)


class _InSuiteOrder:
    """A classifier whose indices follow the suite's value order."""

    def __init__(self, clf: Any, order: np.ndarray, values: Sequence[str]):
        self.clf, self.order, self.names = clf, order, list(values)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        raw = np.asarray(self.clf(images), dtype=np.int64)
        if raw.shape != (len(images),) or (len(raw) and (raw.min() < UNREADABLE or raw.max() >= len(self.order))):
            raise InvgenError(f"the classifier returned {raw.shape} values outside 0..{len(self.order) - 1} "
                              f"for {len(images)} images")
        return np.where(raw == UNREADABLE, UNREADABLE, self.order[np.maximum(raw, 0)])


def load_models(plan: Any) -> AuditModels:
    """Load the detector, the classifiers and the CLIP bundle of `plan`; a CLIP model is loaded once."""
    from invgen.metrics.classifiers import load_classifier
    from invgen.metrics.classifiers.clip import ClipZeroShot
    from invgen.metrics.faces import load_detector
    from invgen.models.clip import load_open_clip
    from invgen.registry import split_spec

    detector = load_detector(plan.detector) if plan.uses_faces else None
    bundles: dict[str, Any] = {}
    classifiers = {}
    for part, spec in zip(plan.parts, plan.classifiers, strict=True):
        name, arg = split_spec(spec)
        if name == "clip" and arg in bundles:
            clf = ClipZeroShot(bundles[arg], part.prompts, attribute=part.name)
        else:
            clf = load_classifier(spec, attribute=part.name, prompts=part.prompts if name == "clip" else None,
                                  model_name=plan.clip_model, device=plan.device)
            if isinstance(clf, ClipZeroShot):
                bundles[arg] = clf.bundle
        classifiers[part.name] = _InSuiteOrder(clf, _suite_order(clf, part, spec), part.values)
    clip = None
    if plan.clip:
        clip = bundles.get(plan.clip) or load_open_clip(plan.clip, model_name=plan.clip_model, device=plan.device)
    return AuditModels(detector, classifiers, clip)


# ----------------------------------------------------------------------------------------------- reading
def _read_chunk(root: Path, records: Sequence[Any], start: int) -> np.ndarray:
    from invgen.data.imagefolder import METADATA, load_image_array

    arrays = [load_image_array(root / r.file_name, f"{shown(root / METADATA)}:{start + i + 1}")
              for i, r in enumerate(records)]
    if len({a.shape for a in arrays}) > 1:
        raise InvgenDataError(f"{shown(root)}: the images do not all have the same size")
    return np.stack(arrays)


def _faces(images: np.ndarray, models: AuditModels, plan: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(crops of the images with a face, found (N,), boxes (N, 4)); whole images without a detector."""
    n = len(images)
    boxes = np.full((n, 4), -1, dtype=np.int64)
    if models.detector is None:
        return images, np.ones(n, dtype=bool), boxes
    from invgen.metrics.faces import crop_face, detect_faces

    crops, found = [], np.zeros(n, dtype=bool)
    for i, image in enumerate(images):
        found_boxes = detect_faces(image, detector=models.detector)
        if found_boxes:
            box = tuple(int(v) for v in found_boxes[0])  # largest first
            boxes[i], found[i] = box, True
            crops.append(crop_face(image, box, margin=plan.face_margin, size=plan.face_size))
    size = plan.face_size
    return (np.stack(crops) if crops else np.zeros((0, size, size, 3), dtype=np.uint8)), found, boxes


def _pixel_closeness(images: np.ndarray, base: np.ndarray, batch: int = 16) -> tuple[np.ndarray, np.ndarray | None]:
    """Per image: 1 − mean absolute difference (pixels in [0, 1]) and SSIM (None below 7 px a side).

    In batches of `batch` images, so that large images in double precision stay within memory."""
    import torch
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    side = min(images.shape[1:3])
    kernel = min(11, side - 1 if side % 2 == 0 else side)  # the Gaussian window must fit in the image
    pixel, similarity = [], []
    for start in range(0, len(images), batch):
        a = torch.from_numpy(images[start : start + batch]).permute(0, 3, 1, 2).double() / 255.0
        b = torch.from_numpy(base[start : start + batch]).permute(0, 3, 1, 2).double() / 255.0
        pixel.append((1.0 - (a - b).abs().mean(dim=(1, 2, 3))).numpy())
        if side >= 7:
            values = ssim(a, b, data_range=1.0, kernel_size=kernel, reduction="none")
            similarity.append(values.reshape(len(a)).numpy())
    return np.concatenate(pixel), (np.concatenate(similarity) if side >= 7 else None)


def analyze(
    root: str | Path,
    plan: Any,
    models: AuditModels,
    base_root: str | Path | None = None,
    chunk: int = CHUNK,
    progress: bool = True,
) -> Predictions:
    """Read every image of the set `root` (and, for closeness, the base set with the same file names)."""
    from tqdm.auto import tqdm

    from invgen.data.imagefolder import read_metadata

    root = Path(root)
    records = read_metadata(root)
    base_records = read_metadata(base_root) if base_root is not None else None
    if base_records is not None and [r.file_name for r in base_records] != [r.file_name for r in records]:
        raise InvgenDataError(f"{shown(base_root)} does not hold the same images as {shown(root)}")
    n = len(records)
    prompts = [r.prompt for r in records]
    found = np.zeros(n, dtype=bool)
    boxes = np.full((n, 4), -1, dtype=np.int64)
    parts = {name: np.full(n, UNREADABLE, dtype=np.int64) for name in models.classifiers}
    clip_score = np.zeros(n) if models.clip is not None else None
    clip_i = np.zeros(n) if models.clip is not None and base_records is not None else None
    pixel = np.zeros(n) if base_records is not None else None
    ssim: np.ndarray | None = np.zeros(n) if base_records is not None else None
    text_features = None
    if models.clip is not None:
        unique = list(dict.fromkeys(prompts))
        row = {p: i for i, p in enumerate(unique)}
        text_features = models.clip.encode_texts(unique)
    size = (0, 0)
    what = "detecting faces and classifying" if models.detector is not None else "classifying"
    for start in tqdm(range(0, n, chunk), desc=what, disable=not progress, leave=False):
        sl = slice(start, min(start + chunk, n))
        images = _read_chunk(root, records[sl], start)
        size = images.shape[1:3]
        crops, found[sl], boxes[sl] = _faces(images, models, plan)
        index = np.flatnonzero(found[sl]) + start
        for name, clf in models.classifiers.items():
            if len(crops):
                parts[name][index] = clf(crops)
        if models.clip is not None:
            f = models.clip.encode_images(images)
            t = text_features[[row[p] for p in prompts[sl]]]
            # invgen.metrics.quality.clip_score, kept per image (CHUNK is a multiple of its batch of 64, so the
            # features, and the figures, are the same as `invgen metrics --clip` gives).
            clip_score[sl] = (100.0 * (f * t).sum(dim=-1).clamp_min(0.0)).double().numpy()
        if base_records is not None:
            base = _read_chunk(Path(base_root), base_records[sl], start)
            if base.shape != images.shape:
                raise InvgenDataError(f"{shown(base_root)}: the base images are not the size of the audited ones")
            pixel[sl], s = _pixel_closeness(images, base)
            if s is None:
                ssim = None
            elif ssim is not None:
                ssim[sl] = s
            if clip_i is not None:
                clip_i[sl] = (f * models.clip.encode_images(base)).sum(dim=-1).double().numpy()
    return Predictions(
        file_names=[r.file_name for r in records], prompts=prompts, seeds=[r.extra.get("seed") for r in records],
        found=found, boxes=boxes, parts=parts, clip_score=clip_score, clip_i=clip_i, pixel=pixel, ssim=ssim,
        image_size=(int(size[0]), int(size[1])),
    )
