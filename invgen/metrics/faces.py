"""Face detection and cropping for face attributes (gender, race, age), offline.

The audit protocols of the T2I bias literature classify a face crop rather than the whole image, keep the
largest face, and count an image without a face apart (`no_face`). This module does the detection and the
crop with OpenCV's frontal-face Haar cascade, whose XML ships inside the `opencv-python-headless` wheel, so
it needs no download. Detectors are pluggable (`FaceDetector`: image in, boxes out) and named in the registry
`DETECTORS` (a plug-in adds its own with `DETECTORS.register`); `load_detector(spec)` builds one from a
command-line spec:

- `default` or `haar`: OpenCV's bundled `haarcascade_frontalface_default.xml` (`cv2.data.haarcascades`);
- `haar:PATH`: another cascade XML file (for example one of OpenCV's other face cascades);
- `none`: no detector (`None`): every image counts as a face and is classified whole (non-face attributes).

Detection (`HaarDetector`), deterministic for a given image:

- the image goes to grayscale, histogram-equalized (after the resize below) as OpenCV's face samples do;
- it is resized so that its shorter side is at least `MIN_SIDE` (160) pixels and at most `MAX_SIDE` (640):
  the cascade's window is 24 pixels, so a small generated face (a 32-pixel image) must be upsampled before
  the cascade can fire on it, and a large image is shrunk to keep detection fast; boxes are mapped back to
  the original pixels;
- it gets a border of 15% of its shorter side on every side (`PAD`, its edge pixels repeated): the cascade
  needs the face's surroundings in its window, so without it a face that fills the picture, as in "a photo of
  the face of ..." samples, is missed;
- `detectMultiScale` runs with `scaleFactor=1.1` (10% steps between window sizes), `minNeighbors=5` (a face
  must be found by 5 overlapping windows: fewer false faces in texture and noise) and `minSize` = 10% of the
  shorter side of the resized image (at least the 24-pixel window): a face smaller than that is too small
  to classify anyway.

`crop_face` cuts a square around a box grown by `margin` on every side (0.25: a quarter of the face's size
on each side, as dlib's face chips used by FairFace pad), padded with black where it leaves the image.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from invgen.errors import InvgenConfigError, InvgenDataError, shown
from invgen.registry import Registry

Box = tuple[int, int, int, int]
"""A face box (x, y, w, h) in pixels of the image it was found in."""

DEFAULT_CASCADE = "haarcascade_frontalface_default.xml"

SCALE_FACTOR = 1.1
MIN_NEIGHBORS = 5
MIN_FACE = 0.1
"""Smallest face the detector reports, as a fraction of the shorter side of the (resized) image."""
MIN_SIDE = 160
MAX_SIDE = 640
PAD = 0.15
"""Border added on every side before detection, as a fraction of the shorter side (edge pixels repeated)."""
WINDOW = 24
"""The training window of OpenCV's frontal-face cascades, in pixels: no smaller face can be found."""


class FaceDetector(Protocol):
    def __call__(self, image: np.ndarray) -> list[Box]: ...


def _describe(image: Any) -> str:
    if isinstance(image, np.ndarray):
        return f"shape {tuple(image.shape)} and dtype {image.dtype}"
    return f"a {type(image).__name__}"


def check_image(image: Any, where: str = "") -> np.ndarray:
    """`image` if it is an (H, W, 3) uint8 RGB array with pixels; else one `InvgenDataError` sentence."""
    ok = (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[2] == 3
        and image.shape[0] > 0
        and image.shape[1] > 0
    )
    if not ok:
        raise InvgenDataError(f"{where}face detection needs an (H, W, 3) uint8 RGB image, got {_describe(image)}")
    return image


