"""Benchmarks that ship with invgen, each a plug-in: general code reaches them only through registries."""
