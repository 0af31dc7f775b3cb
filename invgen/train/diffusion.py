"""The denoising objective, shared by the base trainer, the grouper and the InvDiff trainer."""

from __future__ import annotations

import torch


def draw_noise(shape: torch.Size | tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Gaussian noise from a CPU generator, so every device and process draws the same numbers."""
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float32)


def denoising_loss(
    unet,
    scheduler,
    x0: torch.Tensor,
    embeddings: torch.Tensor,
    timesteps: torch.Tensor,
    noise: torch.Tensor,
) -> torch.Tensor:
    """Mean squared error of the predicted noise (or v), one value per sample."""
    noise = noise.to(x0.device, x0.dtype)
    t = timesteps.to(x0.device)
    noisy = scheduler.add_noise(x0, noise, t)
    pred = unet(noisy, t, encoder_hidden_states=embeddings.to(x0.device, x0.dtype)).sample
    target = scheduler.get_velocity(x0, noise, t) if scheduler.config.prediction_type == "v_prediction" else noise
    return (pred.float() - target.float()).pow(2).flatten(1).mean(1)
