"""A base model and the same model with an InvDiff adapter, on the same prompts and the same noise, then
each set's report and their comparison: the one evaluation path of invgen (the app's Compare tab, the
`evaluate` job, the demo and the audit all go through `side_by_side`).

    result = side_by_side(pipe, ["a photo of a doctor"], per_prompt=16, seed=0,
                          guidance=InvariantGuidance.from_pretrained("runs/invdiff"), scale=1.0,
                          classifier="clip:/models/vit-b-32", attribute="gender", num_inference_steps=25)
    result.images["base"], result.images["debiased"]      # uint8 (N, H, W, 3), image i from seed i
    result.reports["debiased"]["bias_score"], result.comparison["ratio_to_baseline"]["debiased"]["bias_score"]

Image i of both sets starts from the same noise (`sampling.image_seed(seed, i)`), so any difference
between the two sets is the adapter's doing. The sets are held in memory, or written as imagefolders
(`folders=`, resumable: `sampling.sample_to_imagefolder`) for sets too large to hold. The figures are
those of `metrics.report` (`images_report` in memory, `bias_report` of a folder), or a `score` of the
caller's own (the demo's digit fidelity).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from invgen.errors import InvgenConfigError

if TYPE_CHECKING:
    from invgen.metrics.results import Comparison

BASE, DEBIASED = "base", "debiased"
T = TypeVar("T")


@dataclass
class SideBySide:
    prompts: list[str]  # one per image
    images: dict[str, np.ndarray] = field(default_factory=dict)  # in memory (empty for sets sampled to folders)
    folders: dict[str, Path] = field(default_factory=dict)  # where each set was written, with `folders=`
    seconds: dict[str, float] = field(default_factory=dict)  # sampling time of each set
    reports: dict[str, Any] = field(default_factory=dict)  # `BiasReport`s, or what the caller's `score` returned
    comparison: Comparison | None = None


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
    attached at `scale`, detached afterwards even when sampling fails. One `sample` for both sets is what
    makes image i of both start from the same noise."""
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
    attribute: str = "",
    target: Any = None,
    progress: Callable[[float, str], None] | None = None,
    batch_size: int = 64,
    n_boot: int = 1000,
    *,
    labels: tuple[str, str] = (BASE, DEBIASED),
    folders: Mapping[str, str | Path] | None = None,
    info: Mapping[str, Mapping[str, Any]] | None = None,
    overwrite: bool = False,
    score: Callable[[str, np.ndarray, list[str]], dict[str, Any]] | None = None,
    **call_kwargs: Any,
) -> SideBySide:
    """Generate `per_prompt` images per prompt with the base model and, when `guidance` (an
    `InvariantGuidance`) is given, with the adapter attached at `scale`; then each set's report and, for two,
    their comparison (base first). The pipeline is left as it was found: the adapter is detached even when
    sampling fails.

    Reports: `score(label, images, prompts)` when given, else the bias report of `attribute` read by
    `classifier` (a spec or a classifier object), else none. `folders` ({label: folder}) writes each set as an
    imagefolder there (resumed when the same job ran before; `overwrite` replaces another job's images;
    `info[label]` goes into its manifest) and reads it back to score; only the main process scores.
    `progress(fraction, description)` is called after every denoising step of an in-memory set.
    `call_kwargs` go to the pipeline (num_inference_steps, guidance_scale, ...).
    """
    from invgen.sampling import generate, image_seed, sample_to_imagefolder

    prompts = clean_prompts(prompts)
    if per_prompt <= 0:
        raise InvgenConfigError(f"images per prompt must be positive, got {per_prompt}")
    if classifier is not None and score is None and not attribute:
        raise InvgenConfigError("name the attribute the classifier reads (attribute=...)")
    all_prompts = [p for p in prompts for _ in range(per_prompt)]
    seeds = [image_seed(seed, i) for i in range(len(all_prompts))]
    result = SideBySide(prompts=all_prompts)
    count = 2 if guidance is not None else 1

    def run(label: str):
        t0 = time.perf_counter()
        kwargs = dict(call_kwargs)
        if folders is not None:
            out = result.folders[label] = Path(folders[label])
            sample_to_imagefolder(pipe, prompts, per_prompt, out, seed=seed, batch_size=batch_size,
                                  info=dict((info or {}).get(label) or {}), overwrite=overwrite, **kwargs)
        else:
            steps = kwargs.get("num_inference_steps")
            if progress is not None and steps:
                index = labels.index(label)
                batches = -(-len(all_prompts) // batch_size)
                kwargs["callback_on_step_end"] = _step_counter(
                    batches * int(steps), lambda f, d: progress((index + f) / count, d),
                    f"sampling {label} ({index + 1}/{count})")
            result.images[label] = generate(pipe, all_prompts, seeds, batch_size=batch_size,
                                            progress=progress is None, desc=label, **kwargs)
        result.seconds[label] = time.perf_counter() - t0

    sample_pair(pipe, run, guidance, scale, labels=labels)
    if folders is not None:
        from invgen.distributed import process_state

        if not process_state().is_main_process:
            return result
    if score is not None:
        for label in result.seconds:
            result.reports[label] = score(label, _images_of(result, label), all_prompts)
    elif classifier is not None:
        _bias_reports(result, classifier, classifier_label, attribute, target, n_boot, seed)
    return result


def _images_of(result: SideBySide, label: str) -> np.ndarray:
    if label in result.images:
        return result.images[label]
    from invgen.data.imagefolder import read_imagefolder

    return read_imagefolder(result.folders[label]).images


def _bias_reports(result: SideBySide, classifier: Any, classifier_label: str | None, attribute: str, target: Any,
                  n_boot: int, seed: int) -> None:
    from invgen.metrics.compare import compare_reports
    from invgen.metrics.report import bias_report, images_report

    if isinstance(classifier, str):  # loaded once for both sets
        from invgen.metrics.classifiers import load_classifier

        classifier_label = classifier_label or classifier
        classifier = load_classifier(classifier, attribute=attribute)
    for label in result.seconds:
        if label in result.folders:
            result.reports[label] = bias_report(result.folders[label], attribute, classifier, target,
                                                classifier_label=classifier_label, n_boot=n_boot, seed=seed)
        else:
            result.reports[label] = images_report(result.images[label], result.prompts, attribute, classifier,
                                                  target, name=label, classifier_label=classifier_label,
                                                  n_boot=n_boot, seed=seed)
    if len(result.reports) > 1:
        result.comparison = compare_reports(list(result.reports.values()), labels=list(result.reports))
