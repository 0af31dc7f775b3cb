"""What the page offers before the user types anything, for a given pipeline.

Every default that depends on the model lives here, in one place: today only the colored-digits benchmark
has defaults of its own (its prompts, the exact color oracle, the `digits` suite), and any other model gets
the general ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DIGIT_PROMPTS = "a photo of the digit 3\na photo of the digit 7"


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

    A colored-digits model (its `train_config.yaml` says so, see `runs.default_classifier`) starts on digit
    prompts read by the exact color oracle and on the `digits` audit suite; any other model on the
    occupations suite and gender. The Views tab's classes are the ten digits for every model: it has no
    other class list to offer."""
    from invgen.benchmarks.digits.data import digit_prompts
    from invgen.runs import default_classifier

    classifier = default_classifier(pipeline) if pipeline else None
    views = {"class_prompts": tuple(digit_prompts()), "class_prompts_name": "the ten digits", "source_class": 3}
    if classifier:
        return AppDefaults(classifier=classifier, prompts=DIGIT_PROMPTS, suites=("digits",), attribute="color",
                           **views)
    return AppDefaults(suites=("occupations-test", "digits"), attribute="gender", **views)
