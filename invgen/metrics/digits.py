"""The embedded benchmark's two figures for a generated set: color bias (oracle) and digit fidelity (CNN)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from invgen.metrics.attributes import ColorOracle
from invgen.metrics.fairness import bias_score, counts_by_prompt


def digit_figures(
    images: np.ndarray,
    prompts: Sequence[str],
    labels: Sequence[int],
    cnn,
    palette_name: str = "two",
) -> dict:
    """`bias_score` (mean over prompts of the InvDiff bias of the color counts) and `fidelity` (share of
    images the digit CNN reads as the prompted digit), with per-prompt breakdowns."""
    oracle = ColorOracle(palette_name)
    colors = oracle(images)
    read = cnn.predict(images)
    labels = np.asarray(labels)
    per_prompt = {}
    counts = counts_by_prompt(prompts, colors, len(oracle.names))
    for p, c in counts.items():
        mask = np.array([q == p for q in prompts])
        per_prompt[p] = {
            "counts": dict(zip(oracle.names, c.tolist(), strict=True)),
            "bias_score": bias_score(c),
            "fidelity": float((read[mask] == labels[mask]).mean()),
        }
    return {
        "bias_score": float(np.mean([v["bias_score"] for v in per_prompt.values()])),
        "fidelity": float((read == labels).mean()),
        "n_images": len(images),
        "per_prompt": per_prompt,
    }