class HaarDetector:
    """An OpenCV cascade classifier with the documented, fixed detection parameters (module docstring)."""

    def __init__(
        self,
        path: str | Path,
        spec: str | None = None,
        scale_factor: float = SCALE_FACTOR,
        min_neighbors: int = MIN_NEIGHBORS,
        min_face: float = MIN_FACE,
        min_side: int = MIN_SIDE,
        max_side: int = MAX_SIDE,
        pad: float = PAD,
    ):
        cv2 = _import_cv2(spec or f"haar:{path}")
        self.path = str(path)
        self.spec = spec or f"haar:{path}"
        label = f"face detector '{shown(self.spec)}'"
        if not Path(self.path).is_file():
            raise InvgenConfigError(f"{label}: no cascade file {shown(self.path)}")
        self.cascade = cv2.CascadeClassifier()
        try:
            loaded = self.cascade.load(self.path)
        except cv2.error as e:
            raise InvgenConfigError(
                f"{label}: {shown(self.path)} is not a valid cascade XML ({getattr(e, 'err', None) or _last_line(e)})"
            ) from None
        if not loaded or self.cascade.empty():
            raise InvgenConfigError(f"{label}: {shown(self.path)} is not a valid cascade XML")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_face = min_face
        self.min_side = min_side
        self.max_side = max_side
        self.pad = pad

    def __repr__(self) -> str:
        return f"HaarDetector({self.spec!r})"

    def __call__(self, image: np.ndarray) -> list[Box]:
        import cv2

        image = check_image(image)
        height, width = image.shape[:2]
        short = min(height, width)
        scale = 1.0
        if short < self.min_side:
            scale = self.min_side / short
        elif short > self.max_side:
            scale = self.max_side / short
        gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        if scale != 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        min_size = max(WINDOW, round(self.min_face * min(gray.shape)))
        pad = round(self.pad * min(gray.shape))
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        found = self.cascade.detectMultiScale(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(min_size, min_size)
        )
        boxes = []
        for x, y, w, h in (np.asarray(found, dtype=np.float64).reshape(-1, 4) - [pad, pad, 0, 0]) / scale:
            # Back in the original pixels, kept inside the image.
            x0, y0 = min(max(round(x), 0), width - 1), min(max(round(y), 0), height - 1)
            boxes.append((x0, y0, max(1, min(round(w), width - x0)), max(1, min(round(h), height - y0))))
        return _largest_first(boxes)


def _last_line(e: BaseException) -> str:
    # OpenCV puts its own reason on the last line of a multi-line message.
    text = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    return text[-1] if text else type(e).__name__


def _import_cv2(spec: str) -> Any:
    try:
        import cv2
    except Exception as e:  # ImportError, or a broken binary (missing libGL with the non-headless wheel)
        raise InvgenConfigError(
            f"face detector '{shown(spec)}' needs OpenCV, which cannot be imported ({_last_line(e)}): "
            "pip install 'opencv-python-headless<5'"
        ) from None
    if not hasattr(cv2, "CascadeClassifier"):
        raise InvgenConfigError(
            f"face detector '{shown(spec)}' needs OpenCV's cascade classifier, which OpenCV "
            f"{getattr(cv2, '__version__', '?')} lacks (OpenCV 5 moved it out): pip install 'opencv-python-headless<5'"
        )
    return cv2


def _largest_first(boxes: Sequence[Sequence[Any]]) -> list[Box]:
    out = [(int(b[0]), int(b[1]), int(b[2]), int(b[3])) for b in boxes]
    # Ties in area go top-to-bottom, left-to-right, so the order never depends on the detector's.
    return sorted(out, key=lambda b: (-b[2] * b[3], b[1], b[0], b[2]))


def _takes_no_argument(arg: str, label: str) -> None:
    if arg:
        raise InvgenConfigError(f"face detector '{shown(label)}' takes no argument")


def _default_detector(arg: str, label: str = "default") -> FaceDetector:
    _takes_no_argument(arg, label)
    cv2 = _import_cv2(label)
    return HaarDetector(Path(cv2.data.haarcascades) / DEFAULT_CASCADE, spec=label)


def _haar_detector(arg: str, label: str = "haar") -> FaceDetector:
    if not arg:
        if label != "haar":  # `haar:` with nothing after the colon: a path was meant and is missing
            raise InvgenConfigError(f"face detector '{shown(label)}': give the cascade file after the colon "
                                    "(haar:PATH)")
        return _default_detector(arg, label)
    return HaarDetector(Path(arg).expanduser(), spec=label)


def _no_detector(arg: str, label: str = "none") -> None:
    _takes_no_argument(arg, label)
    return None


DETECTORS: Registry[FaceDetector | None] = Registry("face detector")
"""Face detectors by name; a factory takes the spec's argument and `label=` (the whole spec, for messages)."""
DETECTORS.register("default", _default_detector, help="OpenCV's bundled frontal-face Haar cascade")
DETECTORS.register("haar", _haar_detector, arg="PATH", arg_required=False,
                   help="a Haar cascade XML file (default: OpenCV's bundled frontal-face one)")
