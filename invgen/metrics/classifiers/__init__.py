"""Attribute classifiers: images in, one attribute index per image out.

All classifiers share one interface (`AttributeClassifier`): `names` lists the attribute values and
`__call__(images)` takes uint8 arrays (N, H, W, C) and returns int64 indices (N,), or `UNREADABLE` (-1)
for an image the classifier cannot read (the color oracle: an image without color). Reports count those
apart and leave them out of every figure. `load_classifier(spec)` builds one from a spec resolved through
`CLASSIFIERS`:

- `clip:PATH`: open_clip zero-shot with attribute prompts (weights from a local folder or file);
- `checkpoint:PATH`: a trained classifier saved with `save_pretrained` (its config holds `names`);
- `metadata`: the value already written in `metadata.jsonl` (the column ATTRIBUTE, or the older nested
  `attributes[ATTRIBUTE]`), for sets whose attribute is known (a training set, a hand-labelled sample);
- plug-ins add their own (the colored-digits benchmark: `oracle:color[:PALETTE]`, an exact pixel rule).

A factory is called as `factory(arg, attribute=..., names=..., prompts=..., prompts_file=..., template=...,
model_name=..., device=...)` and ignores the options it has no use for.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from invgen.errors import InvgenConfigError
from invgen.registry import Registry

if TYPE_CHECKING:
    import numpy as np

DEFAULT_TEMPLATE = "a photo of a {value}"


class AttributeClassifier(Protocol):
    names: list[str]

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


CLASSIFIERS: Registry[AttributeClassifier] = Registry(
    "classifier",
    modules=(
        "invgen.metrics.classifiers.metadata",
        "invgen.metrics.classifiers.clip",
        "invgen.metrics.classifiers.checkpoint",
    ),
)


def load_classifier(
    spec: str,
    attribute: str | None = None,
    names: Sequence[str] | None = None,
    prompts: Mapping[str, Sequence[str]] | None = None,
    prompts_file: str | os.PathLike | None = None,
    template: str = DEFAULT_TEMPLATE,
    model_name: str | None = None,
    device: str | None = None,
) -> AttributeClassifier:
    """Build a classifier from its spec; an unknown spec or a mismatched attribute raises `InvgenError`.

    `clip:PATH` (prompts from `prompts`, `prompts_file`, or `names` through `template`), `checkpoint:PATH`
    (names from its config or `names`), `metadata` (needs `attribute`), and what plug-ins register.
    """
    clf = CLASSIFIERS.resolve(
        spec, attribute=attribute, names=names, prompts=prompts, prompts_file=prompts_file,
        template=template, model_name=model_name, device=device,
    )
    # A classifier that knows what it reads (an oracle, a checkpoint's config) must read what was asked for.
    reads = getattr(clf, "attribute", "")
    if attribute and reads and attribute != reads:
        raise InvgenConfigError(f"the classifier '{spec}' reads the attribute '{reads}', not '{attribute}'")
    return clf


__all__ = ["CLASSIFIERS", "DEFAULT_TEMPLATE", "AttributeClassifier", "load_classifier"]
