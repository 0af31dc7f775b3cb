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


@dataclass(frozen=True)
class SetDefaults:
    """What a model trained on a built set is best looked at with (the app and the tools start on these)."""

    classifier: str | None = None  # the attribute classifier spec that reads the set's bias (exactly, ideally)
    attribute: str = ""  # the bias attribute that classifier reads
    prompts: tuple[str, ...] = ()  # a few prompts to try first
    class_prompts: tuple[str, ...] = ()  # one prompt per class of the set, by class index
    class_prompts_name: str = ""  # how to name that list in a hint ("the ten digits")
    source_class: int = 0  # the class to start from where one is picked
    suite: str = ""  # the built-in audit suite made for the set


def _no_defaults(options: Mapping[str, Any]) -> SetDefaults:
    return SetDefaults()


@dataclass(frozen=True)
class DatasetBuilder:
    """`build(root, size=, seed=, **options)` writes `root/train` and `root/test` (reusing a complete set it
    built with the same options); `check_options(options, field)` raises `InvgenConfigError` naming the field;
    `defaults(options)` says how to look at a model trained on the set."""

    build: Callable[..., Path]
    check_options: Callable[[Mapping[str, Any], str], None]
    defaults: Callable[[Mapping[str, Any]], SetDefaults] = _no_defaults


DATASETS: Registry[DatasetBuilder] = Registry("dataset builder")


def build_dataset(name: str, root: str | os.PathLike, size: int, seed: int,
                  options: Mapping[str, Any] | None = None) -> Path:
    """Build (or reuse) the set `name` writes under `root`."""
    return DATASETS.resolve(name).build(Path(root), size=size, seed=seed, **dict(options or {}))
