"""The digits prompt suite of `invgen audit` (`digits.yaml` beside this file), registered as a built-in suite."""

from __future__ import annotations

from pathlib import Path

from invgen.audit.suites import SUITE_FILES

SUITE_FILE = Path(__file__).with_name("digits.yaml")


def _digits_suite(arg: str) -> Path:
    return SUITE_FILE


SUITE_FILES.register("digits", _digits_suite, help="the ten digits of the embedded colored-digits benchmark")
