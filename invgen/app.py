"""`invgen app`: a Gradio app to try a base model and its InvDiff adapters side by side in a browser.

    from invgen.app import build_app, launch
    launch("runs")                      # or: demo = build_app("runs"); demo.launch(...)

The app is a thin layer over the library: models come from `models.loading.load_pipeline` and
`InvariantGuidance.from_pretrained`, the grids and their bias figures from `side_by_side.side_by_side`
(sampling, `attach`/`detach`, `metrics.report.images_report` and `compare_reports`), the plots from
`metrics.plots`, the views from `cdvg.transforms.DiffusionTranslator` and `views.GenViewGenerator`, the
audits from `audit.run_audit` (read back with `audit.compare.load_audit`). What lives here is layout,
caching of loaded models, and turning errors into one-sentence messages.

The machine may be offline: gradio's analytics and update check are switched off before it is imported,
and the theme uses the system's fonts instead of fetching web fonts.
"""

from __future__ import annotations

import csv
import functools
import logging
import os
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from invgen.errors import InvgenConfigError, InvgenDataError, InvgenError, InvgenModelError, shown

NO_ADAPTER = "(none)"
AUTO = "auto"
GENVIEW_VIEWS = 8  # views drawn of one image in the views tab
DISPLAY_SIDE = 96  # tiny benchmark images are scaled up (nearest) to at least this many pixels for viewing
AUDITS = "audits"  # the Audit tab writes its audits into RUNS/audits/NAME
MAX_AUDIT_PER_PROMPT = 100  # the tab is for small audits; `invgen audit` has no limit
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
        from invgen.metrics.classifiers import load_classifier

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
    from invgen.metrics.render import json_safe
    from invgen.metrics.report import REPORT_METRICS

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
        from invgen.metrics.render import comparison_markdown, report_markdown
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
        _audit_tab(gr, models, pipeline_box, adapter_box, runs_dir, clip, digits)

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

        from invgen.pixels import to_uint8

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
        pixels = to_uint8(views)
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
    from PIL import Image

    from invgen.models.denoisers import denoiser_of
    from invgen.pixels import to_signed

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
    return to_signed(np.asarray(pil))[None]


# --------------------------------------------------------------------------------------- audit tab
_FOLDER_NAME = re.compile(r"[A-Za-z0-9._-]+")
_SKIP_AUDIT_DIRS = {"images", "base_images", "grids", "checkpoints", "cache", "__pycache__"}


def find_audits(runs_dir: str | os.PathLike, max_depth: int = 4) -> list[str]:
    """Every finished audit folder (with its marker and report.json) under `runs_dir`, sorted."""
    from invgen.audit.folder import MARKER, REPORT

    root = Path(runs_dir).expanduser()
    found: list[str] = []
    if not root.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if MARKER in filenames and REPORT in filenames:
            found.append(str(here))
            dirnames[:] = []  # an audit's subfolders are its images and grids
            continue
        depth = len(here.relative_to(root).parts)
        dirnames[:] = [d for d in dirnames if d not in _SKIP_AUDIT_DIRS and not d.startswith(".")
                       and depth < max_depth]
    return sorted(found)


def audit_folder(runs_dir: str | os.PathLike, name: str, settings: dict[str, Any]) -> Path:
    """RUNS/audits/NAME; an empty name is made from the sampling settings, so rerunning them resumes that folder."""
    name = (name or "").strip()
    if not name:
        parts = [Path(str(settings["pipeline"]).rstrip("/")).name or "pipeline"]
        if settings.get("adapter"):
            parts += [Path(str(settings["adapter"]).rstrip("/")).name, f"s{settings['scale']:g}"]
        parts += [Path(str(settings["suite"])).stem, f"n{settings['per_prompt']}", f"seed{settings['seed']}",
                  f"steps{settings['steps']}"]
        if settings.get("prompts_limit"):
            parts.append(f"first{settings['prompts_limit']}")
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts))
    elif not _FOLDER_NAME.fullmatch(name) or name in (".", ".."):
        raise InvgenConfigError(f"the audit folder name '{shown(name)}' may hold only letters, digits, '.', '_' "
                                f"and '-' (it is made under {shown(Path(runs_dir) / AUDITS)})")
    return Path(runs_dir) / AUDITS / name


def _audit_markdown(folder: Path, report: dict[str, Any]) -> str:
    """report.md for the page: its pictures are shown beside it, so their links are left out."""
    from invgen.audit.folder import MARKDOWN
    from invgen.audit.write import report_markdown

    path = folder / MARKDOWN
    text = path.read_text(encoding="utf-8") if path.is_file() else report_markdown(report)
    lines = [line for line in text.splitlines() if not line.startswith("![")]
    text = "\n".join(lines)
    return re.sub(r"\[([^\]\n]*)\]\((grids/\d+\.png)\)", r"\1 (`\2`)", text)


