"""`metadata`: the attribute as already written in `metadata.jsonl`, for sets whose attribute is known."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from invgen.errors import InvgenConfigError, InvgenDataError, InvgenError
from invgen.metrics.classifiers import CLASSIFIERS


class MetadataAttribute:
    """The attribute as written in `metadata.jsonl` (`ImageRecord.attribute`: a column, or nested); reads no image."""

    needs_images = False

    def __init__(self, attribute: str, names: Sequence[str] | None = None):
        self.attribute = attribute
        self.names = [str(n) for n in names] if names else []

    def from_records(self, records: Sequence[Any], where: str = "metadata.jsonl") -> np.ndarray:
        # A record read from the file knows its line; one made in memory is placed by its position.
        at = [f"{where}:{lineno if getattr(rec, 'line', None) is None else rec.line}"
              for lineno, rec in enumerate(records, start=1)]
        raw = [str(rec.attribute(self.attribute, w)) for rec, w in zip(records, at, strict=True)]
        if not self.names:
            self.names = sorted(set(raw))
        index = {n: i for i, n in enumerate(self.names)}
        for w, value in zip(at, raw, strict=True):
            if value not in index:
                raise InvgenDataError(
                    f"{w}: attribute '{self.attribute}' is {value!r}, "
                    f"not one of the values given ({', '.join(self.names)})"
                )
        return np.fromiter((index[v] for v in raw), dtype=np.int64, count=len(raw))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        raise InvgenError("the 'metadata' classifier reads metadata.jsonl, not images")


def _metadata(arg: str, *, attribute: str | None = None, names: Sequence[str] | None = None,
              **_: Any) -> MetadataAttribute:
    if not attribute:
        raise InvgenConfigError("the 'metadata' classifier needs the attribute name to read")
    return MetadataAttribute(attribute, names)


CLASSIFIERS.register("metadata", _metadata, help="the attribute column of metadata.jsonl (reads no image)")
