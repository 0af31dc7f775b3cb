"""The min step's objective: L = mean_g(L_g) + λ · var_g(L_g).

L_g is the group-weighted mean denoising loss within the batch, Σ_i W_ig l_i / Σ_i W_ig. Groups with
(almost) no weight in a batch are skipped, so a batch that misses a group does not divide by zero.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def group_losses(
    losses: torch.Tensor, weights: torch.Tensor, min_weight: float = 1e-6, all_sum: Callable | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group weighted mean losses (G,) and a mask of the groups present in the batch.

    With several processes each holding a shard of the batch, `all_sum` (`Trainer.all_sum`) sums the
    per-group sums over processes, so the group means are the whole batch's, as with one process.
    """
    if losses.ndim != 1 or weights.ndim != 2 or weights.shape[0] != losses.shape[0]:
        shapes = f"{tuple(losses.shape)} and {tuple(weights.shape)}"
        raise ValueError(f"expected losses (B,) and weights (B, G), got {shapes}")
    w = weights.to(losses.dtype)
    total = (w * losses[:, None]).sum(0)
    mass = w.sum(0)
    if all_sum is not None:
        total, mass = all_sum(total), all_sum(mass)
    present = mass > min_weight
    per_group = total / mass.clamp_min(min_weight)
    return per_group, present


def group_robust_loss(
    losses: torch.Tensor, weights: torch.Tensor, lam: float = 1.0, all_sum: Callable | None = None
) -> torch.Tensor:
    """mean_g(L_g) + λ · var_g(L_g) over the groups present in the batch (population variance)."""
    per_group, present = group_losses(losses, weights, all_sum=all_sum)
    g = per_group[present]
    if g.numel() == 0:
        return losses.mean()
    mean = g.mean()
    var = (g - mean).pow(2).mean()
    return mean + lam * var
