"""Named plug-ins and the one way to name them: a spec `NAME` or `NAME:ARG` (`clip:/models/vit-b-32`,
`oracle:color:ten`, `saliency:0.25`).

Each kind of plug-in (datasets, attribute classifiers, feature extractors, face detectors, view makers,
foreground estimators, encoders) has one `Registry`; general code resolves a spec through it and never
branches on a name. A registry fills itself the first time it is read: from the modules that register
into it (`modules=`, imported lazily so that `import invgen` stays cheap) and from the packages' entry
points in the group `invgen.plugins` (a third-party package declares
`[project.entry-points."invgen.plugins"] mine = "mypkg.invgen_plugin"` and registers on import).
The embedded colored-digits benchmark is such a plug-in (`invgen.benchmarks.digits`): general code does
not import it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from invgen.errors import InvgenConfigError, first_line

T = TypeVar("T")

ENTRY_POINT_GROUP = "invgen.plugins"
BUILTIN_PLUGINS = ("invgen.benchmarks.digits",)
"""Plug-ins that ship with invgen; imported (once) the first time any registry is read."""

_plugins_loaded = False


def split_spec(spec: str) -> tuple[str, str]:
    """`"clip:/models/x"` → `("clip", "/models/x")`; `"saliency"` → `("saliency", "")`. Only the first colon
    splits, so the argument may hold colons of its own (`oracle:color:ten`, a Windows path)."""
    name, _, arg = str(spec).strip().partition(":")
    return name, arg


def load_plugins() -> None:
    """Import the built-in plug-ins and every `invgen.plugins` entry point, once per process."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for module in BUILTIN_PLUGINS:
        importlib.import_module(module)
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as e:  # noqa: BLE001 - another package's bug must not stop invgen's own names
            import warnings

            warnings.warn(f"the invgen plug-in '{getattr(ep, 'name', ep)}' could not be loaded and is left out: "
                          f"{first_line(e)}", stacklevel=2)


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: Callable[..., T]
    arg: str  # how the argument reads in help and errors ("PATH", "[THRESHOLD]"); "" when it takes none
    arg_required: bool
    help: str

    @property
    def usage(self) -> str:
        if not self.arg:
            return self.name
        return f"{self.name}:{self.arg}" if self.arg_required else f"{self.name}[:{self.arg}]"


class Registry(Generic[T]):
    """Factories by name. `resolve(spec, **options)` calls the factory of the spec's name with its argument
    (the text after the first colon) and the caller's options; an unknown name raises one sentence that
    lists what is known."""

    def __init__(self, what: str, modules: Iterable[str] = ()):
        self.what = what  # "classifier", "feature extractor", ... as it reads in an error
        self._modules = tuple(modules)
        self._entries: dict[str, Entry[T]] = {}
        self._filled = False

    def register(
        self, name: str, factory: Callable[..., T] | None = None, *, arg: str = "", arg_required: bool = True,
        help: str = "",
    ) -> Any:
        """Register `factory(arg, **options)` under `name`; usable as a decorator when `factory` is left out.
        Registering a name twice replaces the first (a plug-in may override a built-in)."""
        if not name or ":" in name:
            raise ValueError(f"a {self.what} name must be non-empty and hold no colon, got {name!r}")

        def add(f: Callable[..., T]) -> Callable[..., T]:
            self._entries[name] = Entry(name, f, arg, arg_required and bool(arg), help)
            return f

        return add if factory is None else add(factory)

    def _fill(self) -> None:
        if not self._filled:
            self._filled = True
            for module in self._modules:
                importlib.import_module(module)
            load_plugins()

    def names(self) -> list[str]:
        self._fill()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._fill()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        self._fill()
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def usages(self) -> str:
        """`clip:PATH, masks:FOLDER or saliency[:THRESHOLD]`: what an error or a help text lists."""
        items = [e.usage for e in self]
        return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"

    def entry(self, spec: str) -> tuple[Entry[T], str]:
        """The entry a spec names and its argument; an unknown name or a missing argument is an error."""
        self._fill()
        name, arg = split_spec(spec)
        found = self._entries.get(name)
        if found is None:
            raise InvgenConfigError(f"unknown {self.what} '{spec}' (use {self.usages()})")
        if found.arg_required and not arg:
            raise InvgenConfigError(f"the {self.what} '{spec}' needs its argument: {found.usage}")
        return found, arg

    def resolve(self, spec: str, **options: Any) -> T:
        found, arg = self.entry(spec)
        return found.factory(arg, **options)
