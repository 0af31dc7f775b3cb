"""The digit CNN as the benchmark's plug-ins: a classifier checkpoint (`checkpoint:DIR` opens a `DigitCNN`)."""

from __future__ import annotations

from typing import Any

from invgen.metrics.classifiers.checkpoint import register_checkpoint_class


def _digit_cnn() -> type:
    from invgen.models.digit_cnn import DigitCNN

    return DigitCNN


def _digit_names(config: dict[str, Any]) -> list[str]:
    return [str(d) for d in range(int(config.get("num_classes", 10)))]


register_checkpoint_class("DigitCNN", _digit_cnn, default_names=_digit_names)
