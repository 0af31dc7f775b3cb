"""The models the page has loaded, kept between requests: loading a pipeline takes seconds, a request should not."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from invgen.app.helpers import NO_ADAPTER
from invgen.errors import InvgenModelError


class Models:
    """Loaded pipelines, adapters and classifiers, kept between requests (one request computes at a time:
    an adapter is attached to a shared pipeline while it samples, so callers hold `lock`)."""

    def __init__(self, device: str | None = None, keep: int = 2):
        self.device = device
        self.keep = keep  # pipelines kept loaded; the least recently used goes first
        self.lock = threading.Lock()
        self._pipes: OrderedDict[str, Any] = OrderedDict()
        self._guidance: dict[str, Any] = {}
        self._classifiers: dict[tuple, Any] = {}

    def pipeline(self, name: str) -> Any:
        from invgen.models.loading import load_pipeline

        name = (name or "").strip()
        if not name:
            raise InvgenModelError("choose a pipeline (a folder under the runs folder, a local path or a hub id)")
        if name not in self._pipes:
            pipe = load_pipeline(name)
            import torch

            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            pipe.to(device)
            pipe.set_progress_bar_config(disable=True)
            self._pipes[name] = pipe
            while len(self._pipes) > self.keep:
                self._pipes.popitem(last=False)
        self._pipes.move_to_end(name)
        return self._pipes[name]

    def guidance(self, name: str | None) -> Any:
        """The adapter in `name`, or None for no adapter (empty, or the drop-down's `(none)`)."""
        from invgen.invdiff.guidance import InvariantGuidance

        name = (name or "").strip()
        if not name or name == NO_ADAPTER:
            return None
        if name not in self._guidance:
            self._guidance[name] = InvariantGuidance.from_pretrained(name)
        return self._guidance[name]

    def classifier(self, spec: str, values: list[str]) -> Any:
        from invgen.metrics.classifiers import load_classifier

        key = (spec, tuple(values))
        if key not in self._classifiers:
            self._classifiers[key] = load_classifier(spec, names=values or None, device=self.device)
        return self._classifiers[key]
