"""The embedded colored-digits benchmark, a plug-in (see `invgen.registry`): importing it registers its
dataset builder, its exact color oracle and its digit-CNN features into the general registries.

- `data.py`: the set itself (palettes, prompts, the builder); `dataset.py`: it as `data.builder: colored_digits`;
- `cnn.py`: the digit CNN that reads fidelity; `demo.py`: `make demo`, the whole InvDiff story on it.
"""

from invgen.benchmarks.digits import dataset  # noqa: F401
