"""Small pieces every tab shares: gradio imported offline, event handlers whose errors are one sentence, the
page's number checks, and images made big enough to see."""

from __future__ import annotations

import functools
import inspect
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from invgen.errors import InvgenConfigError, InvgenError

NO_ADAPTER = "(none)"
AUTO = "auto"
DISPLAY_SIDE = 96  # tiny benchmark images are scaled up (nearest) to at least this many pixels for viewing
_log = logging.getLogger("invgen.app")

# Gallery thumbnails are at least 100 px wide by default: eight per row would not fit beside each other.
CSS = """
.grid-gallery .grid-container {
  grid-template-columns: repeat(var(--grid-cols), minmax(40px, 1fr)) !important;
  grid-auto-rows: minmax(40px, 1fr) !important;
}
"""


def offline_gradio() -> Any:
    """The gradio module, with its analytics and update check switched off before the first import."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import gradio as gr
    except ImportError:
        raise InvgenConfigError("the app needs gradio: pip install 'invgen[app]'") from None
    return gr


def theme(gr: Any) -> Any:
    """The default theme on the system's fonts: the machine may be offline, so no web fonts are fetched."""
    system = ["ui-sans-serif", "system-ui", "sans-serif"]
    return gr.themes.Default(font=system, font_mono=["ui-monospace", "monospace"])


def no_progress(fraction: float, desc: str | None = None) -> None:
    """The progress callback of a work function called outside the page."""


def friendly(fn: Callable) -> Callable:
    """Errors become one sentence in the browser (gr.Error), never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        gr = offline_gradio()
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


def handler(gr: Any, fn: Callable, *bound: Any) -> Callable:
    """`fn` with its leading arguments (models, runs folder, ...) bound, as a gradio event handler.

    Gradio reads the handler's inputs and its progress bar from the signature (a parameter whose default is a
    `gr.Progress()`); the work functions default `progress` to `no_progress` so that they run without a page,
    and the handler's signature swaps in the gradio one. Annotations are dropped: gradio would evaluate them
    in this module's namespace."""
    work = functools.partial(fn, *bound)
    params = [p.replace(annotation=inspect.Parameter.empty,
                        default=gr.Progress() if p.name == "progress" else p.default)
              for p in inspect.signature(work).parameters.values()]
    event = friendly(work)
    event.__name__ = event.__qualname__ = fn.__name__
    event.__doc__ = fn.__doc__
    event.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return event


def check_numbers(per_prompt: Any, seed: Any, scale: Any, steps: Any, cfg: Any) -> None:
    """The page's numbers, checked as the CLI checks its options: API callers can send any value."""
    from invgen.config import GUIDANCE_SCALE_LIMIT, SCALE_LIMIT, check_number, check_seed

    check_number(per_prompt, "images per prompt", 1)
    check_number(steps, "denoising steps", 1)
    check_number(scale, "adapter guidance scale", -SCALE_LIMIT, SCALE_LIMIT)
    check_number(cfg, "classifier-free guidance", 0.0, GUIDANCE_SCALE_LIMIT)
    check_seed(int(check_number(seed, "seed")), "seed")


def for_display(images: np.ndarray) -> list[np.ndarray]:
    """Images scaled up (nearest) so that the smallest side reaches DISPLAY_SIDE pixels."""
    side = max(images.shape[1], images.shape[2]) if len(images) else DISPLAY_SIDE
    factor = max(1, -(-DISPLAY_SIDE // side))
    return [im.repeat(factor, axis=0).repeat(factor, axis=1) for im in images]


def plot_pixels(draw: Callable[[Any, Path], None], data: Any) -> np.ndarray:
    """A `metrics.plots` figure as pixels (gradio keeps its own copy; no file of ours is left behind)."""
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="invgen-app-") as tmp:
        path = Path(tmp) / "plot.png"
        draw(data, path)
        return np.array(Image.open(path).convert("RGB"))
