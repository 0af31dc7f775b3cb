"""`invgen app`: a Gradio app to try a base model and its InvDiff adapters side by side in a browser.

    from invgen.app import build_app, launch
    launch("runs")                      # or: demo = build_app("runs"); demo.launch(...)

The app is a thin layer over the library: models come from `models.loading.load_pipeline` and
`InvariantGuidance.from_pretrained`, the grids and their bias figures from `side_by_side.side_by_side`
(sampling, `attach`/`detach`, `metrics.report.images_report` and `compare_reports`), the plots from
`metrics.plots`, the views from `cdvg.transforms.DiffusionTranslator` and `views.GenViewGenerator`. What
lives here is layout, caching of loaded models, and turning errors into one-sentence messages.

The machine may be offline: gradio's analytics and update check are switched off before it is imported,
and the theme uses the system's fonts instead of fetching web fonts.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from invgen.errors import InvgenConfigError, InvgenError, InvgenModelError

NO_ADAPTER = "(none)"
AUTO = "auto"
GENVIEW_VIEWS = 8  # views drawn of one image in the views tab
DISPLAY_SIDE = 96  # tiny benchmark images are scaled up (nearest) to at least this many pixels for viewing
_log = logging.getLogger(__name__)


def _offline_gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import gradio as gr
    except ImportError:
        raise InvgenConfigError("the app needs gradio: pip install 'invgen[app]'") from None
    return gr


# Gallery thumbnails are at least 100 px wide by default: eight per row would not fit beside each other.
CSS = """
.grid-gallery .grid-container {
  grid-template-columns: repeat(var(--grid-cols), minmax(40px, 1fr)) !important;
  grid-auto-rows: minmax(40px, 1fr) !important;
}
"""


def _theme(gr):
    system = ["ui-sans-serif", "system-ui", "sans-serif"]
    return gr.themes.Default(font=system, font_mono=["ui-monospace", "monospace"])


# ------------------------------------------------------------------------------------------ models
class _Models:
    """Loaded pipelines, adapters and classifiers, kept between requests (one request computes at a time:
    an adapter is attached to a shared pipeline while it samples)."""

    def __init__(self, device: str | None = None, keep: int = 2):
        self.device = device
        self.keep = keep
        self.lock = threading.Lock()
        self._pipes: OrderedDict[str, Any] = OrderedDict()
        self._guidance: dict[str, Any] = {}
        self._classifiers: dict[tuple, Any] = {}

    def pipeline(self, name: str):
        from invgen.models.loading import load_pipeline

        name = (name or "").strip()
        if not name:
            raise InvgenModelError("choose a pipeline (a folder under the runs folder, a local path or a hub id)")
        if name not in self._pipes:
            pipe = load_pipeline(name)
            import torch

            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            pipe.to(device)
            pipe.set_progress_bar_config(disable=True)
            self._pipes[name] = pipe
            while len(self._pipes) > self.keep:
                self._pipes.popitem(last=False)
        self._pipes.move_to_end(name)
        return self._pipes[name]

    def guidance(self, name: str | None):
        from invgen.invdiff.guidance import InvariantGuidance

        name = (name or "").strip()
        if not name or name == NO_ADAPTER:
            return None
        if name not in self._guidance:
            self._guidance[name] = InvariantGuidance.from_pretrained(name)
        return self._guidance[name]

    def classifier(self, spec: str, values: list[str]):
        from invgen.metrics.attributes import load_classifier

        key = (spec, tuple(values))
        if key not in self._classifiers:
            self._classifiers[key] = load_classifier(spec, names=values or None, device=self.device)
        return self._classifiers[key]


def _friendly(fn: Callable) -> Callable:
    """Errors become one sentence in the browser (gr.Error), never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        gr = _offline_gradio()
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except InvgenError as e:
            raise gr.Error(str(e), print_exception=False) from None
        except Exception as e:  # noqa: BLE001 - the browser gets one sentence, the log the traceback
            _log.exception("app request failed")
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise gr.Error(f"{type(e).__name__}: {first}", print_exception=False) from None

    return wrapper


def _check_numbers(per_prompt: Any, seed: Any, scale: Any, steps: Any, cfg: Any) -> None:
    """The page's numbers, checked as the CLI checks its options: API callers can send any value."""
    from invgen.config import GUIDANCE_SCALE_LIMIT, SCALE_LIMIT, check_number, check_seed

    check_number(per_prompt, "images per prompt", 1)
    check_number(steps, "denoising steps", 1)
    check_number(scale, "adapter guidance scale", -SCALE_LIMIT, SCALE_LIMIT)
    check_number(cfg, "classifier-free guidance", 0.0, GUIDANCE_SCALE_LIMIT)
    check_seed(int(check_number(seed, "seed")), "seed")


