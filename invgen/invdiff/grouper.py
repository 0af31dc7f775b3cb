"""The max step: infer latent bias groups from a frozen model's own denoising losses.

1. Per-sample losses l_i of the frozen model at fixed noise levels, averaged over several seeded noise
   draws (so they are reproducible and less noisy). Bias-conflicting samples are those the biased model
   finds hard; the noise level matters. t is a DDPM timestep for UNets and σ · 1000 for flow matching;
   `groups.timesteps: auto` (the default) chooses it from the losses alone (invgen/invdiff/levels.py).
2. Groups: by default a mixture on standardised log-losses (invgen/invdiff/mixture.py). `method: spread`
   is the earlier grouper kept here: soft group weights W (N × G, rows on the simplex) fitted by projected
   gradient ascent on the spread of the group-mean losses m_g = Σ_i W_ig l_i / Σ_i W_ig, each group
   weighted by its share n_g / N (n_g = Σ_i W_ig), plus β · mean_g log(n_g / N). The share weighting and
   the log term keep every group non-empty: the plain std of group means is maximised by one outlier alone
   in a group. Losses are standardised first so β means the same on every model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from invgen.config import check, check_seed


@dataclass
class GrouperConfig:
    source: Literal["inferred", "oracle"] = "inferred"
    # "auto": the level is chosen from the losses alone (invgen/invdiff/levels.py); or a list of levels (t for
    # DDPM, σ·1000 for flow matching) whose losses are averaged.
    timesteps: str | list[int] = "auto"
    # Noise draws of the final losses (and the most any round of the `auto` selector uses): on digits the loss
    # ROC-AUC at the chosen level grows 0.82 → 0.95 → 0.99 with 1 → 4 → 16 draws. The real-model recipes
    # use 2 for cost (docs/real-models.md).
    noise_draws: int = 16
    # The level scan of `timesteps: auto`: grid size, noise draws per scanned level.
    scan_levels: int = 8
    scan_draws: int = 1
    # mixture: Gaussian mixture on standardised log-losses, BIC (invgen/invdiff/mixture.py); spread: the
    # share-weighted spread of group means below (the earlier default, kept for comparison).
    method: Literal["mixture", "spread"] = "mixture"
    # mixture only: standardise the losses within each prompt (prompt) or over all samples (global).
    standardize: Literal["prompt", "global"] = "prompt"
    # At most this many groups (mixture: BIC may find fewer); exactly this many (spread).
    num_groups: int = 2
    assignment: Literal["soft", "hard"] = "soft"
    # spread only: β, and the projected-gradient fit.
    balance: float = 0.05
    steps: int = 500
    learning_rate: float = 0.05
    seed: int = 0
    batch_size: int = 256
    # Metadata attribute holding the true group (oracle source, and agreement reports when present).
    oracle_attribute: str = "bias_aligned"

    def validate(self, prefix: str = "groups") -> None:
        check(self.num_groups >= 2, f"{prefix}.num_groups", f"must be at least 2, got {self.num_groups}")
        check(self.noise_draws > 0, f"{prefix}.noise_draws", f"must be positive, got {self.noise_draws}")
        if isinstance(self.timesteps, str):
            check(self.timesteps == "auto", f"{prefix}.timesteps",
                  f"must be auto or a list of levels in [0, 1000), got {self.timesteps!r}")
        else:
            check(bool(self.timesteps), f"{prefix}.timesteps", "must be auto or list at least one level")
            check(all(0 <= t < 1000 for t in self.timesteps), f"{prefix}.timesteps",
                  f"levels must be in [0, 1000), got {self.timesteps}")
        check(3 <= self.scan_levels <= 50, f"{prefix}.scan_levels", f"must be from 3 to 50, got {self.scan_levels}")
        check(self.scan_draws > 0, f"{prefix}.scan_draws", f"must be positive, got {self.scan_draws}")
        check(self.balance >= 0, f"{prefix}.balance", "must be 0 or more")
        check(self.learning_rate > 0, f"{prefix}.learning_rate", f"must be positive, got {self.learning_rate}")
        check_seed(self.seed, f"{prefix}.seed")
        check(self.steps > 0, f"{prefix}.steps", "must be positive")


@torch.no_grad()
def per_sample_losses(
    denoiser,
    objective,
    images: torch.Tensor,
    conditions: dict[str, torch.Tensor] | torch.Tensor,
    timesteps: list[int],
    noise_draws: int,
    seed: int = 0,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    progress: bool = True,
    index_offset: int = 0,
    prompt_index: torch.Tensor | None = None,
) -> np.ndarray:
    """Mean denoising loss of each sample over `timesteps` × `noise_draws` seeded noise draws.

    `objective` is the family's `DenoisingObjective` (a DDPM scheduler alone means the `sd` family);
    each t ∈ [0, 1000) is a DDPM timestep, or σ = t / 1000 for flow matching. `conditions` has one row
    per sample, or one per prompt when `prompt_index` (N,) says which prompt each sample has (large
    conditions such as T5 states are then never copied per sample); a tensor is SD's prompt embeddings.
    Sample i's noise depends only on (seed, i + index_offset, t, draw), so the result does not depend on
    batching or on how samples are split across processes.
    """
    table = loss_table(denoiser, objective, images, conditions, timesteps, range(noise_draws), seed, batch_size,
                       device, progress, index_offset, prompt_index)
    return table.mean((0, 1))


@torch.no_grad()
def loss_table(
    denoiser,
    objective,
    images: torch.Tensor,
    conditions: dict[str, torch.Tensor] | torch.Tensor,
    timesteps: list[int],
    draws: range | list[int],
    seed: int = 0,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    progress: bool = True,
    index_offset: int = 0,
    prompt_index: torch.Tensor | None = None,
) -> np.ndarray:
    """Per-sample losses (len(timesteps), len(draws), N) for the noise draws numbered `draws`.

    Draw k at level t is the same noise whichever other draws or levels are asked for, so a level scan's
    first draw is reused by the final losses at the chosen level.
    """
    from invgen.train.conditioning import PROMPT_EMBEDS
    from invgen.train.diffusion import DenoisingObjective

    if not isinstance(objective, DenoisingObjective):
        objective = DenoisingObjective("sd", objective)
    if isinstance(conditions, torch.Tensor):
        conditions = {PROMPT_EMBEDS: conditions}
    n = len(images)
    draws = list(draws)
    table = np.zeros((len(timesteps), len(draws), n), dtype=np.float64)
    jobs = [(a, b, s) for a in range(len(timesteps)) for b in range(len(draws)) for s in range(0, n, batch_size)]
    for a, b, start in tqdm(jobs, desc="per-sample losses", disable=not progress, leave=False):
        t, k = int(timesteps[a]), draws[b]
        idx = torch.arange(start, min(start + batch_size, n))
        noise = torch.stack([
            torch.randn(images.shape[1:], generator=_generator(_noise_seed(seed, int(i) + index_offset, t, k)))
            for i in idx
        ])
        rows = idx if prompt_index is None else prompt_index[idx]
        cond = {name: v[rows].to(device) for name, v in conditions.items()}
        x0 = images[idx].to(device)
        levels = objective.fixed_levels(t, len(idx))
        loss = objective.per_sample_loss(denoiser, x0, cond, levels, noise)
        table[a, b, start : start + len(idx)] = loss.double().cpu().numpy()
    return table


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _noise_seed(seed: int, i: int, t: int, k: int) -> int:
    return ((seed * 1_000_003 + i) * 1_009 + t) * 31 + k


def project_simplex(w: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row onto the probability simplex (Duchi et al., 2008)."""
    u, _ = torch.sort(w, dim=1, descending=True)
    css = u.cumsum(1) - 1
    k = torch.arange(1, w.shape[1] + 1, device=w.device, dtype=w.dtype)
    cond = u - css / k > 0
    rho = cond.to(w.dtype).cumsum(1).argmax(1, keepdim=True)
    theta = css.gather(1, rho) / (rho + 1).to(w.dtype)
    return (w - theta).clamp_min(0)


