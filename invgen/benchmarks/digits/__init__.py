"""The embedded colored-digits benchmark, a plug-in (see `invgen.registry`): importing it registers its
dataset builder, its exact color oracle, its digit CNN (a checkpoint classifier), its digit-CNN features and
its audit suite into the general registries.

- `data.py`: the set itself (palettes, prompts, the builder); `dataset.py`: it as `data.builder: colored_digits`;
- `oracle.py`: the exact pixel-rule color classifier (`oracle:color[:PALETTE]`) and its T2I object extractor;
- `cnn.py`: the digit CNN that reads fidelity; `features.py`: its features (`digit-cnn:DIR`);
- `suite.py` + `digits.yaml`: the `digits` audit suite;
- `metrics.py`: bias and fidelity of digit sets; `demo.py`: `make demo`, the whole InvDiff story on it.
"""

from invgen.benchmarks.digits import (
    dataset,  # noqa: F401
    features,  # noqa: F401
    oracle,  # noqa: F401
    suite,  # noqa: F401
)
