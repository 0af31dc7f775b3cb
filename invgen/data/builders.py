"""Dataset builders: code that writes a training set when a config names one (`data.builder: NAME` with
`data.options: {...}`), so that a recipe runs on a fresh machine without a download.

A builder registers into `DATASETS` (see `invgen.registry`); the embedded colored-digits benchmark is one
(`invgen.benchmarks.digits`). A builder never replaces data it did not write: it raises `ForeignDataError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invgen.errors import InvgenDataError, shown
from invgen.registry import Registry


class ForeignDataError(InvgenDataError):
    """A folder a builder would replace holds data it did not build (`path` names it)."""

    def __init__(self, path: Path):
        super().__init__(f"{shown(path)} holds files that invgen did not build; pass --overwrite to replace it")
        self.path = path


def _no_classifier(options: Mapping[str, Any]) -> str | None:
    return None


@dataclass(frozen=True)
class DatasetBuilder:
    """`build(root, size=, seed=, **options)` writes `root/train` and `root/test` (reusing a complete set it
    built with the same options); `check_options(options, field)` raises `InvgenConfigError` naming the field;
    `default_classifier(options)` is the attribute classifier spec that reads the bias of the built set
    exactly (None when there is none)."""

    build: Callable[..., Path]
    check_options: Callable[[Mapping[str, Any], str], None]
    default_classifier: Callable[[Mapping[str, Any]], str | None] = _no_classifier


DATASETS: Registry[DatasetBuilder] = Registry("dataset builder")


def build_dataset(name: str, root: str | os.PathLike, size: int, seed: int,
                  options: Mapping[str, Any] | None = None) -> Path:
    """Build (or reuse) the set `name` writes under `root`."""
    return DATASETS.resolve(name).build(Path(root), size=size, seed=seed, **dict(options or {}))
