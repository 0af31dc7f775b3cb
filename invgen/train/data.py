"""Training data held in memory as tensors, with prompts encoded once by the frozen text encoder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from invgen.config import check
from invgen.data.digits import make_colored_digits
from invgen.data.imagefolder import ImageSet, read_imagefolder
from invgen.errors import InvgenDataError


@dataclass
class DataConfig:
    """Where the training set lives. With `builder: colored_digits` a missing set is built first."""

    root: str = "runs/digits/data"
    split: str = "train"
    builder: str | None = "colored_digits"
    p_align: float = 0.95
    size: int = 16
    palette: str = "two"
    seed: int = 0

    def validate(self, prefix: str = "data") -> None:
        check(0.0 <= self.p_align <= 1.0, f"{prefix}.p_align", f"must be in [0, 1], got {self.p_align}")
        check(self.size >= 8, f"{prefix}.size", f"must be at least 8, got {self.size}")
        check(self.builder in (None, "colored_digits"), f"{prefix}.builder", "must be colored_digits or null")

    @property
    def split_dir(self) -> Path:
        return Path(self.root) / self.split


def prepare_dataset(cfg: DataConfig, is_main: bool = True) -> Path:
    """Build the embedded set if asked and missing (main process only), return the split folder."""
    if cfg.builder == "colored_digits" and is_main:
        make_colored_digits(cfg.root, p_align=cfg.p_align, size=cfg.size, palette_name=cfg.palette, seed=cfg.seed)
    return cfg.split_dir


@dataclass
class EncodedSet:
    images: torch.Tensor  # (N, C, H, W) in [-1, 1]
    prompt_index: torch.Tensor  # (N,) index into `embeddings`
    embeddings: torch.Tensor  # (P + 1, L, D); the last row is the empty prompt (for classifier-free guidance)
    prompts: list[str]
    image_set: ImageSet

    @property
    def empty_index(self) -> int:
        return len(self.prompts)


@torch.no_grad()
def encode_image_set(root: str | os.PathLike, tokenizer, text_encoder, size: int | None = None) -> EncodedSet:
    image_set = read_imagefolder(root, mode="RGB", size=size)
    prompts = sorted(set(image_set.prompts))
    index = {p: i for i, p in enumerate(prompts)}
    ids = tokenizer(
        prompts + [""],
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(text_encoder.device)
    embeddings = text_encoder(ids)[0].float().cpu()
    if not len(image_set):
        raise InvgenDataError(f"{root}: the image set is empty")
    return EncodedSet(
        images=image_set.tensor(),
        prompt_index=torch.tensor([index[p] for p in image_set.prompts]),
        embeddings=embeddings,
        prompts=prompts,
        image_set=image_set,
    )