# ------------------------------------------------------------------------------------------- display
def _for_display(images: np.ndarray) -> list[np.ndarray]:
    side = max(images.shape[1], images.shape[2]) if len(images) else DISPLAY_SIDE
    factor = max(1, -(-DISPLAY_SIDE // side))
    return [im.repeat(factor, axis=0).repeat(factor, axis=1) for im in images]


def _plot(draw: Callable[[Any, Path], None], data: Any) -> np.ndarray:
    """A `metrics.plots` figure as pixels (gradio keeps its own copy; no file of ours is left behind)."""
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="invgen-app-") as tmp:
        path = Path(tmp) / "plot.png"
        draw(data, path)
        return np.array(Image.open(path).convert("RGB"))


def _metrics(result) -> dict[str, Any]:
    """The figures of each set (and the ratios to the base) as plain JSON, for the page and for API users."""
    from invgen.metrics.report import REPORT_METRICS, json_safe

    out: dict[str, Any] = {}
    for label, report in result.reports.items():
        out[label] = {
            "attribute": report["attribute"],
            "classifier": report["classifier"],
            "n_images": report["n_images"],
            "n_unreadable": report.get("n_unreadable", 0),
            **{key: report[key] for key in REPORT_METRICS},
            "ci": report.get("ci", {}),
            "counts": report["pooled"]["counts"],
            "per_prompt": {p: {"counts": e["counts"], "bias_score": e["bias_score"]}
                           for p, e in report["per_prompt"].items()},
        }
    if result.comparison is not None:
        out["ratio_to_base"] = result.comparison["ratio_to_baseline"].get("debiased", {})
    return json_safe(out)


# ------------------------------------------------------------------------------------------- the app
def build_app(
    runs_dir: str | os.PathLike = "runs",
    pipeline: str | None = None,
    adapter: str | None = None,
    clip: str | os.PathLike | None = None,
    device: str | None = None,
    max_per_prompt: int = 64,
):
    """The Gradio Blocks app over the pipelines and adapters found under `runs_dir`.

    `pipeline` and `adapter` are what the page starts with (default: the first adapter found and the base
    model it records).
    `clip`: local open_clip weights for zero-shot attribute classification of models that are not the
    digits benchmark (whose colors the exact oracle reads). `device`: where models run (default: cuda
    when available).
    """
    gr = _offline_gradio()
    from invgen.runs import default_classifier, find_models

    runs_dir = Path(runs_dir)
    models = _Models(device)
    found = find_models(runs_dir)
    default_adapter = adapter if adapter is not None else next(iter(found.adapters), None)
    default_pipe = pipeline or (found.adapters.get(default_adapter) if default_adapter else None)
    if not default_pipe:
        default_pipe = found.pipelines[0] if found.pipelines else None
    digits = bool(default_pipe and default_classifier(default_pipe))
    default_prompts = "a photo of the digit 3\na photo of the digit 7" if digits else ""

    def adapter_choices(f) -> list[str]:
        return [NO_ADAPTER, *f.adapters]

    def resolve_classifier(pipeline: str, spec: str, values_text: str) -> tuple[Any, str, str, str]:
        """(classifier or None, its spec, the attribute's name, a note for the status line)."""
        values = [v.strip() for v in (values_text or "").split(",") if v.strip()]
        spec = (spec or AUTO).strip()
        if spec == AUTO:
            spec = default_classifier(pipeline) or ""
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

    @_friendly
    def compare(pipeline, adapter, prompts, per_prompt, seed, scale, steps, cfg, spec, values, target,
                progress=gr.Progress()):
        from invgen.metrics.plots import plot_attribute_histogram, plot_comparison
        from invgen.metrics.report import comparison_markdown, report_markdown
        from invgen.side_by_side import clean_prompts, side_by_side

        _check_numbers(per_prompt, seed, scale, steps, cfg)
        prompts = clean_prompts(prompts or "")
        with models.lock:
            progress(0.0, desc="loading models")
            pipe = models.pipeline(pipeline)
            guidance = models.guidance(adapter)
            clf, clf_spec, attribute, note = resolve_classifier(pipeline, spec, values)
            result = side_by_side(
                pipe, prompts, int(per_prompt), seed=int(seed), guidance=guidance, scale=float(scale),
                classifier=clf, classifier_label=clf_spec, attribute=attribute, target=(target or "").strip() or None,
                progress=lambda f, d: progress(f, desc=d),
                num_inference_steps=int(steps), guidance_scale=float(cfg),
            )
        plots = {label: _plot(plot_attribute_histogram, report) for label, report in result.reports.items()}
        bars = None
        if result.comparison is not None:
            bars = _plot(plot_comparison, result.comparison)
            table = comparison_markdown(result.comparison)
        elif result.reports:
            table = report_markdown(next(iter(result.reports.values())))
        else:
            table = ""
        n = len(result.prompts)
        status = f"{n} images per model from seed {int(seed)}" + (
            f"; adapter `{adapter}` at scale {float(scale):g}" if guidance is not None else "; no adapter chosen"
        ) + f". {note}"
        return (
            _for_display(result.images["base"]),
            _for_display(result.images["debiased"]) if "debiased" in result.images else [],
            plots.get("base"),
            plots.get("debiased"),
            bars,
            _metrics(result),
            table,
            status,
        )

    def refresh():
        f = find_models(runs_dir)
        return gr.update(choices=f.pipelines), gr.update(choices=adapter_choices(f))

    def base_of(adapter):
        base = found.adapters.get(adapter) or find_models(runs_dir).adapters.get(adapter)
        return gr.update(value=base) if base else gr.update()

    with gr.Blocks(title="invgen", analytics_enabled=False) as demo:
        gr.Markdown(
            "# invgen: base model vs. debiased\n"
            f"Pipelines and InvDiff adapters found under `{runs_dir}`; a local path or a hub id can be typed "
            "instead. The same seeds drive both grids, so any difference is the adapter's."
            + ("" if found.pipelines else f"\n\n**No pipeline found under `{runs_dir}`**: type a folder or a hub id.")
        )
        with gr.Row():
            pipeline_box = gr.Dropdown(found.pipelines, value=default_pipe, label="Pipeline",
                                       allow_custom_value=True, scale=3, elem_id="pipeline")
            adapter_box = gr.Dropdown(adapter_choices(found), value=default_adapter or NO_ADAPTER,
                                      label="InvDiff adapter", allow_custom_value=True, scale=3, elem_id="adapter")
            refresh_btn = gr.Button("Rescan runs folder", scale=1)
        with gr.Tab("Compare"):
            with gr.Row():
                with gr.Column(scale=2):
                    prompts = gr.Textbox(default_prompts, lines=3, label="Prompts (one per line)",
                                         elem_id="prompts")
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

        _views_tab(gr, models, pipeline_box)

        refresh_btn.click(refresh, outputs=[pipeline_box, adapter_box], api_name="refresh")
        adapter_box.change(base_of, inputs=adapter_box, outputs=pipeline_box, api_name=False)
        generate_btn.click(
            compare,
            inputs=[pipeline_box, adapter_box, prompts, per_prompt, seed, scale, steps, cfg, spec, values, target],
            outputs=[base_gallery, debiased_gallery, base_hist, debiased_hist, bars, metrics, table, status],
            api_name="compare",
        )
    return demo


# --------------------------------------------------------------------------------------- views tab
def _views_tab(gr, models: _Models, pipeline) -> None:
    """An uploaded or sampled image with its bias-transformed views (CDvG) or generated views (GenView)."""

    def class_prompts_of(text: str) -> list[str]:
        from invgen.data.digits import digit_prompts

        lines = [p.strip() for p in (text or "").splitlines() if p.strip()]
        return lines or digit_prompts()

    def source_class(text: str, label) -> tuple[list[str], int]:
        prompts, label = class_prompts_of(text), int(label)
        if not 0 <= label < len(prompts):
            raise InvgenConfigError(f"the source class must lie in 0..{len(prompts) - 1}, got {label}")
        return prompts, label

    @_friendly
    def sample_one(pipeline_name, class_text, label, seed, steps):
        from invgen.sampling import generate

        prompts, label = source_class(class_text, label)
        with models.lock:
            pipe = models.pipeline(pipeline_name)
            image = generate(pipe, [prompts[label]], [int(seed)], progress=False, num_inference_steps=int(steps))
        return image[0]

    @_friendly
    def make_views(pipeline_name, image, class_text, label, method, strength, seed, steps):
        import torch

        if image is None:
            raise InvgenConfigError("upload an image or sample one first")
        prompts, label = source_class(class_text, label)
        with models.lock:
            pipe = models.pipeline(pipeline_name)
            x = _image_tensor(pipe, image)
            g = torch.Generator().manual_seed(int(seed))
            if method == "CDvG":
                try:
                    from invgen.cdvg.transforms import DiffusionTranslator
                except ImportError:
                    raise InvgenConfigError("CDvG views are not available in this version of invgen") from None
                translator = DiffusionTranslator(pipe, class_prompts=prompts, strength=float(strength),
                                                 num_inference_steps=int(steps))
                targets = [c for c in range(len(prompts)) if c != label]
                views = translator.transform(x.repeat(len(targets), 1, 1, 1), [label] * len(targets),
                                             target_labels=targets, generator=g)
                captions = [f"→ {prompts[c]}" for c in targets]
            else:
                try:
                    from invgen.views import GenViewGenerator
                except ImportError:
                    raise InvgenConfigError("GenView views are not available in this version of invgen") from None
                out = GenViewGenerator(pipe, num_inference_steps=int(steps)).generate(
                    x.repeat(GENVIEW_VIEWS, 1, 1, 1), generator=g)
                views = out.views
                captions = [f"view {i + 1}: noise level {level:.2f} (foreground {share:.2f})"
                            for i, (level, share) in enumerate(zip(out.noise_levels, out.proportions, strict=True))]
        pixels = ((views.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return list(zip(_for_display(pixels), captions, strict=True))

    with gr.Tab("Views"):
        gr.Markdown(
            "An image and its views: **CDvG** translates it to every other class with the frozen model "
            "(the bias changes, the content stays); **GenView** draws generated positive views of it."
        )
        with gr.Row():
            with gr.Column():
                source = gr.Image(label="Source image (upload, or sample one)", type="numpy", height=200)
                class_text = gr.Textbox("", lines=3, label="Class prompts (one per line; empty = the ten digits)")
                with gr.Row():
                    label = gr.Number(3, precision=0, label="Source class (index)")
                    seed = gr.Number(0, precision=0, label="Seed")
                    steps = gr.Slider(2, 100, value=20, step=1, label="Steps")
                sample_btn = gr.Button("Sample a source image")
            with gr.Column():
                method = gr.Radio(["CDvG", "GenView"], value="CDvG", label="Views")
                strength = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Strength (CDvG)")
                views_btn = gr.Button("Make views", variant="primary", elem_id="make-views")
                views = gr.Gallery(label="Views", columns=5, height="auto", format="png", elem_id="views-gallery")
        sample_btn.click(sample_one, inputs=[pipeline, class_text, label, seed, steps], outputs=source,
                         api_name="sample_source")
        views_btn.click(make_views, inputs=[pipeline, source, class_text, label, method, strength, seed, steps],
                        outputs=views, api_name="views")


def _image_tensor(pipe, image: np.ndarray):
    """An uploaded image as the float tensor (1, 3, H, W) in [-1, 1] the view makers take, at the model's size."""
    import torch
    from PIL import Image

    from invgen.models.denoisers import denoiser_of

    # The pipeline's own default size where it declares one (SDXL, SD3, Flux; a Flux transformer has no
    # sample_size), else the denoiser's.
    size = getattr(pipe, "default_sample_size", None) or denoiser_of(pipe).config.sample_size
    side = int(size) * int(getattr(pipe, "vae_scale_factor", 1) or 1)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    pil = Image.fromarray(arr[..., :3].astype(np.uint8)).convert("RGB")
    if pil.size != (side, side):
        pil = pil.resize((side, side), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.array(pil)).permute(2, 0, 1).float() / 127.5 - 1.0
    return x[None]


def launch(
    runs_dir: str | os.PathLike = "runs",
    pipeline: str | None = None,
    adapter: str | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    clip: str | os.PathLike | None = None,
    device: str | None = None,
    block: bool = True,
    **launch_kwargs: Any,
):
    """Build the app and serve it on `host:port` (default: gradio's first free port from 7860).

    `block=False` returns at once with the server running in the background (tests, notebooks);
    call `.close()` on the returned app to stop it.
    """
    gr = _offline_gradio()
    demo = build_app(runs_dir, pipeline=pipeline, adapter=adapter, clip=clip, device=device)
    demo.queue(default_concurrency_limit=1)
    try:
        demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
                    quiet=not block, theme=_theme(gr), css=CSS, show_error=False, **launch_kwargs)
    except OSError as e:  # port taken, address not ours
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InvgenConfigError(f"cannot serve the app on {host}:{port or 'a port from 7860'}: {first}") from None
    return demo
