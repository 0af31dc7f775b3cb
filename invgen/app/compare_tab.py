"""The Compare tab: the base model's grid and the adapter's from the same seeds, with their bias figures.

The work is `side_by_side.side_by_side` (sampling, `attach`/`detach`, the reports and their comparison);
here it is fed from the page's fields and its result turned into galleries, plots, a table and a status line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from invgen.app.defaults import AppDefaults, defaults_for
from invgen.app.helpers import AUTO, check_numbers, for_display, handler, no_progress, plot_pixels
from invgen.app.models import Models


def resolve_classifier(models: Models, clip: Any, pipeline: str, spec: str,
                       values_text: str) -> tuple[Any, str, str, str]:
    """(classifier or None, its spec, the attribute's name, a note for the status line).

    `auto` is the pipeline's own classifier (see `defaults_for`), else zero-shot CLIP from `--clip` when the
    attribute values are given."""
    values = [v.strip() for v in (values_text or "").split(",") if v.strip()]
    spec = (spec or AUTO).strip()
    if spec == AUTO:
        spec = defaults_for(pipeline).classifier or ""
        if not spec and clip and values:
            spec = f"clip:{clip}"
        if not spec:
            return None, "", "", (
                "No attribute classifier: this is not a colored-digits model, and zero-shot CLIP needs "
                "`invgen app --clip PATH` and the attribute values (e.g. `man, woman`)."
            )
    clf = models.classifier(spec, values)
    attribute = getattr(clf, "attribute", "") or "attribute"
    return clf, spec, attribute, f"attribute **{attribute}** read by `{spec}`"


def metrics_json(result: Any) -> dict[str, Any]:
    """The figures of each set (and the ratios to the base) as plain JSON, for the page and for API users."""
    from invgen.metrics.render import json_safe
    from invgen.metrics.report import REPORT_METRICS

    out: dict[str, Any] = {}
    for label, report in result.reports.items():
        out[label] = {
            "attribute": report.attribute,
            "classifier": report.classifier,
            "n_images": report.n_images,
            "n_unreadable": report.n_unreadable,
            **{key: getattr(report, key) for key in REPORT_METRICS},
            "ci": report.ci,
            "counts": report.pooled["counts"],
            "per_prompt": {p: {"counts": e["counts"], "bias_score": e["bias_score"]}
                           for p, e in report.per_prompt.items()},
        }
    if result.comparison is not None:
        out["ratio_to_base"] = result.comparison.ratio_to_baseline.get("debiased", {})
    return json_safe(out)


def compare(models: Models, clip: Any, pipeline: str, adapter: str, prompts: str, per_prompt: Any, seed: Any,
            scale: Any, steps: Any, cfg: Any, spec: str, values: str, target: str,
            progress: Callable = no_progress) -> tuple:
    """Generate both grids and read their attribute: (base images, adapter images, base plot, adapter plot,
    bias bars, metrics JSON, report table, status line), what the tab's outputs show."""
    from invgen.side_by_side import clean_prompts, side_by_side

    check_numbers(per_prompt, seed, scale, steps, cfg)
    prompts = clean_prompts(prompts or "")
    with models.lock:
        progress(0.0, desc="loading models")
        pipe = models.pipeline(pipeline)
        guidance = models.guidance(adapter)
        clf, clf_spec, attribute, note = resolve_classifier(models, clip, pipeline, spec, values)
        result = side_by_side(
            pipe, prompts, int(per_prompt), seed=int(seed), guidance=guidance, scale=float(scale),
            classifier=clf, classifier_label=clf_spec, attribute=attribute, target=(target or "").strip() or None,
            progress=lambda f, d: progress(f, desc=d),
            num_inference_steps=int(steps), guidance_scale=float(cfg),
        )
    n = len(result.prompts)
    status = f"{n} images per model from seed {int(seed)}" + (
        f"; adapter `{adapter}` at scale {float(scale):g}" if guidance is not None else "; no adapter chosen"
    ) + f". {note}"
    return (
        for_display(result.images["base"]),
        for_display(result.images["debiased"]) if "debiased" in result.images else [],
        *figures(result),
        status,
    )


def figures(result: Any) -> tuple:
    """(base plot, adapter plot, bias bars, metrics JSON, report table) of a side-by-side result; a plot is
    None where there is nothing to draw."""
    from invgen.metrics.plots import plot_attribute_histogram, plot_comparison
    from invgen.metrics.render import comparison_markdown, report_markdown

    plots = {label: plot_pixels(plot_attribute_histogram, report) for label, report in result.reports.items()}
    bars = None
    if result.comparison is not None:
        bars = plot_pixels(plot_comparison, result.comparison)
        table = comparison_markdown(result.comparison)
    elif result.reports:
        table = report_markdown(next(iter(result.reports.values())))
    else:
        table = ""
    return plots.get("base"), plots.get("debiased"), bars, metrics_json(result), table


def compare_tab(gr: Any, models: Models, pipeline: Any, adapter: Any, defaults: AppDefaults, clip: Any,
                max_per_prompt: int) -> None:
    """Prompts and sampling settings, an optional classifier, then the two grids and their figures."""
    with gr.Tab("Compare"):
        with gr.Row():
            with gr.Column(scale=2):
                prompts = gr.Textbox(defaults.prompts, lines=3, label="Prompts (one per line)", elem_id="prompts")
            with gr.Column(scale=3):
                with gr.Row():
                    per_prompt = gr.Slider(1, max_per_prompt, value=16, step=1, label="Images per prompt")
                    seed = gr.Number(0, precision=0, label="Seed")
                    scale = gr.Slider(0.0, 3.0, value=1.0, step=0.05, label="Adapter guidance scale s")
                with gr.Row():
                    steps = gr.Slider(2, 100, value=25, step=1, label="Denoising steps")
                    cfg = gr.Slider(1.0, 10.0, value=2.0, step=0.5, label="Classifier-free guidance")
        with gr.Accordion("Attribute classifier", open=False):
            with gr.Row():
                spec = gr.Textbox(AUTO, label="Classifier", info="auto, oracle:color[:PALETTE], "
                                  "clip:PATH or checkpoint:PATH")
                values = gr.Textbox("", label="Attribute values (for CLIP)", info="comma-separated")
                target = gr.Textbox("", label="Target distribution", info="empty = uniform; e.g. 0.75,0.25")
        generate_btn = gr.Button("Generate", variant="primary", elem_id="generate")
        status = gr.Markdown(elem_id="status")
        with gr.Row():
            base_gallery = gr.Gallery(label="Base model", columns=8, height="auto", elem_id="base-gallery",
                                      elem_classes="grid-gallery", format="png")
            debiased_gallery = gr.Gallery(label="With adapter", columns=8, height="auto",
                                          elem_id="debiased-gallery", elem_classes="grid-gallery", format="png")
        # The plots carry their own titles; a label would cover them.
        plot = dict(format="png", show_label=False)
        with gr.Row():
            base_hist = gr.Image(label="Base: attribute per prompt", **plot)
            debiased_hist = gr.Image(label="With adapter: attribute per prompt", **plot)
        with gr.Row():
            bars = gr.Image(label="Bias score per prompt", **plot)
            table = gr.Markdown()
        with gr.Accordion("Metrics (JSON)", open=False):
            metrics = gr.JSON(label="Metrics", elem_id="metrics")
    generate_btn.click(
        handler(gr, compare, models, clip),
        inputs=[pipeline, adapter, prompts, per_prompt, seed, scale, steps, cfg, spec, values, target],
        outputs=[base_gallery, debiased_gallery, base_hist, debiased_hist, bars, metrics, table, status],
        api_name="compare",
    )
