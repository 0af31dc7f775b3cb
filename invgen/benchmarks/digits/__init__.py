"""The embedded colored-digits benchmark, a plug-in (see `invgen.registry`)."""
