"""Fingerprints of model weights: which model made a sampling folder or a cached view."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch


def tensors_digest(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """Names, shapes, dtypes and 64 evenly spaced values of every tensor: cheap (no full read of the weights,
    no reduction whose rounding depends on threads or devices) and different for any two trained models."""
    h = hashlib.sha256()
    samples = []
    for name, t in named:
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        flat = t.detach().reshape(-1)
        if flat.numel() and not flat.is_meta:
            samples.append(flat[:: max(1, flat.numel() // 64)][:64].float().cpu())
    if samples:
        h.update(torch.cat(samples).numpy().tobytes())
    return h.hexdigest()


def weights_digest(module: torch.nn.Module) -> str:
    """`tensors_digest` of a module's state dict, in name order, shortened for use in cache keys."""
    return tensors_digest(sorted(module.state_dict().items()))[:16]