def spread_objective(w: torch.Tensor, z: torch.Tensor, balance: float) -> torch.Tensor:
    """Size-weighted std of the group-mean losses, plus β · mean_g log(share_g).

    Weighting each group's deviation by its share is what keeps groups non-empty: a group of one
    outlier has a large mean but almost no weight, so the optimum is the natural break between easy and
    hard samples (Otsu's criterion) rather than a singleton. The log term adds a tunable push towards
    larger groups.
    """
    mass = w.sum(0)
    share = mass / len(z)
    means = (w * z[:, None]).sum(0) / mass.clamp_min(1e-8)
    center = (share * means).sum()
    spread = (share * (means - center) ** 2).sum().clamp_min(1e-12).sqrt()
    return spread + balance * torch.log(share.clamp_min(1e-12)).mean()


def fit_group_weights(
    losses: np.ndarray,
    num_groups: int = 2,
    balance: float = 0.05,
    steps: int = 500,
    learning_rate: float = 0.05,
    seed: int = 0,
) -> np.ndarray:
    """Soft group weights (N, G), rows on the simplex; group 0 has the lowest mean loss."""
    raw = torch.as_tensor(losses, dtype=torch.float64)
    z = (raw - raw.mean()) / raw.std().clamp_min(1e-12)
    g = torch.Generator().manual_seed(seed)
    # Start from loss quantiles (a good basin), softened and jittered so no group starts empty.
    ranks = torch.argsort(torch.argsort(z)).to(torch.float64) / max(len(z) - 1, 1)
    centers = (torch.arange(num_groups, dtype=torch.float64) + 0.5) / num_groups
    w = torch.softmax(-((ranks[:, None] - centers[None, :]) ** 2) / 0.02, dim=1)
    w = project_simplex(w + 0.01 * torch.rand(w.shape, generator=g, dtype=torch.float64))
    w.requires_grad_(True)
    opt = torch.optim.Adam([w], lr=learning_rate)
    for _ in range(steps):
        loss = -spread_objective(w, z, balance)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            w.copy_(project_simplex(w))
    w = w.detach()
    order = torch.argsort((w * z[:, None]).sum(0) / w.sum(0).clamp_min(1e-8))
    return w[:, order].numpy()


