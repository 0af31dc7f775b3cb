"""Generate image sets reproducibly: every image has its own seed, whatever the batching or process split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from invgen.errors import InvgenDataError


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


def read_prompts(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise InvgenDataError(f"prompts file {path} does not exist")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise InvgenDataError(f"prompts file {path} has no prompts (one per line)")
    return prompts


def sample_to_imagefolder(
    pipe,
    prompts: Sequence[str],
    per_prompt: int,
    out: str | Path,
    seed: int = 0,
    batch_size: int = 64,
    info: dict | None = None,
    **call_kwargs,
) -> Path:
    """Generate `per_prompt` images per prompt into an imagefolder, resumably and across processes.

    Image i (prompt i // per_prompt) has its own seed, and images are generated in fixed global batches
    that processes take in turn, so 1 or N processes, or a resumed run, write the same files and pixels.
    Each PNG is written atomically; `metadata.jsonl` is written last, so a set with it is complete.
    A batch whose images all exist is skipped on resume.
    """
    from invgen.data.imagefolder import ImageRecord, save_image, write_metadata
    from invgen.distributed import process_state

    if per_prompt <= 0:
        raise InvgenDataError(f"per_prompt must be positive, got {per_prompt}")
    state = process_state()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = len(prompts) * per_prompt
    all_prompts = [prompts[i // per_prompt] for i in range(n)]
    names = [f"{i:06d}.png" for i in range(n)]
    seeds = [image_seed(seed, i) for i in range(n)]
    batches = [range(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    mine = batches[state.process_index :: state.num_processes]
    todo = [b for b in mine if not all((out / names[i]).is_file() for i in b)]
    pipe.set_progress_bar_config(disable=True)
    for b in tqdm(todo, desc="sampling", disable=not state.is_main_process):
        images = generate(pipe, [all_prompts[i] for i in b], [seeds[i] for i in b], batch_size=len(b),
                          progress=False, **call_kwargs)
        for i, image in zip(b, images, strict=True):
            if not (out / names[i]).is_file():
                save_image(image, out / names[i])
    state.wait_for_everyone()
    if state.is_main_process:
        extra = dict(info or {})
        records = [ImageRecord(names[i], all_prompts[i], extra={"seed": seeds[i], "index": i, **extra})
                   for i in range(n)]
        write_metadata(out, records)
    state.wait_for_everyone()
    return out
