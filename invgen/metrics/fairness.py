"""Fairness of an attribute distribution: InvDiff bias score, fairness discrepancy, KL, entropy, Δ ratio.

Every metric takes counts of K attribute values (one row per prompt, or a single row) and an optional
target distribution `p*` (uniform by default; e.g. `[0.75, 0.25]`). Formulas are in
docs/metrics.md. The `*_batch` forms work on any array whose last axis holds the K counts, which is
what keeps the bootstrap a handful of numpy calls instead of a Python loop over resamples.

A row of counts that sums to zero (a prompt without images) has no distribution: its metrics are NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

ArrayLike = Sequence[float] | np.ndarray

UNREADABLE = -1
"""The index a classifier gives an image it cannot read (no attribute value); reports count such images
apart and leave them out of every figure."""


def _target(k: int, target: ArrayLike | None) -> np.ndarray:
    if target is None:
        return np.full(k, 1.0 / k)
    t = np.asarray(target, dtype=np.float64)
    if t.shape != (k,) or not np.all(np.isfinite(t)) or (t <= 0).any() or not np.isclose(t.sum(), 1.0):
        raise ValueError(f"target must be {k} positive numbers summing to 1, got {t.tolist()}")
    return t


def _shares(counts: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Counts as float array and their shares along the last axis (NaN rows where the total is 0)."""
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim == 0 or c.shape[-1] == 0:
        raise ValueError("counts need at least one attribute value")
    if (c < 0).any():
        raise ValueError("counts must be non-negative")
    n = c.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = c / n
    return c, p


def bias_score_batch(counts: ArrayLike, target: ArrayLike | None = None) -> np.ndarray:
    """InvDiff bias `Σ_{i<j} |c_i − c_j| / Σ_k c_k / (K(K−1)/2)` along the last axis.

    With a target p*, counts are first divided by K·p*_k, so a distribution equal to p* scores 0.
    """
    c, _ = _shares(counts)
    k = c.shape[-1]
    if k < 2:
        return np.where(c.sum(-1) > 0, 0.0, np.nan)
    if target is not None:
        c = c / (k * _target(k, target))
    # Σ_{i<j} |x_i − x_j| from sorted values: the j-th smallest is subtracted j times, added K−1−j times.
    x = np.sort(c, axis=-1)
    weights = 2.0 * np.arange(k) - (k - 1)
    pair_sum = (x * weights).sum(axis=-1)
    n = c.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pair_sum / n / (k * (k - 1) / 2)


def fairness_discrepancy_batch(counts: ArrayLike, target: ArrayLike | None = None) -> np.ndarray:
    """`‖p̄ − p*‖₂` along the last axis."""
    _, p = _shares(counts)
    return np.linalg.norm(p - _target(p.shape[-1], target), axis=-1)


def kl_divergence_batch(counts: ArrayLike, target: ArrayLike | None = None) -> np.ndarray:
    """`KL(p̄ ‖ p*) = Σ_k p_k log(p_k / p*_k)` in nats; values with p_k = 0 contribute 0."""
    _, p = _shares(counts)
    t = _target(p.shape[-1], target)
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(p > 0, p * np.log(p / t), 0.0)
    kl = terms.sum(axis=-1)
    return np.where(np.isnan(p).any(axis=-1), np.nan, kl)


