"""The digit CNN in the general registries: a classifier checkpoint class (`checkpoint:DIR` opens a
`DigitCNN`, its names the digits) and a feature space for FID and precision/recall (`digit-cnn:DIR`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from invgen.errors import InvgenModelError
from invgen.metrics.classifiers.checkpoint import register_checkpoint_class
from invgen.metrics.quality import FEATURES, FeatureExtractor


def _digit_cnn() -> type:
    from invgen.benchmarks.digits.cnn import DigitCNN

    return DigitCNN


def _digit_names(config: dict[str, Any]) -> list[str]:
    return [str(d) for d in range(int(config.get("num_classes", 10)))]


def digit_cnn_features(model_or_dir: Any) -> FeatureExtractor:
    """Penultimate features of the digit CNN (a `DigitCNN`, or a cache folder: trained there if empty)."""
    model = model_or_dir
    if isinstance(model_or_dir, (str, os.PathLike)):
        from invgen.benchmarks.digits.cnn import DigitCNN, load_or_train_digit_cnn

        path = Path(model_or_dir).expanduser()
        if (path / "config.json").is_file():
            try:
                model = DigitCNN.from_pretrained(path).eval()
            except Exception as e:  # noqa: BLE001 - diffusers raises OSError/ValueError alike
                raise InvgenModelError(f"could not load the digit CNN in {path}: {e}") from None
        else:
            model = load_or_train_digit_cnn(path)
    return lambda images: model.features_of(images)


register_checkpoint_class("DigitCNN", _digit_cnn, default_names=_digit_names)
FEATURES.register(
    "digit-cnn", lambda arg, **_: digit_cnn_features(arg), arg="DIR",
    help="the digit CNN's penultimate features (trained into DIR when it is empty)",
)
