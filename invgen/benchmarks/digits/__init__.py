"""The embedded colored-digits benchmark, a plug-in (see `invgen.registry`)."""

from invgen.benchmarks.digits import suite  # noqa: F401
