"""Accuracy of a trained classifier on bias-aligned, bias-conflicting and unbiased test sets.

The colored-digits test split holds every test digit in every color, so it is the unbiased set; its
bias-aligned part (each digit in its majority color) and bias-conflicting part (every other color) are read
from the `bias_aligned` attribute. Worst-group accuracy is the lowest accuracy over (class, bias value) groups.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from invgen.atomic import write_json, write_text
from invgen.errors import InvgenDataError, InvgenModelError

TEST_SETS = ("aligned", "conflicting", "unbiased")


def accuracies(pred: np.ndarray, labels: np.ndarray, aligned: np.ndarray, bias: np.ndarray) -> dict[str, float]:
    correct = pred == labels
    groups = {}
    for y, b in set(zip(labels.tolist(), bias.tolist(), strict=True)):
        m = (labels == y) & (bias == b)
        groups[f"{y}/{b}"] = float(correct[m].mean())
    return {
        "aligned_acc": float(correct[aligned].mean()) if aligned.any() else float("nan"),
        "conflicting_acc": float(correct[~aligned].mean()) if (~aligned).any() else float("nan"),
        "unbiased_acc": float(correct.mean()),
        "worst_group_acc": min(groups.values()),
        "num_groups": len(groups),
    }


def load_classifier(run: str | os.PathLike):
    from invgen.cdvg.train import MODEL_DIR, CDvGClassifier

    run = Path(run)
    path = run / MODEL_DIR if (run / MODEL_DIR).is_dir() else run
    if not (path / "config.json").is_file():
        raise InvgenModelError(f"{run} has no trained classifier ({path / 'config.json'} is missing)")
    return CDvGClassifier.from_pretrained(path)


def evaluate_run(
    run: str | os.PathLike,
    test_dir: str | os.PathLike | None = None,
    test_sets: tuple[str, ...] = TEST_SETS,
    bias_attribute: str = "color_index",
    write: bool = True,
) -> dict:
    """Evaluate `run` (a CDvG run folder) on `test_dir` (default: the run's data root /test)."""
    from invgen.cdvg.data import load_labelled_images

    unknown = [s for s in test_sets if s not in TEST_SETS]
    if unknown:
        raise InvgenDataError(f"unknown test set '{unknown[0]}' (known: {', '.join(TEST_SETS)})")
    run = Path(run)
    model = load_classifier(run)
    if test_dir is None:
        import yaml

        cfg_path = run / "train_config.yaml"
        if not cfg_path.is_file():
            raise InvgenDataError(f"{cfg_path} is missing: pass the test set folder explicitly")
        test_dir = Path(yaml.safe_load(cfg_path.read_text())["data"]["root"]) / "test"
    images, labels, image_set = load_labelled_images(test_dir, model.config.num_classes)
    aligned = np.array([bool(v) for v in image_set.attribute("bias_aligned")])
    bias = np.array(image_set.attribute(bias_attribute))
    with torch.no_grad():
        pred = model.predict(images).numpy()
    acc = accuracies(pred, labels.numpy(), aligned, bias)
    keep = {f"{s}_acc" for s in test_sets} | {"worst_group_acc", "num_groups"}
    result = {"run": str(run), "test_dir": str(test_dir), **{k: v for k, v in acc.items() if k in keep}}
    if write:
        from invgen.metrics.render import json_safe

        write_json(run / "eval.json", json_safe(result))  # an absent test group's NaN accuracy becomes null
        write_text(run / "eval.md", table([result]))
    return result


def table(results: list[dict]) -> str:
    cols = [c for c in ("aligned_acc", "conflicting_acc", "unbiased_acc", "worst_group_acc") if c in results[0]]
    lines = ["| run | " + " | ".join(c.removesuffix("_acc") for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for r in results:
        lines.append(f"| {r['run']} | " + " | ".join(f"{100 * r[c]:.1f}" for c in cols) + " |")
    return "\n".join(lines) + "\n"