def _entropy(p: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return 0.0 - np.where(p > 0, p * np.log(p), 0.0).sum(axis=-1)


def normalized_entropy_batch(counts: ArrayLike, target: ArrayLike | None = None) -> np.ndarray:
    """`H(p̄) / log K` (1 = uniform, 0 = one value only); with a target p*, `H(p̄) / H(p*)`.

    Entropy only sees the spread, not which value is frequent: with a target it is 1 for any permutation
    of p*, and above 1 when p̄ is more spread than p*. KL and FD tell the direction.
    """
    _, p = _shares(counts)
    k = p.shape[-1]
    h = _entropy(p)
    if k < 2:
        return np.where(np.isnan(p).any(axis=-1), np.nan, 1.0)
    ref = np.log(k) if target is None else float(_entropy(_target(k, target)))
    return np.where(np.isnan(p).any(axis=-1), np.nan, h / ref)


def delta_ratio_batch(
    counts: ArrayLike, target: ArrayLike | None = None, value: int | None = None
) -> np.ndarray:
    """TIME/UCE ratio per row: `|p_v − p*_v| / p*_v` for one attribute value v, or its mean over all values.

    For K = 2 and a uniform target both forms equal TIME's `|p − ½| / ½` (each value deviates equally).
    """
    _, p = _shares(counts)
    t = _target(p.shape[-1], target)
    r = np.abs(p - t) / t
    return r[..., value] if value is not None else r.mean(axis=-1)


def _one_row(counts: ArrayLike, name: str) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1:
        batch = f": use {name}_batch for a table (one value per row)" if f"{name}_batch" in globals() else ""
        raise ValueError(f"{name} takes one row of K counts, got an array of shape {c.shape}{batch}")
    return c


def bias_score(counts: ArrayLike, target: ArrayLike | None = None) -> float:
    """InvDiff bias of one row of counts (0 = balanced or at p*; 1 = one value only for K = 2)."""
    return float(bias_score_batch(_one_row(counts, "bias_score"), target))


def shen_bias(freqs: ArrayLike, target: ArrayLike | None = None) -> float:
    """Shen et al.'s bias: the InvDiff formula on frequencies (scale-free, so counts give the same value).

    For K = 2 and a uniform target it is `|2p − 1|`.
    """
    return bias_score(freqs, target)


def fairness_discrepancy(counts: ArrayLike, target: ArrayLike | None = None) -> float:
    return float(fairness_discrepancy_batch(_one_row(counts, "fairness_discrepancy"), target))


def kl_divergence(counts: ArrayLike, target: ArrayLike | None = None) -> float:
    """KL(p̄ ‖ p*) in nats; empty values contribute 0."""
    return float(kl_divergence_batch(_one_row(counts, "kl_divergence"), target))


def normalized_entropy(counts: ArrayLike, target: ArrayLike | None = None) -> float:
    """Entropy of p̄ divided by log K (or by H(p*) with a target): 1 = uniform, 0 = one value only."""
    return float(normalized_entropy_batch(_one_row(counts, "normalized_entropy"), target))


def delta_ratio(
    counts_per_prompt: ArrayLike, target: ArrayLike | None = None, value: int | None = None
) -> float:
    """TIME/UCE `Δ = mean_prompts |p − p*| / p*` over rows of counts (one row per prompt)."""
    c = np.atleast_2d(np.asarray(counts_per_prompt, dtype=np.float64))
    return float(np.nanmean(delta_ratio_batch(c, target, value)))


METRICS = {
    "bias_score": bias_score_batch,
    "fairness_discrepancy": fairness_discrepancy_batch,
    "kl_target": kl_divergence_batch,
    "kl_uniform": lambda c, target=None: kl_divergence_batch(c, None),
    "entropy": normalized_entropy_batch,
    "delta": delta_ratio_batch,
}
"""Report keys and their batch functions. `kl_uniform` ignores the target by its name; the others use it."""


def fairness_metrics(counts: ArrayLike, target: ArrayLike | None = None) -> dict[str, float]:
    """All metrics of one row of counts, keyed as in the report."""
    row = _one_row(counts, "fairness_metrics")
    return {name: float(fn(row, target)) for name, fn in METRICS.items()}


def counts_by_prompt(
    prompts: Sequence[str], values: Sequence[int] | np.ndarray, k: int
) -> dict[str, np.ndarray]:
    """Count attribute indices per prompt, keeping prompt order of first appearance."""
    order = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
    v = np.asarray(values, dtype=np.int64)
    if len(v) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(v)} attribute values")
    if len(v) and (v.min() < 0 or v.max() >= k):
        raise ValueError(f"attribute indices must lie in [0, {k}), got {v.min()}..{v.max()}")
    rows = np.fromiter((order[p] for p in prompts), dtype=np.int64, count=len(prompts))
    table = np.bincount(rows * k + v, minlength=len(order) * k).reshape(len(order), k)
    return {p: table[i] for p, i in order.items()}


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    """Mean ignoring NaN (prompts without images); NaN, without a warning, where nothing is left."""
    x = np.asarray(x, dtype=np.float64)
    ok = ~np.isnan(x)
    n = ok.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(ok, x, 0.0).sum(axis=axis) / n, np.nan)


