"""The suite file format: what a suite is (`Suite`, `Attribute`) and the checks that turn a file's parsed
content into one (`parse_suite`), its prompts expanded from the template.

Schema (top-level fields of a suite file; anything else is refused with a did-you-mean):

    name: my-suite                  # optional; the file name without its extension by default
    description: free text          # optional, for people
    template: "a photo of the face of {article} {subject}, a person"
    subjects: [doctor, nurse]       # required with `template`; the prompts are made in this order
    articles: {hour worker: an}     # optional; {article} is "an" before a vowel letter, "a" otherwise
    # or, instead of template + subjects, the full prompts (each prompt is then its own subject):
    prompts: ["a portrait of a doctor", "a portrait of a nurse"]
    splits:                         # optional; every subject in exactly one split; gives NAME-SPLIT suites
      train: [doctor]
      test: [nurse]
    attributes_from: occupations    # optional; a built-in suite whose attributes this one reuses
    attributes:                     # required unless attributes_from; entries here add to / replace those
      gender:
        values: [male, female]      # ordered class names (at least two, each once)
        prompts:                    # CLIP zero-shot prompts: at least one for every value, none for others
          male: [a photo of a man]
          female: [a photo of a woman]
        faces: true                 # optional (true): classify face crops; false: whole images
        classifier: null            # optional default classifier spec, e.g. oracle:color

The template may use `{subject}` (required) and `{article}`, nothing else (`{{` and `}}` for braces).
Subjects and values are strings; a bare integer (a digit) is taken as its text. Attribute names may not
contain `+`, which joins attributes into a joint one (`gender+race`, see `Suite.joint`).

Every mistake is one `InvgenConfigError` naming the file and the field, for example
`suite 'my.yaml': attributes.gender.prompts: missing value 'female'`.
"""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invgen.errors import InvgenConfigError, shown

_TOP_FIELDS = (
    "name",
    "description",
    "template",
    "subjects",
    "articles",
    "prompts",
    "splits",
    "attributes_from",
    "attributes",
)
_ATTRIBUTE_FIELDS = ("values", "prompts", "faces", "classifier")
_PLACEHOLDERS = ("subject", "article")
# Split names become part of suite names (`occupations-test`), so they stay plain words.
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True)
class Attribute:
    """One attribute to audit: its ordered values and the zero-shot prompts of each."""

    name: str
    values: list[str]
    prompts: dict[str, list[str]]
    faces: bool = True
    classifier: str | None = None


@dataclass(frozen=True)
class Suite:
    """The prompts of a suite (in order, with the subject each was made from) and its attributes."""

    name: str
    prompts: list[str]
    subjects: list[str]
    attributes: dict[str, Attribute]
    source: str

    def attribute(self, name: str) -> Attribute:
        """The attribute called `name`; an unknown name is a config error listing the known ones."""
        if name not in self.attributes:
            known = list(self.attributes)
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise InvgenConfigError(
                f"suite '{shown(self.name)}' has no attribute '{shown(name)}' ({hint}known: {', '.join(known)})"
            )
        return self.attributes[name]

    def joint(self, names: list[str] | str) -> list[Attribute]:
        """The parts of a joint attribute, each checked: `["gender", "race"]` (or `"gender+race"`)."""
        parts = names.split("+") if isinstance(names, str) else list(names)
        parts = [str(p).strip() for p in parts]
        if not parts or any(not p for p in parts):
            raise InvgenConfigError(
                f"suite '{shown(self.name)}': the attribute '{shown('+'.join(parts))}' has an empty part"
            )
        for i, part in enumerate(parts):
            if part in parts[:i]:
                raise InvgenConfigError(
                    f"suite '{shown(self.name)}': the attribute '{shown(part)}' appears twice in "
                    f"'{shown('+'.join(parts))}'"
                )
        return [self.attribute(p) for p in parts]


@dataclass
class SuiteFile:
    """A suite file as read and checked: the full suite and the subject indices of each split."""

    suite: Suite
    splits: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class BuiltinSuites:
    """How `attributes_from` reaches the built-in suites, given by the loader (which knows where they are)."""

    names: Callable[[], list[str]]
    load: Callable[[str], Suite]


