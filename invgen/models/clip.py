"""open_clip models loaded from local weights, behind one small interface (`ClipBundle`).

Shared by the CLIP zero-shot classifier, the CLIP score and CLIP features of the metrics, the audit, and
the CLIP foreground estimator of the views; weights are never fetched from the network.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from invgen.errors import InvgenModelError, first_line


@dataclass
class ClipBundle:
    """An open_clip model with its image transform and tokenizer (or fakes with the same methods)."""

    model: Any
    preprocess: Callable[[Any], Any]
    tokenizer: Callable[[list[str]], Any]
    device: str = "cpu"

    def encode_images(self, images: np.ndarray, batch_size: int = 64) -> torch.Tensor:
        """L2-normalised image features (N, D) as a float tensor on the CPU."""
        from PIL import Image

        feats = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                chunk = images[start : start + batch_size]
                pils = [
                    Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im).convert("RGB") for im in chunk
                ]
                x = torch.stack([self.preprocess(p) for p in pils]).to(self.device)
                f = self.model.encode_image(x).float()
                feats.append(torch.nn.functional.normalize(f, dim=-1).cpu())
        return torch.cat(feats) if feats else torch.zeros(0, 0)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text features (T, D) as a float tensor on the CPU."""
        with torch.no_grad():
            tokens = self.tokenizer(list(texts))
            tokens = tokens.to(self.device) if hasattr(tokens, "to") else tokens
            f = self.model.encode_text(tokens).float()
        return torch.nn.functional.normalize(f, dim=-1).cpu()

    @property
    def logit_scale(self) -> float:
        scale = getattr(self.model, "logit_scale", None)
        if scale is None:
            return 100.0
        value = float(scale.exp().item()) if hasattr(scale, "exp") else float(np.exp(scale))
        return min(value, 100.0)


def default_device(device: str | None) -> str:
    """`device` when given, else the GPU when there is one."""
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_open_clip(
    path: str | os.PathLike, model_name: str | None = None, device: str | None = None
) -> ClipBundle:
    """open_clip weights from a local path, never from the network.

    A folder must hold `open_clip_config.json` and the weights (the layout of open_clip models on the
    Hugging Face Hub); a single weights file needs its architecture name (`model_name`, e.g. ViT-B-32).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InvgenModelError(f"no CLIP weights at {path} (give a local open_clip folder or weights file)")
    import open_clip

    device = default_device(device)
    if path.is_dir():
        if not (path / "open_clip_config.json").is_file():
            raise InvgenModelError(f"{path} is not an open_clip folder (it has no open_clip_config.json)")
        name, pretrained = f"local-dir:{path}", None
    else:
        if not model_name:
            raise InvgenModelError(
                f"{path} is a single weights file: name its architecture too "
                "(model_name / --clip-model, e.g. ViT-B-32)"
            )
        name, pretrained = model_name, str(path)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=pretrained, device=device
        )
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as e:  # noqa: BLE001 - open_clip raises many types for one meaning: not loadable
        raise InvgenModelError(f"could not load CLIP weights from {path}: {first_line(e)}") from None
    model.eval()
    return ClipBundle(model, preprocess, tokenizer, device)
