"""Accuracy of a trained classifier on bias-aligned, bias-conflicting and unbiased test sets.

The test split is the unbiased set (on colored digits: every test digit in every color); its bias-aligned
part (each class with its majority bias value) and bias-conflicting part (every other value) are read from
the metadata column `evaluation.aligned_attribute`, the bias value from `evaluation.bias_attribute` (the
run's config, `EvaluationConfig`). Worst-group accuracy is the lowest accuracy over (class, bias value) groups.
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
        # Every (class, bias value) group's accuracy, keyed "class/bias": which groups fail, not only how badly.
        "group_acc": dict(sorted(groups.items(), key=lambda kv: tuple(int(p) if p.isdigit() else p
                                                                        for p in kv[0].split("/")))),
    }


def load_classifier(run: str | os.PathLike):
    from invgen.cdvg.train import MODEL_DIR, CDvGClassifier

    run = Path(run)
    path = run / MODEL_DIR if (run / MODEL_DIR).is_dir() else run
    if not (path / "config.json").is_file():
        raise InvgenModelError(f"{run} has no trained classifier ({path / 'config.json'} is missing)")
    return CDvGClassifier.from_pretrained(path)


def _run_settings(run: Path, test_dir: str | os.PathLike | None):
    """The test folder (given, or the run's data root /test) and the run's `evaluation` columns."""
    import yaml

    from invgen.cdvg.train import EvaluationConfig

    cfg_path = run / "train_config.yaml"
    recorded = yaml.safe_load(cfg_path.read_text()) if cfg_path.is_file() else None
    if test_dir is None:
        if not recorded:
            raise InvgenDataError(f"{cfg_path} is missing: pass the test set folder explicitly")
        test_dir = Path(recorded["data"]["root"]) / "test"
    columns = EvaluationConfig(**((recorded or {}).get("evaluation") or {}))
    return test_dir, columns


def evaluate_run(
    run: str | os.PathLike,
    test_dir: str | os.PathLike | None = None,
    test_sets: tuple[str, ...] = TEST_SETS,
    bias_attribute: str | None = None,
    write: bool = True,
    aligned_attribute: str | None = None,
) -> dict:
    """Evaluate `run` (a CDvG run folder) on `test_dir` (default: the run's data root /test). The metadata
    columns default to the run's `evaluation` settings."""
    from invgen.cdvg.data import load_labelled_images

    unknown = [s for s in test_sets if s not in TEST_SETS]
    if unknown:
        raise InvgenDataError(f"unknown test set '{unknown[0]}' (known: {', '.join(TEST_SETS)})")
    run = Path(run)
    model = load_classifier(run)
    test_dir, columns = _run_settings(run, test_dir)
    images, labels, image_set = load_labelled_images(test_dir, model.config.num_classes)
    aligned = np.array([bool(v) for v in image_set.attribute(aligned_attribute or columns.aligned_attribute)])
    bias = np.array(image_set.attribute(bias_attribute or columns.bias_attribute))
    with torch.no_grad():
        pred = model.predict(images).numpy()
    acc = accuracies(pred, labels.numpy(), aligned, bias)
    keep = {f"{s}_acc" for s in test_sets} | {"worst_group_acc", "num_groups", "group_acc"}
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