class _Checker:
    """Type checks that raise one sentence: `suite 'my.yaml': FIELD: PROBLEM`."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, field_name: str, problem: str) -> InvgenConfigError:
        return InvgenConfigError(f"{self.where}: {field_name}: {problem}")

    def mapping(self, value: Any, field_name: str) -> dict:
        if not isinstance(value, dict):
            raise self.fail(field_name, f"expected a mapping, got {_kind(value)}")
        return value

    def known_keys(self, data: dict, allowed: tuple[str, ...], field_name: str | None) -> None:
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(allowed)}"
                label = f"{field_name}.{key}" if field_name else str(key)
                raise self.fail(shown(label), f"unknown field ({hint})")

    def text(self, value: Any, field_name: str, *, numbers: bool = False) -> str:
        """A non-empty string (or, with `numbers`, an integer taken as its text)."""
        if numbers and isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise self.fail(field_name, f"expected a string, got {_kind(value)}")
        if not value.strip():
            raise self.fail(field_name, "must not be empty")
        return value

    def texts(self, value: Any, field_name: str, *, numbers: bool = False, unique: bool = True) -> list[str]:
        """A non-empty list of non-empty strings, each once (with `unique`)."""
        if value is None or value == []:
            raise self.fail(field_name, "the list is empty")
        if not isinstance(value, list):
            raise self.fail(field_name, f"expected a list, got {_kind(value)}")
        items = [self.text(v, f"{field_name}[{i}]", numbers=numbers) for i, v in enumerate(value)]
        if unique:
            for i, item in enumerate(items):
                if item in items[:i]:
                    raise self.fail(field_name, f"'{shown(item)}' appears twice")
        return items


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, (bool, int, float, str)):
        text = repr(value)
        return text if len(text) <= 40 else f"{text[:30]}... ({len(text)} characters)"
    return f"a {type(value).__name__}"


def _article(subject: str, articles: dict[str, str]) -> str:
    if subject in articles:
        return articles[subject]
    return "an" if subject[:1].lower() in "aeiou" else "a"


def _render(check: _Checker, template: str, subjects: list[str], articles: dict[str, str]) -> list[str]:
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise check.fail("template", f"malformed braces ({e}; write {{{{ and }}}} for a literal brace)") from None
    for name in fields:
        if name not in _PLACEHOLDERS:
            raise check.fail("template", f"unknown placeholder '{{{shown(name)}}}' (known: {{subject}}, {{article}})")
    if "subject" not in fields:
        raise check.fail("template", "must contain '{subject}'")
    return [template.format(subject=s, article=_article(s, articles)) for s in subjects]


def parse_suite(data: Any, where: str, path: Path, builtin: BuiltinSuites) -> SuiteFile:
    """Check a suite file's parsed content (`where` names the file in errors) and build the suite; `builtin`
    lists and loads the built-in suites that `attributes_from` may name."""
    check = _Checker(where)
    if data is None:
        raise InvgenConfigError(f"{where}: the file is empty (expected a mapping of suite fields)")
    if not isinstance(data, dict):
        raise InvgenConfigError(f"{where}: expected a mapping of suite fields at the top level, got {_kind(data)}")
    check.known_keys(data, _TOP_FIELDS, None)
    name = check.text(data["name"], "name") if "name" in data else path.stem
    if "description" in data and data["description"] is not None:
        check.text(data["description"], "description")

    if "template" in data and "prompts" in data:
        raise check.fail("prompts", "give either 'template' with 'subjects' or the full 'prompts', not both")
    if "template" in data:
        template = check.text(data["template"], "template")
        if "subjects" not in data:
            raise check.fail("subjects", "missing (a 'template' needs the subjects to fill it with)")
        subjects = check.texts(data["subjects"], "subjects", numbers=True)
        articles = {}
        for key, value in check.mapping(data.get("articles") or {}, "articles").items():
            subject = check.text(key, "articles", numbers=True)
            if subject not in subjects:
                raise check.fail(f"articles.{shown(subject)}", "not one of the subjects")
            articles[subject] = check.text(value, f"articles.{shown(subject)}")
        prompts = _render(check, template, subjects, articles)
    elif "prompts" in data:
        for other in ("subjects", "articles"):
            if other in data:
                raise check.fail(other, "only used with a 'template' (with 'prompts', each prompt is its subject)")
        prompts = check.texts(data["prompts"], "prompts")
        subjects = list(prompts)
    else:
        raise check.fail("template", "missing (give 'template' with 'subjects', or the full 'prompts')")

    splits = _parse_splits(check, data.get("splits"), subjects) if "splits" in data else {}
    attributes = _parse_attributes(check, data, builtin)
    suite = Suite(name=name, prompts=prompts, subjects=subjects, attributes=attributes, source=str(path.resolve()))
    return SuiteFile(suite, splits)


def _parse_splits(check: _Checker, value: Any, subjects: list[str]) -> dict[str, list[int]]:
    index = {s: i for i, s in enumerate(subjects)}
    owner: dict[str, str] = {}
    splits: dict[str, list[int]] = {}
    for name, members in check.mapping(value, "splits").items():
        split = check.text(name, "splits", numbers=True)
        if not _SPLIT_NAME.fullmatch(split):
            raise check.fail(f"splits.{shown(split)}", "a split name may hold only letters, digits and '_'")
        items = check.texts(members, f"splits.{split}", numbers=True)
        for item in items:
            if item not in index:
                raise check.fail(f"splits.{split}", f"'{shown(item)}' is not one of the subjects")
            if item in owner:
                raise check.fail("splits", f"'{shown(item)}' is in both '{owner[item]}' and '{split}'")
            owner[item] = split
        # A split keeps the suite's order, whatever the order of its list.
        splits[split] = sorted(index[item] for item in items)
    if not splits:
        raise check.fail("splits", "the mapping is empty")
    for subject in subjects:
        if subject not in owner:
            raise check.fail("splits", f"'{shown(subject)}' is in no split (every subject must be in exactly one)")
    return splits


def _parse_attributes(check: _Checker, data: dict, builtin: BuiltinSuites) -> dict[str, Attribute]:
    attributes: dict[str, Attribute] = {}
    if data.get("attributes_from") is not None:
        base = check.text(data["attributes_from"], "attributes_from")
        known = builtin.names()
        if base not in known:
            raise check.fail("attributes_from", f"unknown built-in suite '{shown(base)}' (known: {', '.join(known)})")
        attributes.update(builtin.load(base).attributes)
        own = data.get("attributes") or {}
    else:
        if "attributes" not in data:
            raise check.fail("attributes", "missing (or name a built-in suite in 'attributes_from')")
        own = data["attributes"]
        if own is None or own == {}:
            raise check.fail("attributes", "the mapping is empty")
    for key, spec in check.mapping(own, "attributes").items():
        name = check.text(key, "attributes")
        if "+" in name:
            raise check.fail(f"attributes.{shown(name)}", "an attribute name may not contain '+'")
        attributes[name] = _parse_attribute(check, name, spec)
    return attributes


def _parse_attribute(check: _Checker, name: str, spec: Any) -> Attribute:
    at = f"attributes.{shown(name)}"
    spec = check.mapping(spec, at)
    check.known_keys(spec, _ATTRIBUTE_FIELDS, at)
    if "values" not in spec:
        raise check.fail(f"{at}.values", "missing")
    values = check.texts(spec["values"], f"{at}.values", numbers=True)
    if len(values) < 2:
        raise check.fail(f"{at}.values", f"needs at least two values, got {len(values)}")
    if "prompts" not in spec:
        raise check.fail(f"{at}.prompts", "missing (zero-shot prompts for each value)")
    given = check.mapping(spec["prompts"], f"{at}.prompts")
    prompts: dict[str, list[str]] = {}
    for key, texts in given.items():
        value = check.text(key, f"{at}.prompts", numbers=True)
        if value not in values:
            raise check.fail(f"{at}.prompts", f"'{shown(value)}' is not one of the values ({', '.join(values)})")
        if isinstance(texts, str):
            texts = [texts]
        if texts is None or texts == []:
            raise check.fail(f"{at}.prompts.{shown(value)}", "needs at least one prompt")
        prompts[value] = check.texts(texts, f"{at}.prompts.{shown(value)}")
    for value in values:
        if value not in prompts:
            raise check.fail(f"{at}.prompts", f"missing value '{shown(value)}'")
    faces = spec.get("faces", True)
    if not isinstance(faces, bool):
        raise check.fail(f"{at}.faces", f"expected true or false, got {_kind(faces)}")
    classifier = spec.get("classifier")
    if classifier is not None:
        classifier = check.text(classifier, f"{at}.classifier")
    return Attribute(
        name=name,
        values=values,
        prompts={v: prompts[v] for v in values},
        faces=faces,
        classifier=classifier,
    )
