"""`run_audit`: sample a pipeline on a prompt suite, read every image's attribute, write the report.

    from invgen.audit import AuditRequest, run_audit
    report = run_audit("runs/demo/base", AuditRequest("digits", "color", "runs/audit", per_prompt=50))
    report["bias_score"], report["ci"]["bias_score"], report["per_prompt"]["a photo of the digit 3"]["counts"]

The order of work keeps a bad audit from writing anything and a killed one resumable:

1. every option is checked (`AuditRequest`, `plan_audit`), then the folder, detector and classifiers (main
   process only);
2. the pipeline (and adapter) are loaded and the folder is marked as this audit's (`.invgen-audit.json`);
3. images are sampled with one fixed seed each by `invgen.sampling.sample_to_imagefolder` into `images/`
   (and, with an adapter, the base model from the same seeds into `base_images/`), across the processes of
   `accelerate launch`, resuming whatever a killed run left;
4. the main process reads, detects, classifies (`finish_audit`) and writes the report, report.json last;
   with an adapter, the base images are read too, for the figures before the adapter (`report["base"]`).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from invgen.audit.folder import BASE_IMAGES, IMAGES, check_folder, claim_folder, read_marker
from invgen.audit.plan import AuditPlan, AuditRequest, plan_audit, with_call
from invgen.errors import InvgenConfigError, InvgenDataError, InvgenError, shown


def _on_main(state: Any, fn: Callable[[], Any]) -> Any:
    """Run `fn` on the main process; every process stops with its error, so none is left waiting."""
    result, error = None, None
    if state.is_main_process:
        try:
            result = fn()
        except InvgenError as e:
            error = (type(e).__name__, str(e))
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        error = broadcast_object_list([error])[0]
    if error:
        import invgen.errors

        raise getattr(invgen.errors, error[0], InvgenError)(error[1])
    return result


def _call_defaults(pipe: Any) -> tuple[int | None, float | None]:
    """The pipeline's own default steps and guidance scale (recorded, and passed, when the user gave none)."""
    try:
        params = inspect.signature(pipe.__call__).parameters
    except (TypeError, ValueError):
        return None, None

    def default(name: str) -> Any:
        p = params.get(name)
        return None if p is None or p.default is inspect.Parameter.empty else p.default

    return default("num_inference_steps"), default("guidance_scale")


def _load_pipe(pipeline: Any, state: Any) -> tuple[Any, str]:
    if not isinstance(pipeline, (str, Path)):
        name = getattr(pipeline, "name_or_path", None) or getattr(getattr(pipeline, "config", {}), "get",
                                                                   lambda *_: None)("_name_or_path")
        return pipeline, str(name or type(pipeline).__name__)
    from invgen.models.loading import load_pipeline

    pipe = load_pipeline(pipeline)
    pipe.to(state.device)
    return pipe, str(pipeline)


def _check_steps(pipe: Any, steps: int | None) -> None:
    train_steps = getattr(getattr(pipe, "scheduler", None), "config", {}).get("num_train_timesteps")
    if isinstance(train_steps, int) and steps is not None and steps > train_steps:
        raise InvgenConfigError(f"--steps {steps} is more than the {train_steps} steps the scheduler was trained with")


def _sample(pipe: Any, plan: AuditPlan, out: Path, guidance: Any, pipeline_name: str) -> None:
    from invgen.side_by_side import side_by_side

    info = {"pipeline": pipeline_name, "guidance": plan.guidance, "scale": plan.scale if plan.guidance else None,
            "audit_suite": plan.suite.name}
    # With an adapter the base model is sampled first, from the same seeds: each debiased image has its base
    # image to be compared with. The audit classifies the folders itself (faces, several attributes).
    folders = {"base": out / BASE_IMAGES, "debiased": out / IMAGES} if guidance is not None else {"base": out / IMAGES}
    infos = {"base": {**info, "guidance": None, "scale": None} if guidance is not None else info, "debiased": info}
    side_by_side(pipe, list(plan.prompts), plan.per_prompt, seed=plan.seed, guidance=guidance, scale=plan.scale,
                 batch_size=plan.batch_size, folders=folders, info=infos, **plan.call_kwargs())


