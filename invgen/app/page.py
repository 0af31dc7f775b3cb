"""The page: the pipeline and adapter boxes every tab reads, the tabs, and serving it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from invgen.app.audit_tab import audit_tab
from invgen.app.compare_tab import compare_tab
from invgen.app.defaults import defaults_for
from invgen.app.helpers import CSS, NO_ADAPTER, handler, offline_gradio, theme
from invgen.app.models import Models
from invgen.app.views_tab import views_tab
from invgen.errors import InvgenConfigError


def adapter_choices(found: Any) -> list[str]:
    """The adapter drop-down's choices: no adapter, then every adapter found."""
    return [NO_ADAPTER, *found.adapters]


def rescan(runs_dir: Path) -> tuple:
    """The two drop-downs' choices, read again from the runs folder (newly trained models appear)."""
    from invgen.runs import find_models

    gr = offline_gradio()
    found = find_models(runs_dir)
    return gr.update(choices=found.pipelines), gr.update(choices=adapter_choices(found))


def base_of(runs_dir: Path, found: Any, adapter: str) -> Any:
    """The pipeline box set to the base model an adapter records (left as it is when none is known)."""
    from invgen.runs import find_models

    gr = offline_gradio()
    base = found.adapters.get(adapter) or find_models(runs_dir).adapters.get(adapter)
    return gr.update(value=base) if base else gr.update()


def starting_models(found: Any, pipeline: str | None, adapter: str | None) -> tuple[str | None, str | None]:
    """(pipeline, adapter) the page starts with: those asked for, else the first adapter found and the base
    model it records, else the first pipeline."""
    default_adapter = adapter if adapter is not None else next(iter(found.adapters), None)
    default_pipe = pipeline or (found.adapters.get(default_adapter) if default_adapter else None)
    if not default_pipe:
        default_pipe = found.pipelines[0] if found.pipelines else None
    return default_pipe, default_adapter


def build_app(
    runs_dir: str | os.PathLike = "runs",
    pipeline: str | None = None,
    adapter: str | None = None,
    clip: str | os.PathLike | None = None,
    device: str | None = None,
    max_per_prompt: int = 64,
) -> Any:
    """The Gradio Blocks app over the pipelines and adapters found under `runs_dir`.

    `pipeline` and `adapter` are what the page starts with (default: the first adapter found and the base
    model it records).
    `clip`: local open_clip weights for zero-shot attribute classification of models that are not the
    digits benchmark (whose colors the exact oracle reads). `device`: where models run (default: cuda
    when available).
    """
    gr = offline_gradio()
    from invgen.runs import find_models

    runs_dir = Path(runs_dir)
    models = Models(device)
    found = find_models(runs_dir)
    default_pipe, default_adapter = starting_models(found, pipeline, adapter)
    defaults = defaults_for(default_pipe)

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
        compare_tab(gr, models, pipeline_box, adapter_box, defaults, clip, max_per_prompt)
        views_tab(gr, models, pipeline_box, defaults)
        audit_tab(gr, models, pipeline_box, adapter_box, runs_dir, clip, defaults)

        refresh_btn.click(handler(gr, rescan, runs_dir), outputs=[pipeline_box, adapter_box], api_name="refresh")
        adapter_box.change(handler(gr, base_of, runs_dir, found), inputs=adapter_box, outputs=pipeline_box,
                           api_name=False)
    return demo


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
) -> Any:
    """Build the app and serve it on `host:port` (default: gradio's first free port from 7860).

    `block=False` returns at once with the server running in the background (tests, notebooks);
    call `.close()` on the returned app to stop it.
    """
    gr = offline_gradio()
    demo = build_app(runs_dir, pipeline=pipeline, adapter=adapter, clip=clip, device=device)
    demo.queue(default_concurrency_limit=1)
    try:
        demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
                    quiet=not block, theme=theme(gr), css=CSS, show_error=False, **launch_kwargs)
    except OSError as e:  # port taken, address not ours
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InvgenConfigError(f"cannot serve the app on {host}:{port or 'a port from 7860'}: {first}") from None
    return demo
