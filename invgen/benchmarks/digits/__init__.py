"""The embedded colored-digits benchmark, a plug-in (see `invgen.registry`)."""

from invgen.benchmarks.digits import (
    features,  # noqa: F401
    oracle,  # noqa: F401
)
