"""The colored-digits set as a dataset builder: `data.builder: colored_digits` with
`data.options: {p_align: 0.95, palette: two, test_fraction: 0.2}`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from invgen.benchmarks.digits.data import PALETTES, digit_prompt, digit_prompts, make_colored_digits
from invgen.config import check
from invgen.data.builders import DATASETS, DatasetBuilder, SetDefaults
from invgen.errors import InvgenConfigError

OPTIONS = {"p_align": 0.95, "palette": "two", "test_fraction": 0.2}
"""The builder's options and their defaults."""


def check_options(options: Mapping[str, Any], field: str = "data.options") -> None:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InvgenConfigError(f"{field}.{unknown[0]}: the colored_digits builder has no such option "
                                f"(options: {', '.join(OPTIONS)})")
    o = {**OPTIONS, **options}
    try:
        p_align, test_fraction = float(o["p_align"]), float(o["test_fraction"])
    except (TypeError, ValueError):
        raise InvgenConfigError(f"{field}: p_align and test_fraction must be numbers") from None
    check(0.0 <= p_align <= 1.0, f"{field}.p_align", f"must be in [0, 1], got {o['p_align']}")
    check(0.0 < test_fraction < 1.0, f"{field}.test_fraction", f"must be in (0, 1), got {o['test_fraction']}")
    check(o["palette"] in PALETTES, f"{field}.palette",
          f"must be one of {', '.join(PALETTES)}, got {o['palette']!r}")


def build(root: Path, size: int, seed: int, **options: Any) -> Path:
    o = {**OPTIONS, **options}
    return make_colored_digits(root, p_align=float(o["p_align"]), size=size, palette_name=o["palette"], seed=seed,
                               test_fraction=float(o["test_fraction"]))


def defaults(options: Mapping[str, Any]) -> SetDefaults:
    """The exact pixel-rule color oracle for the set's palette, two digits to try, the ten digits as classes."""
    return SetDefaults(
        classifier=f"oracle:color:{options.get('palette') or OPTIONS['palette']}", attribute="color",
        prompts=(digit_prompt(3), digit_prompt(7)), class_prompts=tuple(digit_prompts()),
        class_prompts_name="the ten digits", source_class=3, suite="digits",
    )


COLORED_DIGITS = DatasetBuilder(build=build, check_options=check_options, defaults=defaults)
DATASETS.register("colored_digits", lambda arg: COLORED_DIGITS,
                  help="scikit-learn's handwritten digits painted in colors; the color follows the digit "
                       "with probability p_align")