DETECTORS.register("none", _no_detector, help="no detector: every image is classified whole")


def load_detector(spec: str) -> FaceDetector | None:
    """A face detector from its spec (`default`, `haar`, `haar:PATH`, or a plug-in's), or None for `none`."""
    text = str(spec).strip()
    return DETECTORS.resolve(text, label=text)


@functools.lru_cache(maxsize=8)
def _cached_detector(spec: str) -> FaceDetector | None:
    return load_detector(spec)


def detect_faces(image: np.ndarray, detector: str | FaceDetector | None = "default") -> list[Box]:
    """The face boxes (x, y, w, h) in an (H, W, 3) uint8 RGB image, largest first.

    `detector` is a spec (see `load_detector`; a spec's detector is loaded once and kept) or a detector.
    With `none` (or None) the whole image is the one "face".
    """
    image = check_image(image)
    if isinstance(detector, str):
        detector = _cached_detector(detector.strip())
    if detector is None:
        return [(0, 0, image.shape[1], image.shape[0])]
    return _largest_first(detector(image))


def _check_size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise InvgenConfigError(f"the face crop size must be a whole number of pixels, 1 or more, got {size!r}")
    return int(size)


def _check_margin(margin: Any) -> float:
    ok = isinstance(margin, (int, float, np.floating)) and not isinstance(margin, bool) and math.isfinite(margin)
    if not ok or margin < 0:
        raise InvgenConfigError(f"the face crop margin must be a finite number, 0 or more, got {margin!r}")
    return float(margin)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size and image.shape[1] == size:
        return image.copy()
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC), dtype=np.uint8)


def crop_face(image: np.ndarray, box: Box, margin: float = 0.25, size: int | None = None) -> np.ndarray:
    """A square crop centered on `box`, its side the box's longer side grown by `margin` on each side.

    The side is `round(max(w, h) * (1 + 2 * margin))`; where the square leaves the image it is padded with
    black, so the face stays centered. With `size`, the crop is resized (bicubic) to (size, size).
    """
    image = check_image(image)
    try:
        x, y, w, h = (int(v) for v in box)
    except (TypeError, ValueError):
        raise InvgenDataError(f"a face box must be four integers (x, y, w, h), got {box!r}") from None
    if w < 1 or h < 1:
        raise InvgenDataError(f"a face box needs a width and height of 1 or more, got {box!r}")
    margin = _check_margin(margin)
    if size is not None:
        size = _check_size(size)
    side = max(1, math.floor(max(w, h) * (1 + 2 * margin) + 0.5))
    # Centers are half-integers at worst; rounding half up keeps the crop where a person would put it.
    x0 = math.floor(x + w / 2 - side / 2 + 0.5)
    y0 = math.floor(y + h / 2 - side / 2 + 0.5)
    height, width = image.shape[:2]
    crop = np.zeros((side, side, 3), dtype=np.uint8)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + side, width), min(y0 + side, height)
    if sx1 > sx0 and sy1 > sy0:
        crop[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return crop if size is None else _resize(crop, size)


def largest_faces(
    images: np.ndarray | Sequence[np.ndarray],
    detector: FaceDetector | str | None,
    margin: float = 0.25,
    size: int = 224,
) -> tuple[np.ndarray, np.ndarray]:
    """The largest face of each image, cropped (`crop_face`) and resized to (size, size).

    Returns (crops (N, size, size, 3) uint8, found (N,) bool); an image without a face has found False and
    an all-zero crop. With `detector` None every image is found and its crop is the whole image, resized.
    """
    size, margin = _check_size(size), _check_margin(margin)
    if isinstance(detector, str):
        detector = _cached_detector(detector.strip())
    if isinstance(images, np.ndarray) and images.ndim != 4:
        raise InvgenDataError(f"face detection needs images (N, H, W, 3) uint8, got {_describe(images)}")
    crops = np.zeros((len(images), size, size, 3), dtype=np.uint8)
    found = np.zeros(len(images), dtype=bool)
    for i, image in enumerate(images):
        image = check_image(image, where=f"image {i}: ")
        if detector is None:
            crops[i], found[i] = _resize(image, size), True
            continue
        boxes = _largest_first(detector(image))
        if boxes:
            crops[i], found[i] = crop_face(image, boxes[0], margin, size), True
    return crops, found
