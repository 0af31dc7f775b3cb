"""The last stage of a recipe: sample the base model with and without the adapter, then measure the bias.

    accelerate launch -m invgen.train evaluate --config configs/sd15/invdiff_waterbirds.yaml \\
        evaluation.classifier=clip:/models/open_clip-vit-b-32

Writes into `output_dir`: `samples/base` and `samples/invdiff` (imagefolders, same prompts and seeds),
`reports/base.json`, `reports/invdiff.json`, `reports/comparison.json` (+ markdown and plots), and
`evaluation.json` (the headline figures and the sampling time with and without the adapter).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from invgen.invdiff.config import InvDiffConfig

NAMES = ("base", "invdiff")


def evaluate_invdiff(cfg: InvDiffConfig) -> Path:
    """Sample base and guided sets, write bias reports and their comparison; returns `output_dir`."""
    from accelerate import PartialState

    from invgen.atomic import write_json
    from invgen.data.imagefolder import read_imagefolder, read_metadata
    from invgen.invdiff.guidance import InvariantGuidance
    from invgen.metrics.classifiers import load_classifier
    from invgen.metrics.render import json_safe, write_comparison, write_report
    from invgen.side_by_side import side_by_side

    e = cfg.evaluation
    out = Path(cfg.output_dir)
    state = PartialState()
    guidance = InvariantGuidance.from_pretrained(out)
    # Fail on a bad classifier before minutes of sampling.
    classifier = load_classifier(e.classifier, attribute=e.attribute, prompts=e.attribute_prompts or None,
                                 model_name=e.clip_model)
    pipe = cfg.load_base_model()
    pipe.to(state.device)
    prompts = e.prompts or sorted({r.prompt for r in read_metadata(cfg.data.split_dir)})
    side = e.resolution or cfg.data.size
    call: dict[str, Any] = {"num_inference_steps": e.num_inference_steps, "guidance_scale": e.guidance_scale,
                            "height": side, "width": side}
    info = {name: {"pipeline": str(cfg.base_model), "guidance": str(out) if name == "invdiff" else None,
                   "scale": e.scale if name == "invdiff" else None, **call} for name in NAMES}
    # overwrite: these folders are this job's own (their manifest says so); another scale or prompt set
    # replaces the earlier evaluation's images instead of stopping the job.
    result = side_by_side(pipe, prompts, e.per_prompt, seed=e.seed, guidance=guidance, scale=e.scale,
                          classifier=classifier, classifier_label=e.classifier, attribute=e.attribute,
                          batch_size=e.batch_size, labels=NAMES, overwrite=True, info=info,
                          folders={name: out / "samples" / name for name in NAMES}, **call)
    if not state.is_main_process:
        return out
    reports = result.reports
    for name in NAMES:
        write_report(reports[name], out / "reports" / f"{name}.json")
    write_comparison(result.comparison, out / "reports" / "comparison.json")
    base, guided = (read_imagefolder(result.folders[name]).images.astype(int) for name in NAMES)
    summary = {
        "classifier": e.classifier,
        "attribute": e.attribute,
        "images_per_set": len(prompts) * e.per_prompt,
        "bias_score": {k: r.bias_score for k, r in reports.items()},
        "fairness_discrepancy": {k: r.fairness_discrepancy for k, r in reports.items()},
        "mean_abs_pixel_change": float(abs(base - guided).mean()),
        "sampling_s": result.seconds,
        "sampling_overhead": result.seconds["invdiff"] / max(result.seconds["base"], 1e-9),
    }
    write_json(out / "evaluation.json", json_safe(summary))  # a set the classifier cannot read has null figures
    print(f"evaluate: bias score {summary['bias_score']['base']:.3f} (base) -> "
          f"{summary['bias_score']['invdiff']:.3f} (invdiff); reports in {out / 'reports'}")
    return out


__all__ = ["evaluate_invdiff"]