def run_audit(pipeline: Any, request: AuditRequest | Any = None, *args: Any, plots: bool = True,
              progress: bool = True, **fields: Any) -> dict[str, Any] | None:
    """Audit `pipeline` (a folder, hub id or loaded pipeline) as `request` (an `AuditRequest`) asks, into the
    folder `request.out`.

    The arguments of `AuditRequest` may be given here instead of one:
    `run_audit(pipeline, suite, attribute, out, per_prompt=50)` (the form of earlier releases). With a
    `guidance` adapter the base model is sampled too, for the closeness scores. Returns the report (the
    content of out/report.json) on the main process, None on the others. A rerun with the same sampling
    settings resumes the folder.
    """
    from invgen.audit.classify import load_models
    from invgen.distributed import process_state

    request = _as_request(request, args, fields)
    plan = plan_audit(request)
    out = Path(request.out)
    state = process_state()
    models = _on_main(state, lambda: (check_folder(out), load_models(plan))[1])
    pipe, pipeline_name = _load_pipe(pipeline, state)
    plan = with_call(plan, *_call_defaults(pipe))
    _check_steps(pipe, plan.steps)
    adapter = None
    if plan.guidance:
        from invgen.invdiff.guidance import InvariantGuidance

        adapter = InvariantGuidance.from_pretrained(plan.guidance)
    _on_main(state, lambda: claim_folder(out, plan.sampling(pipeline_name)))
    _sample(pipe, plan, out, adapter, pipeline_name)
    if not state.is_main_process:
        return None
    return finish_audit(out, plan, models, plots=plots, progress=progress)


def _as_request(request: Any, args: tuple[Any, ...], fields: dict[str, Any]) -> AuditRequest:
    if isinstance(request, AuditRequest):
        if args or fields:
            raise TypeError("run_audit takes an AuditRequest or the arguments of one, not both")
        found = request
    else:
        found = AuditRequest(*(() if request is None else (request,)), *args, **fields)
    if found.out is None:
        raise InvgenConfigError("the audit needs a folder to write into (out)")
    return found


def _sampled_call(out: Path) -> dict[str, Any]:
    from invgen.sampling import MANIFEST

    try:
        return dict(json.loads((out / IMAGES / MANIFEST).read_text(encoding="utf-8")).get("call") or {})
    except (OSError, ValueError, AttributeError):
        return {}


def finish_audit(out: str | Path, plan: AuditPlan, models: Any = None, plots: bool = True,
                 progress: bool = True) -> dict[str, Any]:
    """Detect, classify and report the images already in the audit folder `out` (steps 4 above); returns the
    report. Deterministic: a resumed audit gets the report an uninterrupted one gets."""
    from invgen.audit.classify import analyze, load_models
    from invgen.audit.figures import audit_report
    from invgen.audit.grids import write_grids
    from invgen.audit.write import write_audit_report

    out = Path(out)
    marker = read_marker(out)
    if marker is None:
        raise InvgenDataError(f"{shown(out)} is not an audit folder (it has no .invgen-audit.json)")
    models = models if models is not None else load_models(plan)
    base = out / BASE_IMAGES if plan.guidance else None
    pred = analyze(out / IMAGES, plan, models, base_root=base, progress=progress)
    # The base model's images are read too (no quality scores of their own): the figures before the adapter.
    base_pred = None if base is None else analyze(base, plan, dataclasses.replace(models, clip=None),
                                                  progress=progress)
    protocol = plan.protocol(str(marker["sampling"].get("pipeline")), _sampled_call(out))
    report = audit_report(pred, plan, protocol, samples=str(out / IMAGES), base=base_pred,
                          base_samples=str(base) if base is not None else None)
    values = {p.name: list(p.values) for p in plan.parts}
    grids = write_grids(out, out / IMAGES, pred, values, plan.grid_images, progress=progress)
    write_audit_report(out, report, pred, values, grids, plots=plots)
    return report
