import os

import pytest
import torch

# Tests must not try the network; the embedded models need none.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The test models are tiny: one thread is as fast as two, and two spin against each other when the
# machine is busy (measured up to 25x slower).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    from invgen.benchmarks.digits.data import make_colored_digits

    return make_colored_digits(tmp_path_factory.mktemp("digits"), p_align=0.95, size=16)


@pytest.fixture()
def tiny_pipe():
    from invgen.pipelines import build_pixel_pipeline

    pipe = build_pixel_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe
