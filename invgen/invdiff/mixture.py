"""The default grouper: a mixture on log-losses standardised within each prompt, its size chosen by BIC.

Why each part (measured on colored digits: docs/invdiff.md, "Max step"):

- **Within each prompt.** A per-sample loss mixes "this image is hard for its prompt" with "this prompt is
  hard" (a digit's shape, a caption's detail). Bias-conflicting samples are hard *relative to their prompt*,
  so each prompt's log-losses are centred on their median and scaled by their MAD, which a minority barely
  moves. Prompts with fewer than `MIN_PROMPT_SIZE` samples (free-form captions) are pooled.
- **Log-losses.** Losses are positive and right-skewed; on a log scale a prompt's majority is close to
  Gaussian, so a long tail is not taken for a second group.
- **The majority held at N(0, 1).** After that standardisation the majority is N(0, 1) by construction; only
  the minority components are fitted (EM), no wider than the majority. A free two-component mixture narrows
  its majority and hands the majority's right tail to the minority, and a share-weighted spread of group
  means (Otsu) puts its break where the two sides balance: both put 3-4 times too many samples in the hard
  group when it is ~5 %.
- **BIC picks the number of groups** (1 to `max_groups`), and a group must stand clear of the majority
  (`MIN_SHIFT`) and of its neighbours (`MIN_SEPARATION`), and be one-sided: the same fit on the mirrored
  scores must gain less than `MAX_MIRROR_GAIN` as much (a tail heavy on both sides is the majority's shape;
  on digits the mirrored gain is 0.005–0.05 of the real one and 0.10 on a weak base, on Student-t majorities
  in log 0.37 and up: the bound sits halfway between, on a log scale). One group
  means the losses show no minority: the weights are then uniform (the min step reduces to plain
  fine-tuning) and a warning says so.
"""

from __future__ import annotations

import math

import numpy as np

MIN_PROMPT_SIZE = 20
MIN_SEPARATION = 1.5
MIN_SHIFT = 2.0
MAX_MIRROR_GAIN = 0.2
_VAR_FLOOR = 1e-4


def standardize(losses: np.ndarray, prompt_index: np.ndarray | None = None, log: bool = True) -> np.ndarray:
    """(log-)losses centred on their prompt's median and scaled by its MAD (all samples together without prompts)."""
    x = np.log(np.maximum(losses, 1e-12)) if log else np.asarray(losses, dtype=np.float64)
    z = np.empty_like(x)
    if prompt_index is None:
        strata = [np.arange(len(x))]
    else:
        prompt_index = np.asarray(prompt_index)
        ids, counts = np.unique(prompt_index, return_counts=True)
        strata = [np.flatnonzero(prompt_index == p) for p, c in zip(ids, counts, strict=True) if c >= MIN_PROMPT_SIZE]
        small = np.isin(prompt_index, ids[counts < MIN_PROMPT_SIZE])
        if small.any():
            strata.append(np.flatnonzero(small))
    for idx in strata:
        z[idx] = _robust_z(x[idx])
    return z


def _robust_z(x: np.ndarray) -> np.ndarray:
    med = np.median(x)
    mad = 1.4826 * np.median(np.abs(x - med))
    if not mad > 0:  # more than half the values equal: fall back on the standard deviation
        mad = x.std()
    return (x - med) / (mad if mad > 0 else 1.0)


def combine(losses: np.ndarray, prompt_index: np.ndarray | None = None, log: bool = True) -> np.ndarray:
    """One standardised score per sample from losses (N,) or per-level losses (L, N).

    Each level is standardised on its own (levels have different loss scales), the levels' scores are
    averaged and the average standardised again: averaging partly independent noise shrinks the majority's
    spread, and the majority must be N(0, 1) for `fit_mixture`.
    """
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim == 1:
        return standardize(losses, prompt_index, log)
    mean = np.mean([standardize(row, prompt_index, log) for row in losses], axis=0)
    return standardize(mean, prompt_index, log=False)


def fit_mixture(z: np.ndarray, k: int, iters: int = 500, tol: float = 1e-9) -> dict:
    """A mixture whose first component is the majority, held at N(0, 1) (what `standardize` makes of it), plus
    k − 1 free Gaussian components started in the right tail; components ordered by mean.

    Holding the majority fixed is the point: a free majority narrows and hands its own right tail to the
    minority component (a 12 % "minority" where 5 % are bias-conflicting), which is the failure this replaces.
    The minority components are no wider than the majority (variance at most 1): the majority's right tail is
    heavier than a Gaussian's (digits, 1,200-step base: its 99.9th percentile at 4.1, not 3.1), and a free
    minority widens to take that tail in. With 16 bias-conflicting samples of 1,437 a free minority held 72
    samples (21 % of its weight on true ones), the capped one 35 (44 %), at the same recall (15.3 of 16).
    These constraints are why this EM is written here: scikit-learn's `GaussianMixture` fits every component
    freely.
    """
    n = len(z)
    null = float((-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum())
    if k == 1:
        return {"share": np.ones(1), "mean": np.zeros(1), "var": np.ones(1), "resp": np.ones((n, 1)),
                "loglik": null, "gain": 0.0}
    share = np.r_[0.95, np.full(k - 1, 0.05 / (k - 1))]
    mean = np.r_[0.0, np.quantile(z, np.linspace(0.97, 0.995, k - 1))]
    var = np.ones(k)
    prev = -np.inf
    for _ in range(iters):
        logp = np.log(share)[None, :] - 0.5 * (np.log(2 * np.pi * var)[None, :] + (z[:, None] - mean) ** 2 / var)
        top = logp.max(1, keepdims=True)
        norm = top[:, 0] + np.log(np.exp(logp - top).sum(1))
        resp = np.exp(logp - norm[:, None])
        loglik = float(norm.sum())
        mass = resp.sum(0) + 1e-12
        share = np.maximum(mass / n, 1e-6)
        share /= share.sum()
        mean[1:] = (resp[:, 1:] * z[:, None]).sum(0) / mass[1:]
        var[1:] = np.clip((resp[:, 1:] * (z[:, None] - mean[1:]) ** 2).sum(0) / mass[1:], _VAR_FLOOR, 1.0)
        if loglik - prev < tol * n:
            break
        prev = loglik
    order = np.argsort(mean, kind="stable")
    return {"share": share[order], "mean": mean[order], "var": var[order], "resp": resp[:, order],
            "loglik": loglik, "gain": (loglik - null) / n}


def bic(fit: dict, n: int) -> float:
    k = len(fit["mean"])
    return -2 * fit["loglik"] + 3 * (k - 1) * math.log(n)


def separation(fit: dict) -> float:
    """The smallest gap between adjacent component means, in their pooled standard deviations."""
    m, v = fit["mean"], fit["var"]
    if len(m) < 2:
        return 0.0
    return float(np.min(np.diff(m) / np.sqrt((v[1:] + v[:-1]) / 2)))


def mixture_groups(
    losses: np.ndarray,
    prompt_index: np.ndarray | None = None,
    max_groups: int = 2,
    log: bool = True,
) -> tuple[np.ndarray, dict]:
    """Soft group weights (N, k), group 0 the majority (easiest), and what was fitted (for groups.json).

    `losses` is (N,) or per level (L, N). k is chosen by BIC among 1..max_groups, then lowered while the
    groups are not apart: the first group above the majority must be centred `MIN_SHIFT` or more majority
    standard deviations above it, and adjacent groups `MIN_SEPARATION` pooled standard deviations apart. With
    k = 1 the weights are uniform over `max_groups` columns and `info["warning"]` says no minority was found.
    """
    z = combine(losses, prompt_index, log)
    n = len(z)
    fits = {k: fit_mixture(z, k) for k in range(1, max_groups + 1)}
    bics = {k: bic(f, n) for k, f in fits.items()}
    k = min(bics, key=bics.get)
    while k > 1 and not _apart(fits[k]):
        k -= 1
    # A minority is harder than the majority, not easier: if the mirrored scores show as large a "minority",
    # the tail is the majority's own shape (heavy on both sides), not a group.
    mirror = fit_mixture(-z, 2)["gain"] if max_groups > 1 else 0.0
    if k > 1 and mirror > MAX_MIRROR_GAIN * fits[2]["gain"]:
        k = 1
    info = {
        "method": "mixture",
        "standardized": "per prompt" if prompt_index is not None else "global",
        "bic": {str(j): round(b, 2) for j, b in bics.items()},
        "num_groups_found": k,
        "mirror_gain_ratio": round(mirror / fits[2]["gain"], 4) if max_groups > 1 and fits[2]["gain"] > 0 else None,
        "component_share": fits[k]["share"].round(4).tolist(),
        "component_mean": fits[k]["mean"].round(4).tolist(),
        "component_std": np.sqrt(fits[k]["var"]).round(4).tolist(),
    }
    if k == 1:
        info["warning"] = ("no minority group: the losses look like one group (BIC, separation), so the weights are "
                           "uniform and the min step is plain fine-tuning")
        return np.full((n, max_groups), 1.0 / max_groups), info
    return fits[k]["resp"], info


def _apart(fit: dict) -> bool:
    m, v = fit["mean"], fit["var"]
    # The majority is the component held at N(0, 1): it must come first (no free component below it), and
    # the next must be clear of it.
    if not (m[0] == 0.0 and v[0] == 1.0) or m[1] < MIN_SHIFT:
        return False
    return len(m) < 3 or separation({"mean": m[1:], "var": v[1:]}) >= MIN_SEPARATION
