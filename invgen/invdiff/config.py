"""InvDiff's config: one file drives the max step (`groups`), the min step (`invdiff`) and `evaluate`."""

from __future__ import annotations

from dataclasses import dataclass, field

from invgen.config import GUIDANCE_SCALE_LIMIT, SCALE_LIMIT, check, check_seed
from invgen.invdiff.adapter import AdapterConfig
from invgen.invdiff.grouper import GrouperConfig
from invgen.train.data import DataConfig
from invgen.train.diffusion import FlowMatchingConfig
from invgen.train.loop import TrainConfig


@dataclass
class EvalConfig:
    # Generation prompts; empty: the training set's distinct captions.
    prompts: list[str] = field(default_factory=list)
    per_prompt: int = 50
    attribute: str = "color"
    # oracle:color | clip:PATH (local open_clip weights) | checkpoint:PATH (a trained attribute classifier)
    classifier: str = "oracle:color"
    # For clip: each attribute value and its prompts (averaged: prompt ensembling).
    attribute_prompts: dict[str, list[str]] = field(default_factory=dict)
    clip_model: str | None = None  # the architecture, when clip:PATH is a single weights file
    scale: float = 1.0  # the adapter's guidance scale s
    num_inference_steps: int = 25
    guidance_scale: float = 2.0  # classifier-free guidance
    # null: data.size, the resolution the adapter was trained at (a pipeline's own default can be far
    # larger: Flux and SDXL sample 1024 px)
    resolution: int | None = None
    seed: int = 0
    batch_size: int = 16

    def validate(self, prefix: str = "evaluation") -> None:
        check(self.per_prompt > 0, f"{prefix}.per_prompt", f"must be positive, got {self.per_prompt}")
        check(self.batch_size > 0, f"{prefix}.batch_size", f"must be positive, got {self.batch_size}")
        check(self.num_inference_steps > 0, f"{prefix}.num_inference_steps", "must be positive")
        check(abs(self.scale) <= SCALE_LIMIT, f"{prefix}.scale",
              f"must be between -{SCALE_LIMIT:g} and {SCALE_LIMIT:g}, got {self.scale}")
        check(0 <= self.guidance_scale <= GUIDANCE_SCALE_LIMIT, f"{prefix}.guidance_scale",
              f"must be between 0 and {GUIDANCE_SCALE_LIMIT:g}, got {self.guidance_scale}")
        check_seed(self.seed, f"{prefix}.seed")
        check(
            not self.classifier.startswith("clip:") or len(self.attribute_prompts) >= 2,
            f"{prefix}.attribute_prompts",
            "a clip classifier needs at least two attribute values with their prompts",
        )


@dataclass
class ObjectiveConfig:
    lam: float = 1.0
    # Draw each batch so every group gets an equal share (weights ∝ W_ig / n_g): the same expected
    # objective as uniform draws, with far less variance when a group is small (ours, not the paper's).
    balanced_sampling: bool = True
    # SD3 and Flux only: the training noise-level density and Flux's guidance value.
    flow_matching: FlowMatchingConfig = field(default_factory=FlowMatchingConfig)


@dataclass
class InvDiffConfig:
    base_model: str = "runs/base"
    output_dir: str = "runs/invdiff"
    data: DataConfig = field(default_factory=DataConfig)
    groups: GrouperConfig = field(default_factory=GrouperConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1000, batch_size=64, learning_rate=2e-3))
    evaluation: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        self.data.validate()
        self.groups.validate()
        self.adapter.validate()
        self.train.validate()
        self.evaluation.validate()
        check(self.objective.lam >= 0, "objective.lam", f"must be 0 or more, got {self.objective.lam}")
        self.objective.flow_matching.validate()

    def load_base_model(self):
        """The frozen base pipeline `base_model` names; a missing folder is an error naming the field."""
        from invgen.models.loading import load_frozen_pipeline

        return load_frozen_pipeline(self.base_model, "base_model", " (train it first: python -m invgen.train base)")


__all__ = ["EvalConfig", "InvDiffConfig", "ObjectiveConfig"]
