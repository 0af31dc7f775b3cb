"""What an audit will do, checked in full before anything is loaded, sampled or written.

`AuditRequest` holds what a user asks (the options of `invgen audit`) and checks its numbers when it is made;
`plan_audit` turns it into an `AuditPlan`: the suite and its attribute (or joint attribute, `gender+race`),
one classifier spec per attribute part, the face detector, the sampling settings and the statistics. Every
mistake a user can make in them is one `InvgenConfigError` (or `InvgenModelError` for weights that are not
there) raised by the two, so a bad audit leaves no folder behind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invgen.errors import InvgenConfigError, InvgenModelError, shown
from invgen.registry import split_spec

JOINT_SEPARATOR = "+"
"""Joins the parts of a joint attribute on the command line (`gender+race`)."""
VALUE_SEPARATOR = "|"
"""Joins the values of a joint attribute's parts into one value (`male|White`)."""
MAX_BOOTSTRAP = 100_000  # as `invgen metrics`: resamples are held in memory at once


@dataclass(frozen=True)
class AuditRequest:
    """What a user asks of one audit (the options of `invgen audit`, the arguments of `run_audit`); the
    numbers are checked when it is made, the rest (suite, classifiers, paths) by `plan_audit`.

    `suite` is a built-in suite name, a suite file or a loaded `Suite`; `attribute` one of its attributes or
    a joint one (`gender+race`); `out` the audit folder (only `run_audit` needs it); `classifier` one spec for
    every part of the attribute or one per part (None: each attribute's default in the suite); `detector`
    None picks "default" when any part is read from faces, else "none"; `steps` and `guidance_scale` None:
    the pipeline's own; `clip` None: a clip: classifier's weights.
    """

    suite: Any  # str, os.PathLike or invgen.audit.suites.Suite
    attribute: str
    out: str | Path | None = None
    _: dataclasses.KW_ONLY
    classifier: str | Sequence[str] | None = None
    detector: str | None = None
    guidance: str | None = None
    scale: float = 1.0
    per_prompt: int = 60
    seed: int = 0
    steps: int | None = None
    guidance_scale: float | None = None
    resolution: int | None = None
    batch_size: int = 32
    prompts_limit: int | None = None
    clip: str | None = None
    clip_model: str | None = None
    device: str | None = None
    n_boot: int = 1000
    confidence: float = 0.95
    face_margin: float = 0.25
    face_size: int = 224
    grid_images: int = 16

    def __post_init__(self) -> None:
        from invgen.config import GUIDANCE_SCALE_LIMIT, SCALE_LIMIT, check_number, check_seed

        for option, value in (("--per-prompt", self.per_prompt), ("--batch-size", self.batch_size),
                              ("--steps", self.steps), ("--resolution", self.resolution),
                              ("--prompts-limit", self.prompts_limit), ("--face-size", self.face_size)):
            _positive(value, option)
        check_number(self.scale, "--scale", -SCALE_LIMIT, SCALE_LIMIT)
        if self.guidance_scale is not None:
            check_number(self.guidance_scale, "--guidance-scale", 0.0, GUIDANCE_SCALE_LIMIT)
        check_seed(self.seed, "--seed")
        n_boot = self.n_boot
        if isinstance(n_boot, bool) or not isinstance(n_boot, int) or not 0 <= n_boot <= MAX_BOOTSTRAP:
            raise InvgenConfigError(f"--bootstrap must be an integer from 0 to {MAX_BOOTSTRAP}, got {n_boot!r}")
        if not 0.0 < self.confidence < 1.0:  # also refuses NaN
            raise InvgenConfigError(f"--confidence must lie between 0 and 1, got {self.confidence}")
        check_number(self.face_margin, "--face-margin", 0.0, 2.0)
        grid = self.grid_images
        if isinstance(grid, bool) or not isinstance(grid, int) or grid < 0:
            raise InvgenConfigError(f"--grid-images must be 0 or more, got {grid!r}")


