"""View makers by name: what a trainer's `translator.kind` (or any tool that makes positive views) resolves.

    transform = VIEW_MAKERS.resolve("learned", cfg=cfg, cache_dir=cache)   # a BiasTransform, or None

A factory is called as `factory(arg, cfg=..., cache_dir=...)`: `cfg` is the caller's config (its
`translator` section holds the maker's settings, its `data` section the training set), `cache_dir` where
the views are cached. It returns a `BiasTransform` (`transform(images, labels, seeds=...) -> views`), or
None for "no views". The CDvG makers register in `invgen.cdvg.makers`; a plug-in registers its own here.
"""

from __future__ import annotations

from typing import Any

from invgen.registry import Registry

VIEW_MAKERS: Registry[Any] = Registry("view maker")
