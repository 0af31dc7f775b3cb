"""What the page offers before the user types anything, for a given pipeline.

Every default that depends on the model lives here, in one place: a model trained on a built set (the
colored-digits benchmark) gets what the set's builder says; any other model the general ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class AppDefaults:
    """The page's defaults for one pipeline."""

    classifier: str | None = None
    """The attribute classifier spec `auto` stands for; None: none known (CLIP from `--clip` may step in)."""
    prompts: str = ""
    """The Compare tab's prompts, one per line."""
    class_prompts: tuple[str, ...] = ()
    """The Views tab's classes when its box is left empty."""
    class_prompts_name: str = ""
    """How the Views tab's hint names `class_prompts`."""
    source_class: int = 0
    """The Views tab's source class (an index into the class prompts)."""
    suites: tuple[str, ...] = ()
    """The Audit tab's suite, in order of preference: the first built-in one (the last when none is)."""
    attribute: str = ""
    """The Audit tab's attribute."""

    def suite(self, builtin: list[str]) -> str:
        return next((s for s in self.suites if s in builtin), self.suites[-1] if self.suites else "")


def defaults_for(pipeline: str | os.PathLike | None) -> AppDefaults:
    """The defaults for `pipeline` (a folder, a hub id, or None when the page starts without one).

    A model trained on a built set (its `train_config.yaml` names the builder, see `runs.dataset_defaults`)
    starts on what that builder says: for the colored-digits benchmark, digit prompts read by the exact color
    oracle, the ten digits as the Views tab's classes and the `digits` audit suite. Any other model starts on
    the occupations suite and gender, with no classes to fall back on (the Views tab asks for them)."""
    from invgen.runs import dataset_defaults

    found = dataset_defaults(pipeline) if pipeline else None
    if found is None:
        return AppDefaults(suites=("occupations-test",), attribute="gender")
    return AppDefaults(classifier=found.classifier, prompts="\n".join(found.prompts),
                       class_prompts=found.class_prompts, class_prompts_name=found.class_prompts_name,
                       source_class=found.source_class, suites=(found.suite,) if found.suite else (),
                       attribute=found.attribute)
