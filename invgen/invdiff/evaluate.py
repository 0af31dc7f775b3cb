"""The last stage of a recipe: sample the base model with and without the adapter, then measure the bias.

    accelerate launch -m invgen.train evaluate --config configs/sd15/invdiff_waterbirds.yaml \\
        evaluation.classifier=clip:/models/open_clip-vit-b-32

Writes into `output_dir`: `samples/base` and `samples/invdiff` (imagefolders, same prompts and seeds),
`reports/base.json`, `reports/invdiff.json`, `reports/comparison.json` (+ markdown and plots), and
`evaluation.json` (the headline figures and the sampling time with and without the adapter).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invgen.config import GUIDANCE_SCALE_LIMIT, SCALE_LIMIT, check, check_seed

if TYPE_CHECKING:
    from invgen.invdiff.train import InvDiffConfig


@dataclass
class EvalConfig:
    # Generation prompts; empty: the training set's distinct captions.
    prompts: list[str] = field(default_factory=list)
    per_prompt: int = 50
    attribute: str = "color"
    # oracle:color | clip:PATH (local open_clip weights) | checkpoint:PATH (a trained attribute classifier)
    classifier: str = "oracle:color"
    # For clip: each attribute value and its prompts (averaged: prompt ensembling).
    attribute_prompts: dict[str, list[str]] = field(default_factory=dict)
    clip_model: str | None = None  # the architecture, when clip:PATH is a single weights file
    scale: float = 1.0  # the adapter's guidance scale s
    num_inference_steps: int = 25
    guidance_scale: float = 2.0  # classifier-free guidance
    # null: data.size, the resolution the adapter was trained at (a pipeline's own default can be far
    # larger: Flux and SDXL sample 1024 px)
    resolution: int | None = None
    seed: int = 0
    batch_size: int = 16

    def validate(self, prefix: str = "evaluation") -> None:
        check(self.per_prompt > 0, f"{prefix}.per_prompt", f"must be positive, got {self.per_prompt}")
        check(self.batch_size > 0, f"{prefix}.batch_size", f"must be positive, got {self.batch_size}")
        check(self.num_inference_steps > 0, f"{prefix}.num_inference_steps", "must be positive")
        check(abs(self.scale) <= SCALE_LIMIT, f"{prefix}.scale",
              f"must be between -{SCALE_LIMIT:g} and {SCALE_LIMIT:g}, got {self.scale}")
        check(0 <= self.guidance_scale <= GUIDANCE_SCALE_LIMIT, f"{prefix}.guidance_scale",
              f"must be between 0 and {GUIDANCE_SCALE_LIMIT:g}, got {self.guidance_scale}")
        check_seed(self.seed, f"{prefix}.seed")
        check(
            not self.classifier.startswith("clip:") or len(self.attribute_prompts) >= 2,
            f"{prefix}.attribute_prompts",
            "a clip classifier needs at least two attribute values with their prompts",
        )


def evaluate_invdiff(cfg: InvDiffConfig) -> Path:
    """Sample base and guided sets, write bias reports and their comparison; returns `output_dir`."""
    from accelerate import PartialState

    from invgen.atomic import write_json
    from invgen.data.imagefolder import read_imagefolder, read_metadata
    from invgen.invdiff.guidance import InvariantGuidance
    from invgen.invdiff.train import _load_base
    from invgen.metrics.attributes import load_classifier
    from invgen.metrics.report import bias_report, compare_reports, json_safe, write_comparison, write_report
    from invgen.sampling import sample_to_imagefolder

    e = cfg.evaluation
    out = Path(cfg.output_dir)
    state = PartialState()
    guidance = InvariantGuidance.from_pretrained(out)
    # Fail on a bad classifier before minutes of sampling.
    classifier = load_classifier(e.classifier, attribute=e.attribute, prompts=e.attribute_prompts or None,
                                 model_name=e.clip_model)
    classifier.spec = e.classifier
    pipe = _load_base(cfg)
    pipe.to(state.device)
    prompts = e.prompts or sorted({r.prompt for r in read_metadata(cfg.data.split_dir)})
    call: dict[str, Any] = {"num_inference_steps": e.num_inference_steps, "guidance_scale": e.guidance_scale}
    side = e.resolution or cfg.data.size
    call.update(height=side, width=side)
    seconds = {}
    for name in ("base", "invdiff"):
        if name == "invdiff":
            guidance.attach(pipe, scale=e.scale)
        info = {"pipeline": str(cfg.base_model), "guidance": str(out) if name == "invdiff" else None,
                "scale": e.scale if name == "invdiff" else None, **call}
        t0 = time.perf_counter()
        # overwrite: these folders are this job's own (their manifest says so); another scale or prompt set
        # replaces the earlier evaluation's images instead of stopping the job.
        sample_to_imagefolder(pipe, prompts, e.per_prompt, out / "samples" / name, seed=e.seed,
                              batch_size=e.batch_size, info=info, overwrite=True, **call)
        seconds[name] = time.perf_counter() - t0
    guidance.detach(pipe)
    if not state.is_main_process:
        return out
    reports = {}
    for name in ("base", "invdiff"):
        reports[name] = bias_report(out / "samples" / name, e.attribute, classifier)
        write_report(reports[name], out / "reports" / f"{name}.json")
    write_comparison(compare_reports([reports["base"], reports["invdiff"]], ["base", "invdiff"]),
                     out / "reports" / "comparison.json")
    changed = float(abs(
        read_imagefolder(out / "samples" / "base").images.astype(int)
        - read_imagefolder(out / "samples" / "invdiff").images.astype(int)
    ).mean())
    summary = {
        "classifier": e.classifier,
        "attribute": e.attribute,
        "images_per_set": len(prompts) * e.per_prompt,
        "bias_score": {k: r["bias_score"] for k, r in reports.items()},
        "fairness_discrepancy": {k: r["fairness_discrepancy"] for k, r in reports.items()},
        "mean_abs_pixel_change": changed,
        "sampling_s": seconds,
        "sampling_overhead": seconds["invdiff"] / max(seconds["base"], 1e-9),
    }
    write_json(out / "evaluation.json", json_safe(summary))  # a set the classifier cannot read has null figures
    print(f"evaluate: bias score {summary['bias_score']['base']:.3f} (base) -> "
          f"{summary['bias_score']['invdiff']:.3f} (invdiff); reports in {out / 'reports'}")
    return out


__all__ = ["EvalConfig", "evaluate_invdiff"]
