"""A base model and the same model with an InvDiff adapter, on the same prompts and the same noise.

    result = side_by_side(pipe, ["a photo of the digit 3"], per_prompt=16, seed=0,
                          guidance=InvariantGuidance.from_pretrained("runs/demo/invdiff"), scale=1.0,
                          classifier="oracle:color:two", num_inference_steps=25)
    result.images["base"], result.images["debiased"]      # uint8 (N, H, W, 3), image i from seed i
    result.reports["debiased"]["bias_score"], result.comparison["ratio_to_baseline"]

Image i of both sets starts from the same noise (`sampling.image_seed(seed, i)`), so any difference
between the two grids is the adapter's doing. The figures are those of `metrics.report.images_report`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from invgen.errors import InvgenConfigError

BASE, DEBIASED = "base", "debiased"
T = TypeVar("T")


@dataclass
class SideBySide:
    prompts: list[str]  # one per image
    images: dict[str, np.ndarray] = field(default_factory=dict)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    comparison: dict[str, Any] | None = None


def clean_prompts(text: str | Sequence[str]) -> list[str]:
    """Prompts from a list or from text with one prompt per line; none at all is an error."""
    lines = text.splitlines() if isinstance(text, str) else list(text)
    prompts = [p.strip() for p in lines if p and p.strip()]
    if not prompts:
        raise InvgenConfigError("the prompt is empty: write at least one prompt (one per line)")
    return prompts


def sample_pair(pipe, sample: Callable[[str], T], guidance=None, scale: float = 1.0,
                labels: tuple[str, str] = (BASE, DEBIASED)) -> dict[str, T]:
    """`sample(label)` with the base model, then, when `guidance` is given, the same call with the adapter
    attached at `scale`, detached afterwards even when sampling fails.

    Every base-versus-debiased comparison in invgen (the demo, the `evaluate` job, the app, the audit) goes
    through here: one `sample` for both sets is what makes image i of both start from the same noise.
    """
    base, guided = labels
    sets = {base: sample(base)}
    if guidance is not None:
        with guidance.attached(pipe, scale=scale):
            sets[guided] = sample(guided)
    return sets


def _step_counter(total: int, report: Callable[[float, str], None], desc: str):
    done = [0]

    def callback(pipe, i, t, state):
        done[0] += 1
        report(min(done[0] / total, 1.0), desc)
        return state

    return callback


def side_by_side(
    pipe,
    prompts: Sequence[str],
    per_prompt: int,
    seed: int = 0,
    guidance=None,
    scale: float = 1.0,
    classifier: Any = None,
    classifier_label: str | None = None,
    attribute: str = "color",
    target: Any = None,
    progress: Callable[[float, str], None] | None = None,
    batch_size: int = 64,
    n_boot: int = 1000,
    **call_kwargs: Any,
) -> SideBySide:
    """Generate `per_prompt` images per prompt with the base model and, when `guidance` (an
    `InvariantGuidance`) is given, with the adapter attached at `scale`; then, when `classifier` (a spec or
    classifier object) is given, each set's bias report and their comparison (base first).

    `progress(fraction, description)` is called after every denoising step of every set.
    `call_kwargs` go to the pipeline (num_inference_steps, guidance_scale, ...). The pipeline is left as
    it was found: the adapter is detached even when sampling fails.
    """
    from invgen.metrics.compare import compare_reports
    from invgen.metrics.report import images_report
    from invgen.sampling import generate, image_seed

    prompts = clean_prompts(prompts)
    if per_prompt <= 0:
        raise InvgenConfigError(f"images per prompt must be positive, got {per_prompt}")
    all_prompts = [p for p in prompts for _ in range(per_prompt)]
    seeds = [image_seed(seed, i) for i in range(len(all_prompts))]
    result = SideBySide(prompts=all_prompts)

    count = 2 if guidance is not None else 1

    def run(label: str):
        kwargs = dict(call_kwargs)
        steps = kwargs.get("num_inference_steps")
        if progress is not None and steps:
            index = 0 if label == BASE else 1
            batches = -(-len(all_prompts) // batch_size)
            counter = _step_counter(batches * int(steps), lambda f, d: progress((index + f) / count, d),
                                    f"sampling {label} ({index + 1}/{count})")
            kwargs["callback_on_step_end"] = counter
        return generate(pipe, all_prompts, seeds, batch_size=batch_size, progress=False, desc=label, **kwargs)

    result.images = sample_pair(pipe, run, guidance, scale)

    if classifier is not None:
        if isinstance(classifier, str):  # loaded once for both sets
            from invgen.metrics.classifiers import load_classifier

            classifier_label = classifier_label or classifier
            classifier = load_classifier(classifier, attribute=attribute)
        for label, images in result.images.items():
            result.reports[label] = images_report(images, all_prompts, attribute, classifier, target,
                                                  name=label, classifier_label=classifier_label,
                                                  n_boot=n_boot, seed=seed)
        if len(result.reports) > 1:
            result.comparison = compare_reports(list(result.reports.values()), labels=list(result.reports))
    return result
