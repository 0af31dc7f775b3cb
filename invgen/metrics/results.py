"""What the metrics compute, as typed objects: `BiasReport` (one image set) and `Comparison` (several side by
side).

Both are dataclasses, read by attribute (`report.bias_score`, `comparison.ratio_to_baseline`), and also
mappings whose keys are the JSON file's (`report["bias_score"]`), as diffusers' outputs are: the files
`write_report` / `write_comparison` write, and every reader of them, stay as they were. A key another version
wrote, or a tool adds (the audit adds its own sections), is kept in `extra`, so a report read and written
again loses nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

R = TypeVar("R", bound="_Record")


class _Record(Mapping[str, Any]):
    """A dataclass seen as the mapping of its JSON form: the fields in order (an optional one only when set),
    then the `extra` keys."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset()
    extra: dict[str, Any]

    def _keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if f.name != "extra"
                and not (f.name in self.OPTIONAL and getattr(self, f.name) is None)]

    def __getitem__(self, key: str) -> Any:
        if key in self._keys():
            return getattr(self, key)
        return self.extra[key]

    def __iter__(self) -> Iterator[str]:
        yield from self._keys()
        yield from self.extra

    def __len__(self) -> int:
        return len(self._keys()) + len(self.extra)

    def __setitem__(self, key: str, value: Any) -> None:
        if key in {f.name for f in dataclasses.fields(self)} - {"extra"}:
            setattr(self, key, value)
        else:
            self.extra[key] = value

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        """The object of a mapping with the JSON file's keys (missing fields stay None, unknown keys `extra`)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in data.items() if k in names},
                   extra={k: v for k, v in data.items() if k not in names})


@dataclass(eq=False)
class BiasReport(_Record):
    """The bias of one image set: which attribute, read by which classifier, and the fairness figures (means
    over prompts, with bootstrap intervals `ci` and the floor `at_target` a model exactly at the target
    reaches), pooled and per prompt; `t2i`, `quality` and `metadata_agreement` when they were asked for.
    `docs/metrics.md` gives every formula."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"classifier", "metadata_agreement", "t2i", "quality", "timing"})

    samples: str = ""
    attribute: str = ""
    classifier: str | None = None
    values: list[str] = field(default_factory=list)
    target: list[float] | None = None
    n_images: int = 0
    n_unreadable: int = 0
    n_prompts: int = 0
    bias_score: float | None = None
    fairness_discrepancy: float | None = None
    kl_uniform: float | None = None
    kl_target: float | None = None
    entropy: float | None = None
    delta: float | None = None
    ci: dict[str, Any] = field(default_factory=dict)
    at_target: dict[str, Any] = field(default_factory=dict)
    confidence: float = 0.95
    n_boot: int = 0
    pooled: dict[str, Any] = field(default_factory=dict)
    per_prompt: dict[str, dict[str, Any]] = field(default_factory=dict)
    metadata_agreement: dict[str, Any] | None = None
    t2i: dict[str, Any] | None = None
    quality: dict[str, Any] | None = None
    timing: dict[str, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(eq=False)
class Comparison(_Record):
    """Several reports of one attribute side by side: their headline figures (`metrics`, by label), each
    figure's ratio to the baseline's (the first report), the figures per prompt, and the reports."""

    attribute: str = ""
    values: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    baseline: str = ""
    confidence: float = 0.95
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    ratio_to_baseline: dict[str, dict[str, float | None]] = field(default_factory=dict)
    per_prompt: dict[str, dict[str, Any]] = field(default_factory=dict)
    reports: list[BiasReport] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def ratio(self, label: str, metric: str = "bias_score") -> float | None:
        """`metric` of the set `label` over the baseline's (None where either is missing or the baseline is 0)."""
        return self.ratio_to_baseline[label][metric]


__all__ = ["BiasReport", "Comparison"]
