"""`groups.timesteps: auto`: the noise level at which the per-sample losses best show a minority, without labels.

Levels are written as the grouper writes them: a DDPM timestep t for UNets (epsilon or v-prediction), σ·1000
for flow matching. The scan is schedule-aware: `level_grid` spaces its levels evenly in log signal-to-noise
ratio between the levels t = 100 and t = 950 (σ = 0.1 and 0.95), so the same grid size covers every schedule
alike. Each level is scored by `level_score` on the losses of one noise draw.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from invgen.invdiff.mixture import fit_mixture, standardize

GRID_ENDS = (100, 950)
LEVEL_CRITERION = "log-likelihood gain per sample of a minority over the N(0, 1) majority (invgen/invdiff/levels.py)"


def log_snr(objective, levels) -> np.ndarray:
    """log(signal / noise power) of each level: log(ᾱ / (1 − ᾱ)) for DDPM, 2·log((1 − σ) / σ) for flow matching."""
    t = np.asarray(levels, dtype=np.float64)
    if objective.is_flow:
        s = np.clip(t / 1000.0, 1e-6, 1 - 1e-6)
        return 2 * np.log((1 - s) / s)
    ac = objective.scheduler.alphas_cumprod.double().numpy()
    a = np.clip(ac[t.astype(int)], 1e-12, 1 - 1e-12)
    return np.log(a / (1 - a))


def level_at(objective, target: float) -> int:
    """The level (t, or σ·1000) whose log-SNR is closest to `target`."""
    if objective.is_flow:
        return int(np.clip(round(1000.0 / (1.0 + np.exp(target / 2))), 1, 999))
    table = log_snr(objective, np.arange(len(objective.scheduler.alphas_cumprod)))
    return int(np.argmin(np.abs(table - target)))


def level_grid(objective, size: int) -> list[int]:
    """`size` levels evenly spaced in log-SNR from t = 100 to t = 950 (σ = 0.1 to 0.95), low noise first."""
    hi, lo = log_snr(objective, GRID_ENDS)
    levels = [level_at(objective, v) for v in np.linspace(hi, lo, size)]
    return sorted(set(levels))


def level_score(losses: np.ndarray, prompt_index: np.ndarray | None = None) -> tuple[float, dict]:
    """How clearly the losses at one level show a harder minority: the log-likelihood gain per sample of the
    two-group mixture over the majority alone (`fit_mixture`, on per-prompt standardised log-losses).

    It is 0 when nothing stands out of the majority's N(0, 1), and grows with both how far a minority lies
    from it and how large it is, so a handful of outliers scores little. Noise draws blur the minority, so
    it is compared between levels at the same number of draws.
    """
    fit = fit_mixture(standardize(losses, prompt_index), 2)
    detail = {"gain": fit["gain"], "minority_share": float(fit["share"][1]), "minority_mean": float(fit["mean"][1])}
    return fit["gain"], detail


def select_level(
    score_at: Callable[[int], float],
    objective,
    grid_size: int = 8,
) -> tuple[list[int], dict]:
    """The best level of a coarse log-SNR grid, refined once halfway to its neighbours, and the better-scoring
    of its two neighbours in the refined scan (their losses are averaged: near the best level the minority
    still stands out, and a second level's noise draws are as good as more draws at the best one).

    `score_at(level)` scores one level (from its losses); returns [best, neighbour] and the curve for
    groups.json.
    """
    grid = level_grid(objective, grid_size)
    curve = {t: score_at(t) for t in grid}
    best = max(curve, key=curve.get)
    i = grid.index(best)
    snr = log_snr(objective, grid)
    for j in (i - 1, i + 1):
        if 0 <= j < len(grid):
            mid = level_at(objective, (snr[i] + snr[j]) / 2)
            if mid not in curve:
                curve[mid] = score_at(mid)
    levels = sorted(curve)
    best = max(curve, key=curve.get)
    k = levels.index(best)
    near = [levels[j] for j in (k - 1, k + 1) if 0 <= j < len(levels)]
    chosen = [best] + ([max(near, key=curve.get)] if near else [])
    return chosen, {"levels": levels, "log_snr": np.round(log_snr(objective, levels), 3).tolist(),
                    "score": [round(float(curve[t]), 5) for t in levels], "chosen": chosen}