def _positive(value: int | None, option: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise InvgenConfigError(f"{option} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class AuditPlan:
    """The validated settings of one audit; `sampling()` is the part that determines the pixels."""

    suite: Any  # invgen.audit.suites.Suite
    attribute: str  # as given: "gender" or "gender+race"
    parts: tuple[Any, ...]  # invgen.audit.suites.Attribute, one per part
    prompts: tuple[str, ...]
    classifiers: tuple[str, ...]  # one spec per part
    detector: str  # "default", "haar:PATH" or "none"
    per_prompt: int = 60
    seed: int = 0
    guidance: str | None = None
    scale: float = 1.0
    steps: int | None = None  # None: the pipeline's own default (recorded once the pipeline is loaded)
    guidance_scale: float | None = None
    resolution: int | None = None
    batch_size: int = 32
    clip: str | None = None  # open_clip weights for the CLIP score and CLIP-I (default: a clip: classifier's)
    clip_model: str | None = None
    device: str | None = None
    n_boot: int = 1000
    confidence: float = 0.95
    bootstrap_seed: int = 0  # `invgen metrics`' default, so both give the same intervals
    face_margin: float = 0.25
    face_size: int = 224
    grid_images: int = 16

    @property
    def joint(self) -> bool:
        return len(self.parts) > 1

    @property
    def part_names(self) -> list[str]:
        return [p.name for p in self.parts]

    @property
    def uses_faces(self) -> bool:
        return self.detector != "none"

    def call_kwargs(self) -> dict[str, Any]:
        """The pipeline call arguments the audit fixes (the pipeline's defaults fill the others)."""
        kwargs: dict[str, Any] = {}
        if self.steps is not None:
            kwargs["num_inference_steps"] = self.steps
        if self.guidance_scale is not None:
            kwargs["guidance_scale"] = self.guidance_scale
        if self.resolution is not None:
            kwargs["height"] = kwargs["width"] = self.resolution
        return kwargs

    def sampling(self, pipeline: str) -> dict[str, Any]:
        """What the images depend on: a rerun into the same folder must agree on all of it to resume."""
        return {
            "pipeline": pipeline,
            "guidance": self.guidance,
            "scale": self.scale if self.guidance else None,
            "suite": self.suite.name,
            "prompts": list(self.prompts),
            "per_prompt": self.per_prompt,
            "seed": self.seed,
            "steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "resolution": self.resolution,
        }

    def protocol(self, pipeline: str, call: dict[str, Any]) -> dict[str, Any]:
        """Everything behind the figures, as report.json records it; `call` is the resolved pipeline call."""
        return {
            "suite": self.suite.name,
            "suite_source": str(self.suite.source),
            "split": _split_of(self.suite.name),
            "attribute": self.attribute,
            "parts": {p.name: list(p.values) for p in self.parts},
            "classifier": {p.name: c for p, c in zip(self.parts, self.classifiers, strict=True)},
            "detector": self.detector,
            "face_margin": self.face_margin if self.uses_faces else None,
            "face_size": self.face_size if self.uses_faces else None,
            "pipeline": pipeline,
            "guidance": self.guidance,
            "scale": self.scale if self.guidance else None,
            "prompts": list(self.prompts),
            "per_prompt": self.per_prompt,
            "seed": self.seed,
            "image_seeds": "seed * 100003 + image index (invgen.sampling.image_seed)",
            "call": call,
            "clip": self.clip,
            "bootstrap": {"n_boot": self.n_boot, "confidence": self.confidence, "seed": self.bootstrap_seed},
        }


def _split_of(name: str) -> str | None:
    _, sep, split = name.rpartition("-")
    return split if sep and split in ("train", "test") else None


def split_attribute(attribute: str) -> list[str]:
    """`gender+race` → ["gender", "race"]; an empty or repeated part is an error."""
    names = [a.strip() for a in str(attribute).split(JOINT_SEPARATOR)]
    if not attribute or any(not n for n in names):
        raise InvgenConfigError(f"--attribute '{attribute}' names an empty attribute (write e.g. gender or "
                                "gender+race)")
    if len(set(names)) != len(names):
        raise InvgenConfigError(f"--attribute '{attribute}' names an attribute twice")
    return names


def _check_spec(spec: str, part: Any) -> str:
    """The spec names a classifier that reads images, and the local path it names exists (nothing loads)."""
    from invgen.metrics.classifiers import CLASSIFIERS

    entry, arg = CLASSIFIERS.entry(spec)
    if entry.name == "metadata":
        raise InvgenConfigError("the audit classifies the images it samples, which carry no attribute in "
                                "metadata.jsonl: use one that reads images "
                                f"({', '.join(e.usage for e in CLASSIFIERS if e.name != 'metadata')})")
    if entry.name == "clip" and not Path(arg).expanduser().exists():
        raise InvgenModelError(f"no CLIP weights at {shown(arg)} (give a local open_clip folder or weights file)")
    if entry.name == "checkpoint" and not Path(arg).expanduser().is_dir():
        raise InvgenModelError(f"no classifier checkpoint folder at {shown(arg)}")
    if entry.name == "clip" and len(part.prompts) < 2:
        raise InvgenConfigError(f"the suite gives no CLIP prompts for the values of '{part.name}', which a "
                                f"clip: classifier needs")
    return str(spec)


def _classifiers(specs: Sequence[str], parts: Sequence[Any], suite_name: str) -> tuple[str, ...]:
    specs = [s for s in specs if s]
    if not specs:
        missing = [p.name for p in parts if not p.classifier]
        if missing:
            raise InvgenConfigError(f"the attribute '{missing[0]}' of suite '{suite_name}' has no default "
                                    "classifier: give --classifier clip:PATH or checkpoint:PATH")
        specs = [p.classifier for p in parts]
    elif len(specs) == 1:
        specs = specs * len(parts)
    elif len(specs) != len(parts):
        raise InvgenConfigError(f"{len(specs)} classifiers for {len(parts)} attribute parts: give one for all "
                                "or one per part, in the order of --attribute")
    return tuple(_check_spec(s, p) for s, p in zip(specs, parts, strict=True))


def plan_audit(request: AuditRequest) -> AuditPlan:
    """Check the rest of the request (the suite, its attribute, the classifiers, that every local path given
    exists) and return the plan; loads no model."""
    from invgen.audit.suites import Suite, load_suite

    r = request
    suite = r.suite if isinstance(r.suite, Suite) else load_suite(r.suite)
    names = split_attribute(r.attribute)
    parts = tuple(suite.joint(names) if len(names) > 1 else [suite.attribute(names[0])])
    specs = [r.classifier] if isinstance(r.classifier, str) else list(r.classifier or [])
    classifiers = _classifiers(specs, parts, suite.name)
    detector = r.detector
    if detector is None:
        detector = "default" if any(p.faces for p in parts) else "none"
    detector = str(detector).strip()
    if not detector:
        raise InvgenConfigError("--detector is empty (use default, haar:PATH or none)")
    if r.guidance is not None and not Path(r.guidance).expanduser().is_dir():
        raise InvgenModelError(f"no adapter folder at {shown(r.guidance)} (give the folder an InvDiff run wrote)")
    clip = r.clip
    if clip is None:
        clip = next((arg for name, arg in map(split_spec, classifiers) if name == "clip"), None)
    elif not Path(clip).expanduser().exists():
        raise InvgenModelError(f"no CLIP weights at {shown(clip)} (give a local open_clip folder or weights file)")
    prompts = tuple(suite.prompts[:r.prompts_limit] if r.prompts_limit else suite.prompts)
    if not prompts:
        raise InvgenConfigError(f"the suite '{suite.name}' has no prompts")
    return AuditPlan(
        suite=suite, attribute=JOINT_SEPARATOR.join(names), parts=parts, prompts=prompts, classifiers=classifiers,
        detector=detector, per_prompt=r.per_prompt, seed=r.seed, guidance=str(r.guidance) if r.guidance else None,
        scale=float(r.scale), steps=r.steps, guidance_scale=r.guidance_scale, resolution=r.resolution,
        batch_size=r.batch_size, clip=str(clip) if clip else None, clip_model=r.clip_model, device=r.device,
        n_boot=r.n_boot, confidence=r.confidence, face_margin=float(r.face_margin), face_size=r.face_size,
        grid_images=r.grid_images,
    )


def with_call(plan: AuditPlan, steps: int | None, guidance_scale: float | None) -> AuditPlan:
    """The plan with the pipeline's defaults filled in for the settings the user left open."""
    return dataclasses.replace(plan, steps=plan.steps if plan.steps is not None else steps,
                               guidance_scale=plan.guidance_scale if plan.guidance_scale is not None
                               else guidance_scale)