def _audit_table(folder: Path):
    """per_prompt.csv as a table (headers, rows), or None for a folder without it."""
    import pandas as pd

    from invgen.audit.folder import CSV

    path = folder / CSV
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return pd.DataFrame(rows[1:], columns=rows[0]) if rows else None


def _audit_summary(folder: Path, report: dict[str, Any]) -> dict[str, Any]:
    from invgen.metrics.render import json_safe

    summary = {
        "folder": str(folder),
        "suite": report["protocol"]["suite"],
        "attribute": report["attribute"],
        "classifier": report["classifier"],
        "detector": report["detector"],
        "bias_score": report.get("bias_score"),
        "ci": report.get("ci", {}).get("bias_score"),
        "at_target": report.get("at_target", {}).get("bias_score"),
        "std": report.get("std", {}).get("bias_score"),
        "n_prompts": report["n_prompts"],
        "n_images": report["n_images"],
        "n_no_face": report["n_no_face"],
        "n_measured": report.get("n_measured"),
        "counts": report.get("pooled", {}).get("counts"),
    }
    if "base" in report:
        summary["base_bias_score"] = report["base"].get("bias_score")
    if "quality" in report:
        summary["quality"] = report["quality"]
    return json_safe(summary)


def _score(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and np.isfinite(value) else "none (no image counted)"


def show_audit(folder: str | os.PathLike) -> tuple:
    """What the Audit tab shows of an audit folder: (status, summary, report markdown, attribute plot, grids with
    their prompts, per-prompt table). A folder that holds no audit report is one sentence."""
    from PIL import Image

    from invgen.audit.compare import load_audit
    from invgen.audit.folder import GRIDS, HISTOGRAM

    folder = Path(folder)
    if not folder.is_dir():
        raise InvgenDataError(f"no audit folder at {shown(folder)}")
    report = load_audit(folder)
    if (folder / HISTOGRAM).is_file():
        plot = np.array(Image.open(folder / HISTOGRAM).convert("RGB"))
    else:  # an audit run with --no-plots
        from invgen.metrics.plots import plot_attribute_histogram

        plot = _plot(plot_attribute_histogram, report)
    prompts = list(report["per_prompt"])
    grids = []
    for path in sorted((folder / GRIDS).glob("*.png")):
        k = int(path.stem) if path.stem.isdigit() else -1
        caption = prompts[k] if 0 <= k < len(prompts) else path.name
        grids.append((np.array(Image.open(path).convert("RGB")), caption))
    summary = _audit_summary(folder, report)
    ci = summary["ci"]
    interval = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else ""
    status = (f"**{report['attribute']}** on `{summary['suite']}`: bias score {_score(summary['bias_score'])}"
              f"{interval} (mean over {report['n_prompts']} prompts; a model at the target scores "
              f"{_score(summary['at_target'])} with these sample sizes)")
    if "base_bias_score" in summary:
        status += f"; without the adapter {_score(summary['base_bias_score'])}"
    if report["detector"] != "none":
        status += f"; {report['n_no_face']} of {report['n_images']} images without a face"
    status += f". Folder `{folder}`."
    return status, summary, _audit_markdown(folder, report), plot, grids, _audit_table(folder)


def _audit_tab(gr, models: _Models, pipeline, adapter, runs_dir: Path, clip: Any, digits: bool) -> None:
    """Run a small `invgen audit` of the chosen pipeline (and adapter) into RUNS/audits/NAME, or open an audit."""
    from invgen.audit.suites import builtin_suites

    def classifier_for(spec: str, suite: str, attribute: str) -> str | None:
        """`auto`: the suite's own classifier, or zero-shot CLIP from `--clip` for an attribute without one."""
        spec = (spec or AUTO).strip()
        if spec != AUTO:
            return spec
        if clip:
            from invgen.audit.plan import split_attribute
            from invgen.audit.suites import load_suite

            loaded = load_suite(suite)
            names = split_attribute(attribute)
            if not all(loaded.attribute(n).classifier for n in names):
                return f"clip:{clip}"
        return None

    @_friendly
    def run(pipeline_name, adapter_name, scale, suite, attribute, spec, detector, per_prompt, seed, steps,
            prompts_limit, name, progress=gr.Progress()):
        from invgen.audit.run import run_audit
        from invgen.config import check_number

        _check_numbers(per_prompt, seed, scale, steps, 2.0)  # 2.0: the tab leaves CFG to the pipeline
        limit = int(check_number(prompts_limit or 0, "prompts limit", 0)) or None
        suite = (suite or "").strip()
        attribute = (attribute or "").strip()
        if not suite or not attribute:
            raise InvgenConfigError("choose a suite and an attribute (e.g. digits and color)")
        adapter_name = (adapter_name or "").strip()
        guidance = adapter_name if adapter_name and adapter_name != NO_ADAPTER else None
        detector = (detector or AUTO).strip()
        settings = {"pipeline": (pipeline_name or "").strip(), "adapter": guidance, "scale": float(scale),
                    "suite": suite, "per_prompt": int(per_prompt), "seed": int(seed), "steps": int(steps),
                    "prompts_limit": limit}
        out = audit_folder(runs_dir, name, settings)
        with models.lock:
            progress(0.0, desc="loading the pipeline")
            pipe = models.pipeline(pipeline_name)
            progress(0.1, desc="auditing: sampling, detecting faces, classifying")
            run_audit(pipe, suite, attribute, out, classifier=classifier_for(spec, suite, attribute),
                      detector=None if detector == AUTO else detector, guidance=guidance, scale=float(scale),
                      per_prompt=int(per_prompt), seed=int(seed), steps=int(steps), prompts_limit=limit,
                      device=models.device, progress=False)
        return (*show_audit(out), gr.update(choices=find_audits(runs_dir), value=str(out)))

    @_friendly
    def open_folder(folder):
        text = (folder or "").strip()
        if not text:
            raise InvgenConfigError("choose or type an audit folder")
        path = Path(text).expanduser()
        if not path.exists() and not path.is_absolute() and (Path(runs_dir) / AUDITS / text).is_dir():
            path = Path(runs_dir) / AUDITS / text  # a name the tab gave
        return show_audit(path)

    suites = builtin_suites()
    with gr.Tab("Audit"):
        gr.Markdown(
            "A small `invgen audit` of the pipeline above (and of the adapter, if one is chosen; the base model "
            "is then sampled from the same seeds too): the suite's prompts, one fixed seed per image, faces "
            "detected and cropped when the attribute is read on faces, every image classified, the bias "
            f"figures per prompt and overall. It is written to `{runs_dir / AUDITS}/NAME`, which a rerun with "
            "the same settings resumes. See docs/audit.md."
        )
        with gr.Row():
            suite = gr.Dropdown(suites, value="digits" if digits or "occupations-test" not in suites
                                else "occupations-test", label="Suite", allow_custom_value=True,
                                info="built-in, or the path of a suite file (.yaml/.json)")
            attribute = gr.Textbox("color" if digits else "gender", label="Attribute",
                                   info="e.g. color, gender, race, age, gender+race")
            spec = gr.Textbox(AUTO, label="Classifier", info="auto (the suite's, else CLIP from --clip), "
                              "oracle:color, clip:PATH, checkpoint:PATH")
            detector = gr.Dropdown([AUTO, "default", "none"], value=AUTO, label="Face detector",
                                   allow_custom_value=True, info="auto: by the attribute; or haar:PATH")
        with gr.Row():
            per_prompt = gr.Slider(1, MAX_AUDIT_PER_PROMPT, value=10, step=1, label="Images per prompt")
            seed = gr.Number(0, precision=0, label="Seed")
            steps = gr.Slider(2, 100, value=25, step=1, label="Denoising steps")
            limit = gr.Number(0, precision=0, label="Prompts (the first N; 0 = all)")
            scale = gr.Slider(0.0, 3.0, value=1.0, step=0.05, label="Adapter guidance scale s")
        with gr.Row():
            name = gr.Textbox("", label="Audit folder name", scale=3,
                              info=f"under {runs_dir / AUDITS}; empty = made from the settings")
            run_btn = gr.Button("Run audit", variant="primary", scale=1, elem_id="run-audit")
        with gr.Row():
            folder = gr.Dropdown(find_audits(runs_dir), value=None, label="Or open an audit folder", scale=3,
                                 allow_custom_value=True, elem_id="audit-folder")
            open_btn = gr.Button("Open", scale=1)
        status = gr.Markdown(elem_id="audit-status")
        with gr.Row():
            plot = gr.Image(label="Attribute per prompt", format="png", show_label=False)
            report_md = gr.Markdown()
        grids = gr.Gallery(label="Grids: each image labelled with its predicted value (or no face)", columns=2,
                           height="auto", format="png", elem_id="audit-grids")
        table = gr.Dataframe(label="Per prompt (per_prompt.csv)", interactive=False, wrap=True)
        with gr.Accordion("Summary (JSON)", open=False):
            summary = gr.JSON(label="Summary")
        shown_outputs = [status, summary, report_md, plot, grids, table]
        run_btn.click(run, inputs=[pipeline, adapter, scale, suite, attribute, spec, detector, per_prompt, seed,
                                   steps, limit, name], outputs=[*shown_outputs, folder], api_name="audit")
        open_btn.click(open_folder, inputs=folder, outputs=shown_outputs, api_name="open_audit")


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