def _interval(draws: np.ndarray, confidence: float) -> list[float]:
    alpha = (1.0 - confidence) / 2.0
    finite = draws[~np.isnan(draws)]
    if finite.size == 0:
        return [float("nan"), float("nan")]
    lo, hi = np.quantile(finite, [alpha, 1.0 - alpha])
    return [float(lo), float(hi)]


def fairness_summary(
    counts: Mapping[str, ArrayLike] | ArrayLike,
    target: ArrayLike | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Metrics per prompt and overall (the mean over prompts), with percentile bootstrap intervals.

    The bootstrap resamples images within each prompt (prompts are the fixed design, images the sample):
    a resampled prompt's counts are a multinomial draw with its observed shares, so B resamples of all
    prompts are one `multinomial` call per prompt. A value never observed is never resampled, so a
    prompt with one value only gets a zero-width interval: read it with the count beside it.

    The interval describes the estimate, and these estimates are biased upwards on small samples: a
    model exactly at the target still scores above 0 with finitely many images. `at_target` gives that
    floor (the metric's mean over B sets drawn from p* with the same images per prompt), the value to
    read a score against.
    """
    if isinstance(counts, Mapping):
        names = list(counts)
        table = np.asarray([np.asarray(counts[p], dtype=np.float64) for p in names])
    else:
        table = np.atleast_2d(np.asarray(counts, dtype=np.float64))
        names = [str(i) for i in range(len(table))]
    if table.ndim != 2 or len(table) == 0:
        raise ValueError("counts need one row of K values per prompt")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    totals = table.sum(axis=1).astype(np.int64)
    t = _target(table.shape[1], target)
    draws = np.zeros((len(table), max(n_boot, 0), table.shape[1]))
    fair = np.zeros_like(draws)
    for i, (row, n) in enumerate(zip(table, totals, strict=True)):
        if n_boot > 0 and n > 0:
            draws[i] = rng.multinomial(n, row / n, size=n_boot)
            fair[i] = rng.multinomial(n, t, size=n_boot)

    per_prompt: dict[str, dict] = {
        name: {"n": int(totals[i]), "counts": table[i].astype(np.int64).tolist()}
        for i, name in enumerate(names)
    }
    overall: dict[str, float] = {}
    intervals: dict[str, list[float]] = {}
    at_target: dict[str, float] = {}
    prompt_intervals: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    for key, fn in METRICS.items():
        values = fn(table, target)
        overall[key] = float(_nanmean(values, axis=0))
        for i, name in enumerate(names):
            per_prompt[name][key] = float(values[i])
        if n_boot > 0:
            boot = fn(draws, target)  # (P, B)
            intervals[key] = _interval(_nanmean(boot, axis=0), confidence)
            at_target[key] = float(np.mean(_nanmean(fn(fair, target), axis=0)))
            for i, name in enumerate(names):
                prompt_intervals[name][key] = _interval(boot[i], confidence)
    if n_boot > 0:
        for name in names:
            per_prompt[name]["ci"] = prompt_intervals[name]
    return {
        "overall": overall,
        "ci": intervals,
        "at_target": at_target,
        "per_prompt": per_prompt,
        "n_boot": int(n_boot),
        "confidence": confidence,
    }
