"""The Views tab: an uploaded or sampled image with its bias-transformed views (CDvG,
`cdvg.transforms.DiffusionTranslator`) or its generated views (GenView, `views.GenViewGenerator`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from invgen.app.defaults import AppDefaults, defaults_for
from invgen.app.helpers import for_display, handler
from invgen.app.models import Models
from invgen.errors import InvgenConfigError

GENVIEW_VIEWS = 8  # views drawn of one image in the views tab


def class_prompts_of(text: str, pipeline: str) -> list[str]:
    """The class prompts typed (one per line), else the pipeline's default classes."""
    lines = [p.strip() for p in (text or "").splitlines() if p.strip()] or list(defaults_for(pipeline).class_prompts)
    if not lines:
        raise InvgenConfigError("write the class prompts, one per line (this pipeline has no classes of its own)")
    return lines


def source_class(text: str, label: Any, pipeline: str) -> tuple[list[str], int]:
    """(the class prompts, the source class's index into them), the index checked."""
    prompts, label = class_prompts_of(text, pipeline), int(label)
    if not 0 <= label < len(prompts):
        raise InvgenConfigError(f"the source class must lie in 0..{len(prompts) - 1}, got {label}")
    return prompts, label


def sample_one(models: Models, pipeline_name: str, class_text: str, label: Any, seed: Any,
               steps: Any) -> np.ndarray:
    """One image of the source class from `seed`, to draw views of."""
    from invgen.sampling import generate

    prompts, label = source_class(class_text, label, pipeline_name)
    with models.lock:
        pipe = models.pipeline(pipeline_name)
        image = generate(pipe, [prompts[label]], [int(seed)], progress=False, num_inference_steps=int(steps))
    return image[0]


def image_tensor(pipe: Any, image: np.ndarray) -> Any:
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


def cdvg_views(pipe: Any, x: Any, prompts: list[str], label: int, strength: float, steps: int,
               generator: Any) -> tuple[Any, list[str]]:
    """`x` translated to every class but its own: (views, captions)."""
    try:
        from invgen.cdvg.transforms import DiffusionTranslator
    except ImportError:
        raise InvgenConfigError("CDvG views are not available in this version of invgen") from None
    translator = DiffusionTranslator(pipe, class_prompts=prompts, strength=strength, num_inference_steps=steps)
    targets = [c for c in range(len(prompts)) if c != label]
    views = translator.transform(x.repeat(len(targets), 1, 1, 1), [label] * len(targets),
                                 target_labels=targets, generator=generator)
    return views, [f"→ {prompts[c]}" for c in targets]


def genview_views(pipe: Any, x: Any, steps: int, generator: Any) -> tuple[Any, list[str]]:
    """GENVIEW_VIEWS generated views of `x`: (views, captions with each view's noise level)."""
    try:
        from invgen.views import GenViewGenerator
    except ImportError:
        raise InvgenConfigError("GenView views are not available in this version of invgen") from None
    out = GenViewGenerator(pipe, num_inference_steps=steps).generate(x.repeat(GENVIEW_VIEWS, 1, 1, 1),
                                                                     generator=generator)
    captions = [f"view {i + 1}: noise level {level:.2f} (foreground {share:.2f})"
                for i, (level, share) in enumerate(zip(out.noise_levels, out.proportions, strict=True))]
    return out.views, captions


def make_views(models: Models, pipeline_name: str, image: np.ndarray | None, class_text: str, label: Any,
               method: str, strength: Any, seed: Any, steps: Any) -> list[tuple[np.ndarray, str]]:
    """The views of `image` by `method` ("CDvG" or "GenView"), each with its caption."""
    import torch

    from invgen.pixels import to_uint8

    if image is None:
        raise InvgenConfigError("upload an image or sample one first")
    prompts, label = source_class(class_text, label, pipeline_name)
    with models.lock:
        pipe = models.pipeline(pipeline_name)
        x = image_tensor(pipe, image)
        g = torch.Generator().manual_seed(int(seed))
        if method == "CDvG":
            views, captions = cdvg_views(pipe, x, prompts, label, float(strength), int(steps), g)
        else:
            views, captions = genview_views(pipe, x, int(steps), g)
    return list(zip(for_display(to_uint8(views)), captions, strict=True))


def views_tab(gr: Any, models: Models, pipeline: Any, defaults: AppDefaults) -> None:
    """A source image (uploaded, or sampled from a class prompt), the view method, and the views."""
    with gr.Tab("Views"):
        gr.Markdown(
            "An image and its views: **CDvG** translates it to every other class with the frozen model "
            "(the bias changes, the content stays); **GenView** draws generated positive views of it."
        )
        with gr.Row():
            with gr.Column():
                source = gr.Image(label="Source image (upload, or sample one)", type="numpy", height=200)
                fallback = f"; empty = {defaults.class_prompts_name}" if defaults.class_prompts else ""
                class_text = gr.Textbox("", lines=3, label=f"Class prompts (one per line{fallback})")
                with gr.Row():
                    label = gr.Number(defaults.source_class, precision=0, label="Source class (index)")
                    seed = gr.Number(0, precision=0, label="Seed")
                    steps = gr.Slider(2, 100, value=20, step=1, label="Steps")
                sample_btn = gr.Button("Sample a source image")
            with gr.Column():
                method = gr.Radio(["CDvG", "GenView"], value="CDvG", label="Views")
                strength = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Strength (CDvG)")
                views_btn = gr.Button("Make views", variant="primary", elem_id="make-views")
                views = gr.Gallery(label="Views", columns=5, height="auto", format="png", elem_id="views-gallery")
        sample_btn.click(handler(gr, sample_one, models), inputs=[pipeline, class_text, label, seed, steps],
                         outputs=source, api_name="sample_source")
        views_btn.click(handler(gr, make_views, models),
                        inputs=[pipeline, source, class_text, label, method, strength, seed, steps],
                        outputs=views, api_name="views")
