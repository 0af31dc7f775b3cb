"""The Audit tab: a small `invgen audit` (`audit.run.run_audit`) of the chosen pipeline (and adapter) into
RUNS/audits/NAME, or an audit folder opened; either is shown as `audits.show_audit` reads it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from invgen.app.audits import AUDITS, audit_folder, find_audits, show_audit, typed_audit_folder
from invgen.app.defaults import AppDefaults
from invgen.app.helpers import AUTO, NO_ADAPTER, check_numbers, handler, no_progress, offline_gradio
from invgen.app.models import Models
from invgen.errors import InvgenConfigError

MAX_AUDIT_PER_PROMPT = 100  # the tab is for small audits; `invgen audit` has no limit


def classifier_for(clip: Any, spec: str, suite: str, attribute: str) -> str | None:
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


def audit_settings(pipeline_name: str, adapter_name: str, scale: Any, suite: str, attribute: str,
                   per_prompt: Any, seed: Any, steps: Any, prompts_limit: Any) -> dict[str, Any]:
    """The tab's fields checked and as `run_audit` takes them (and `audit_folder` names them)."""
    from invgen.config import check_number

    check_numbers(per_prompt, seed, scale, steps, 2.0)  # 2.0: the tab leaves CFG to the pipeline
    limit = int(check_number(prompts_limit or 0, "prompts limit", 0)) or None
    suite = (suite or "").strip()
    attribute = (attribute or "").strip()
    if not suite or not attribute:
        raise InvgenConfigError("choose a suite and an attribute (e.g. digits and color)")
    adapter_name = (adapter_name or "").strip()
    guidance = adapter_name if adapter_name and adapter_name != NO_ADAPTER else None
    return {"pipeline": (pipeline_name or "").strip(), "adapter": guidance, "scale": float(scale),
            "suite": suite, "attribute": attribute, "per_prompt": int(per_prompt), "seed": int(seed),
            "steps": int(steps), "prompts_limit": limit}


def audit(models: Models, runs_dir: Path, clip: Any, pipeline_name: str, adapter_name: str, scale: Any,
          suite: str, attribute: str, spec: str, detector: str, per_prompt: Any, seed: Any, steps: Any,
          prompts_limit: Any, name: str, progress: Callable = no_progress) -> tuple:
    """Run (or resume) the audit and show it: `show_audit`'s outputs, then the folder drop-down listing it."""
    from invgen.audit.run import run_audit

    s = audit_settings(pipeline_name, adapter_name, scale, suite, attribute, per_prompt, seed, steps,
                       prompts_limit)
    detector = (detector or AUTO).strip()
    out = audit_folder(runs_dir, name, s)
    with models.lock:
        progress(0.0, desc="loading the pipeline")
        pipe = models.pipeline(pipeline_name)
        progress(0.1, desc="auditing: sampling, detecting faces, classifying")
        run_audit(pipe, s["suite"], s["attribute"], out,
                  classifier=classifier_for(clip, spec, s["suite"], s["attribute"]),
                  detector=None if detector == AUTO else detector, guidance=s["adapter"], scale=s["scale"],
                  per_prompt=s["per_prompt"], seed=s["seed"], steps=s["steps"], prompts_limit=s["prompts_limit"],
                  device=models.device, progress=False)
    listed = offline_gradio().update(choices=find_audits(runs_dir), value=str(out))
    return (*show_audit(out), listed)


def open_audit(runs_dir: Path, folder: str) -> tuple:
    """Show the audit folder typed or chosen (a path, or a name under RUNS/audits)."""
    return show_audit(typed_audit_folder(runs_dir, folder))


def audit_tab(gr: Any, models: Models, pipeline: Any, adapter: Any, runs_dir: Path, clip: Any,
              defaults: AppDefaults) -> None:
    """The audit's settings, Run and Open, then the report: status, plot, grids, table and summary."""
    from invgen.audit.suites import builtin_suites

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
            suite = gr.Dropdown(suites, value=defaults.suite(suites), label="Suite", allow_custom_value=True,
                                info="built-in, or the path of a suite file (.yaml/.json)")
            attribute = gr.Textbox(defaults.attribute, label="Attribute",
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
        run_btn.click(handler(gr, audit, models, runs_dir, clip),
                      inputs=[pipeline, adapter, scale, suite, attribute, spec, detector, per_prompt, seed, steps,
                              limit, name], outputs=[*shown_outputs, folder], api_name="audit")
        open_btn.click(handler(gr, open_audit, runs_dir), inputs=folder, outputs=shown_outputs,
                       api_name="open_audit")