def harden(weights: np.ndarray) -> np.ndarray:
    hard = np.zeros_like(weights)
    hard[np.arange(len(weights)), weights.argmax(1)] = 1.0
    return hard


def oracle_weights(groups: np.ndarray, num_groups: int) -> np.ndarray:
    w = np.zeros((len(groups), num_groups))
    w[np.arange(len(groups)), groups] = 1.0
    return w


def separation_report(losses: np.ndarray, weights: np.ndarray, true_group: np.ndarray | None) -> dict:
    """Group sizes and mean losses; with true labels, how well inferred groups match them."""
    mass = weights.sum(0)
    report = {
        "group_sizes": mass.round(3).tolist(),
        "group_mean_loss": ((weights * losses[:, None]).sum(0) / np.maximum(mass, 1e-12)).tolist(),
    }
    if true_group is not None and len(np.unique(true_group)) > 1:
        from sklearn.metrics import roc_auc_score

        hard = weights.argmax(1)
        # With two true groups, "hard" is group 1 (bias-conflicting) and the inferred hardest group.
        conflicting = (true_group == true_group.max()).astype(int)
        report["loss_auc"] = float(roc_auc_score(conflicting, losses))
        report["group_auc"] = float(roc_auc_score(conflicting, weights[:, -1]))
        report["group_agreement"] = float(((hard == weights.shape[1] - 1).astype(int) == conflicting).mean())
        report["true_group_sizes"] = np.bincount(true_group).tolist()
    return report
