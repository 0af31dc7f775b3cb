"""The embedded benchmark's two figures for a generated set: color bias (oracle) and digit fidelity (CNN)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from invgen.benchmarks.digits.oracle import ColorOracle
from invgen.metrics.fairness import UNREADABLE, bias_score, counts_by_prompt


def digit_figures(
    images: np.ndarray,
    prompts: Sequence[str],
    labels: Sequence[int],
    cnn,
    palette_name: str = "two",
) -> dict:
    """`bias_score` (mean over prompts of the InvDiff bias of the color counts) and `fidelity` (share of
    images the digit CNN reads as the prompted digit), with per-prompt breakdowns.

    Images without color (all black or gray) are `unreadable` for the oracle: counted, and left out of
    the color counts; a prompt with no readable image has a NaN bias score, left out of the mean.
    """
    oracle = ColorOracle(palette_name)
    colors = oracle(images)
    read = cnn.predict(images)
    labels = np.asarray(labels)
    prompts_arr = np.asarray(prompts, dtype=object)
    colored = colors != UNREADABLE
    per_prompt = {}
    counts = counts_by_prompt(list(prompts_arr[colored]), colors[colored], len(oracle.names))
    for p in dict.fromkeys(prompts):
        c = counts.get(p, np.zeros(len(oracle.names), dtype=np.int64))
        mask = prompts_arr == p
        per_prompt[p] = {
            "counts": dict(zip(oracle.names, c.tolist(), strict=True)),
            "unreadable": int((mask & ~colored).sum()),
            "bias_score": bias_score(c),
            "fidelity": float((read[mask] == labels[mask]).mean()),
        }
    scores = [v["bias_score"] for v in per_prompt.values() if not np.isnan(v["bias_score"])]
    return {
        "bias_score": float(np.mean(scores)) if scores else float("nan"),
        "fidelity": float((read == labels).mean()),
        "n_images": len(images),
        "unreadable": int((~colored).sum()),
        "per_prompt": per_prompt,
    }
