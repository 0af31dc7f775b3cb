"""Prompt suites for `invgen audit`: the prompts to sample and the attributes to audit them on, kept as data.

A suite is one YAML (or JSON) file. The built-in ones live in `invgen/audit/suites/`, and a plug-in adds
its own to the registry `SUITE_FILES` (the embedded benchmark's `digits`, in `invgen.benchmarks.digits`):

- `digits`: the ten prompts of the embedded colored-digits benchmark ("a photo of the digit 3"), attribute
  `color` (the default palette's colors, read by the exact `oracle:color`, on whole images);
- `occupations`: 190 occupations in "a photo of the face of a/an OCCUPATION, a person", attributes `gender`
  (male, female), `race` (FairFace's 4 classes White, Black, Asian, Indian), `race7` (FairFace's 7 classes
  White, Black, Latino_Hispanic, East Asian, Southeast Asian, Indian, Middle Eastern) and `age` (young,
  old), all read on face crops. Its fixed split gives `occupations-train` (152) and `occupations-test` (38):
  every fifth occupation in alphabetical order is held out (the rule and the lists are in the file).

`load_suite` takes a built-in name, `NAME-SPLIT` for a split of a built-in one, or the path of a user's file
(ending in .yaml, .yml or .json), optionally followed by `:SPLIT` (`my_suite.yaml:test`).

The schema of a suite file is in `invgen.audit.suite_schema`.
"""

from __future__ import annotations

import difflib
import json
import os
from importlib import resources
from pathlib import Path

import yaml

from invgen.audit.suite_schema import Attribute, BuiltinSuites, Suite, SuiteFile, parse_suite
from invgen.errors import InvgenConfigError, shown
from invgen.registry import Registry

SUFFIXES = (".yaml", ".yml", ".json")
"""File endings `load_suite` reads as a user's suite file."""

SUITE_FILES: Registry[Path] = Registry("suite")
"""Suite files that plug-ins ship, by suite name; a factory (no argument) returns the file's path. A file in
`invgen/audit/suites/` of the same name is replaced."""

__all__ = ["SUFFIXES", "SUITE_FILES", "Attribute", "Suite", "builtin_suites", "load_suite"]


# ------------------------------------------------------------------------------------------- public
def builtin_suites() -> list[str]:
    """The names `load_suite` knows: every built-in file and every split of it (`occupations-test`)."""
    names = []
    for stem, path in _builtin_files().items():
        names.append(stem)
        names.extend(f"{stem}-{split}" for split in _read_file(path, str(path)).splits)
    return sorted(names)


def load_suite(name_or_path: str | os.PathLike) -> Suite:
    """A built-in suite by name (`occupations-test`) or a user's suite file (`my.yaml`, `my.yaml:test`)."""
    text = os.fspath(name_or_path)
    if isinstance(name_or_path, os.PathLike):
        return _load_path(text, None)
    file_text, split = _split_spec(text)
    if file_text is not None:
        return _load_path(file_text, split)
    if "/" in text or os.sep in text or Path(text).is_file():
        raise InvgenConfigError(f"suite '{shown(text)}': a suite file must end in {', '.join(SUFFIXES)}")
    return _load_builtin(text)


# ------------------------------------------------------------------------------------------- loading
def _builtin_files() -> dict[str, Path]:
    folder = resources.files("invgen.audit") / "suites"
    files = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".yaml") and entry.is_file():
            files[entry.name[: -len(".yaml")]] = Path(str(entry))
    files.update({e.name: Path(e.factory("")) for e in SUITE_FILES})
    return dict(sorted(files.items()))


def _load_builtin(name: str) -> Suite:
    files = _builtin_files()
    if name in files:
        return _read_file(files[name], str(files[name])).suite
    stem, _, split = name.rpartition("-")
    if stem in files:
        suite_file = _read_file(files[stem], str(files[stem]))
        if split in suite_file.splits:
            return _split_suite(suite_file, split)
    known = builtin_suites()
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise InvgenConfigError(
        f"unknown suite '{shown(name)}' ({hint}known: {', '.join(known)}; or the path of a "
        f"{'/'.join(SUFFIXES)} suite file)"
    )


def _split_spec(text: str) -> tuple[str | None, str | None]:
    """(file, split) for `my.yaml` or `my.yaml:test`; (None, None) when `text` names no suite file."""
    if text.lower().endswith(SUFFIXES):
        return text, None
    head, sep, tail = text.rpartition(":")
    if sep and head.lower().endswith(SUFFIXES) and tail:
        return head, tail
    return None, None


def _load_path(text: str, split: str | None) -> Suite:
    suite_file = _read_file(Path(text), text)
    if split is None:
        return suite_file.suite
    if split not in suite_file.splits:
        known = ", ".join(suite_file.splits) or "none"
        raise InvgenConfigError(f"suite '{shown(text)}': no split '{shown(split)}' (splits: {known})")
    return _split_suite(suite_file, split)


def _split_suite(suite_file: SuiteFile, split: str) -> Suite:
    full = suite_file.suite
    keep = suite_file.splits[split]
    return Suite(
        name=f"{full.name}-{split}",
        prompts=[full.prompts[i] for i in keep],
        subjects=[full.subjects[i] for i in keep],
        attributes=full.attributes,
        source=full.source,
    )


def _read_file(path: Path, label: str) -> SuiteFile:
    """Read and check one suite file; `label` is how error messages name it (the path as the user gave it)."""
    where = f"suite '{shown(label)}'"
    if not path.exists():
        raise InvgenConfigError(f"{where}: no such file")
    if not path.is_file():
        raise InvgenConfigError(f"{where}: not a file")
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InvgenConfigError(f"{where}: not UTF-8 text (byte {e.start + 1})") from None
    except OSError as e:
        raise InvgenConfigError(f"{where}: cannot read it ({e.strerror or e})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as e:
            raise InvgenConfigError(f"{where}: malformed JSON (line {e.lineno}: {e.msg})") from None
    else:
        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f"line {mark.line + 1}: " if mark is not None else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise InvgenConfigError(f"{where}: malformed YAML ({line}{problem})") from None
    return parse_suite(data, where, path, BuiltinSuites(builtin_suites, load_suite))
