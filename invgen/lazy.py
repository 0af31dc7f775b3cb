"""Packages whose public names load from their modules on first use, so that `import invgen` (and the CLI's
start-up) does not pay for torch, diffusers and matplotlib."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, where: Mapping[str, str]) -> tuple[list[str], Callable[[str], Any]]:
    """`(__all__, __getattr__)` for `package`, whose names `where` maps to the modules that define them:

        __all__, __getattr__ = lazy_exports(__name__, {"run_audit": "invgen.audit.run"})
    """
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name]), name)
        namespace[name] = value  # found once: the next lookup does not come here
        return value

    return sorted(where), __getattr__
