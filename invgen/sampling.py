"""Generate image sets reproducibly: every image has its own seed, whatever the batching or process split."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm


def image_seed(seed: int, index: int) -> int:
    return seed * 100_003 + index


@torch.no_grad()
def generate(
    pipe,
    prompts: Sequence[str],
    seeds: Sequence[int],
    batch_size: int = 256,
    progress: bool = True,
    desc: str = "sampling",
    **call_kwargs,
) -> np.ndarray:
    """Images (N, H, W, C) uint8 for `prompts[i]` from initial noise seeded by `seeds[i]`."""
    if len(prompts) != len(seeds):
        raise ValueError("one seed per prompt is needed")
    out = []
    pipe.set_progress_bar_config(disable=True)
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, disable=not progress, leave=False):
        batch = list(prompts[start : start + batch_size])
        gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds[start : start + batch_size]]
        images = pipe(batch, generator=gens, output_type="np", **call_kwargs).images
        out.append((np.asarray(images) * 255).round().astype(np.uint8))
    return np.concatenate(out)
