"""A side network's correction added to a UNet's output: ε̂ = ε_base + s · Δ, for `residual` and `copy`
adapters (a LoRA lives inside the denoiser instead). `GuidedDenoiser` is what the trainer optimises;
`InvariantGuidance.attach` adds the same correction with a forward hook."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def unet_inputs(args: tuple, kwargs: dict) -> tuple[Any, Any, Any]:
    """sample, timestep and encoder_hidden_states of a UNet call, positional or by keyword."""
    sample = kwargs.get("sample", args[0] if args else None)
    timestep = kwargs.get("timestep", args[1] if len(args) > 1 else None)
    context = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
    return sample, timestep, context


def add_delta(output: Any, delta: torch.Tensor) -> Any:
    if isinstance(output, tuple):
        return (output[0] + delta, *output[1:])
    output.sample = output.sample + delta
    return output


class GuidedDenoiser(nn.Module):
    """A UNet plus s · Δ of a side network, called exactly like the UNet (what the trainer optimises)."""

    def __init__(self, denoiser: nn.Module, delta: nn.Module, scale: float = 1.0):
        super().__init__()
        self.denoiser = denoiser
        self.delta = delta
        self.scale = scale

    @property
    def config(self):
        return self.denoiser.config

    def forward(self, *args, **kwargs):
        out = self.denoiser(*args, **kwargs)
        if self.scale == 0:
            return out
        return add_delta(out, self.scale * self.delta(*unet_inputs(args, kwargs)))


GuidedUNet = GuidedDenoiser  # the previous name
