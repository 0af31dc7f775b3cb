"""The min step's objective: L = mean_g(L_g) + λ · var_g(L_g).

L_g is the group-weighted mean denoising loss within the batch, Σ_i W_ig l_i / Σ_i W_ig. Groups with
(almost) no weight in a batch are skipped, so a batch that misses a group does not divide by zero.
"""

from __future__ import annotations

import torch


def group_losses(
    losses: torch.Tensor, weights: torch.Tensor, min_weight: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group weighted mean losses (G,) and a mask of the groups present in the batch."""
    if losses.ndim != 1 or weights.ndim != 2 or weights.shape[0] != losses.shape[0]:
        shapes = f"{tuple(losses.shape)} and {tuple(weights.shape)}"
        raise ValueError(f"expected losses (B,) and weights (B, G), got {shapes}")
    w = weights.to(losses.dtype)
    mass = w.sum(0)
    present = mass > min_weight
    per_group = (w * losses[:, None]).sum(0) / mass.clamp_min(min_weight)
    return per_group, present


def group_robust_loss(losses: torch.Tensor, weights: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """mean_g(L_g) + λ · var_g(L_g) over the groups present in the batch (population variance)."""
    per_group, present = group_losses(losses, weights)
    g = per_group[present]
    if g.numel() == 0:
        return losses.mean()
    mean = g.mean()
    var = (g - mean).pow(2).mean()
    return mean + lam * var
