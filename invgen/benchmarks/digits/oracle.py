"""The colored digits' exact color reader, registered as the classifier `oracle:color[:PALETTE]`, and the
exact 'caption' it gives the T2I measures."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.colors import rgb_to_hsv

from invgen.errors import InvgenConfigError, InvgenError
from invgen.metrics.classifiers import CLASSIFIERS
from invgen.metrics.fairness import UNREADABLE
from invgen.registry import split_spec


class ColorOracle:
    """Pixel rule for synthetic sets: the circular mean hue of the bright pixels, nearest palette hue.

    Exact on the embedded benchmark (every foreground pixel has the painted hue), so a bias figure read
    with it carries no classifier error. An image whose bright pixels have (almost) no color, such as an
    all-black or gray one, has no hue: it is `UNREADABLE`, not the palette color nearest hue 0 (red).
    """

    attribute = "color"

    def __init__(self, palette_name: str = "two", bright_fraction: float = 0.5, min_chroma: float = 0.05):
        from invgen.benchmarks.digits.data import palette as get_palette

        colors = get_palette(palette_name)
        self.palette_name = palette_name
        self.names = [name for name, _ in colors]
        rgb = np.array([c for _, c in colors], dtype=np.float64) / 255.0
        self.hues = rgb_to_hsv(rgb)[:, 0] * 2 * np.pi
        self.bright_fraction = bright_fraction
        # Mean chroma (max - min channel, 0..1) the bright pixels need for their hue to mean anything;
        # 0.05 is about 13 levels of 255, far below any painted color and above 8-bit rounding noise.
        self.min_chroma = min_chroma

    def hue(self, images: np.ndarray) -> np.ndarray:
        """Mean hue angle (radians) of each image's bright pixels; NaN for an image without color."""
        x = np.asarray(images, dtype=np.float64) / 255.0
        if x.ndim != 4 or x.shape[-1] != 3:
            raise InvgenError(f"the color oracle needs RGB images (N, H, W, 3), got shape {x.shape}")
        hsv = rgb_to_hsv(x)
        value = hsv[..., 2]
        top = value.reshape(len(x), -1).max(axis=1)[:, None, None]
        bright = value >= self.bright_fraction * top
        weight = np.where(bright, value * hsv[..., 1], 0.0)  # value x saturation: the pixel's chroma
        angle = hsv[..., 0] * 2 * np.pi
        s = (weight * np.sin(angle)).sum(axis=(1, 2))
        c = (weight * np.cos(angle)).sum(axis=(1, 2))
        chroma = weight.sum(axis=(1, 2)) / np.maximum(bright.sum(axis=(1, 2)), 1)
        return np.where(chroma >= self.min_chroma, np.arctan2(s, c), np.nan)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        h = self.hue(images)[:, None]
        dist = np.abs(np.angle(np.exp(1j * (np.nan_to_num(h) - self.hues[None, :]))))
        return np.where(np.isnan(h[:, 0]), UNREADABLE, dist.argmin(axis=1)).astype(np.int64)

    def object_extractor(self) -> DigitsOracleExtractor:
        """What the T2I measures read from each image when no captioner is given."""
        return DigitsOracleExtractor(self.palette_name)


class DigitsOracleExtractor:
    """The colored digits' exact 'caption': {"digit", <color>} read by the pixel oracle, no model."""

    def __init__(self, palette_name: str = "two"):
        self.oracle = ColorOracle(palette_name)

    def batch(self, images: np.ndarray) -> list[set[str]]:
        colors = self.oracle(images)
        # An image without color (UNREADABLE, -1) shows no color object; names[-1] would invent one.
        return [{"digit", self.oracle.names[c]} if c >= 0 else {"digit"} for c in colors]

    def __call__(self, image: np.ndarray) -> set[str]:
        return self.batch(np.asarray(image)[None])[0]


def _oracle(arg: str, **_: Any) -> ColorOracle:
    what, pal = split_spec(arg)  # the argument is itself a spec: ATTRIBUTE[:PALETTE]
    if what != "color":
        raise InvgenConfigError(f"unknown oracle attribute '{what}' in 'oracle:{arg}' (known: color)")
    try:
        return ColorOracle(pal or "two")
    except InvgenError as e:
        raise InvgenConfigError(f"{e} in 'oracle:{arg}'") from None


CLASSIFIERS.register("oracle", _oracle, arg="color[:PALETTE]", help="the exact color of the colored digits")
