"""CDvG trainer: `accelerate launch -m invgen.train cdvg --config configs/digits/cdvg.yaml`.

loss = cross-entropy(classifier(encoder(x)), y) + α · contrastive(projection(encoder([x, views])))

where each image's bias-transformed views are its positives (`contrastive.positives: instance`; or every
image of the same class, `class`), set against each other and, with `contrastive.include_original`, against
the image. Every epoch draws new views (a new target class and seed per view; `translator.draws` bounds how
many distinct draws an image gets), each process makes the views of its own share of the batch through the
on-disk cache, and standard augmentations go on every view (`contrastive.augment`).
`translator.kind: none` is the plain cross-entropy baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from invgen.cdvg.makers import NO_VIEWS, build_transform
from invgen.cdvg.objective import CDvGObjective, contrastive_loss_fn
from invgen.cdvg.schedule import ViewSchedule
from invgen.config import GUIDANCE_SCALE_LIMIT, check, check_seed
from invgen.models.encoders import build_encoder
from invgen.registry import split_spec
from invgen.train.data import DataConfig, start_run
from invgen.train.loop import TrainConfig, Trainer
from invgen.views.makers import VIEW_MAKERS

MODEL_DIR = "model"
__all__ = ["CDvGClassifier", "CDvGConfig", "ContrastiveConfig", "EncoderConfig", "EvaluationConfig",
           "TranslatorConfig", "build_transform", "contrastive_loss_fn", "train_cdvg"]


@dataclass
class TranslatorConfig:
    # A view maker in invgen.views.makers.VIEW_MAKERS: diffusion | learned (bias translators) | genview
    # (GenView's label-free views, invgen.views) | none (plain CE) | a plug-in's
    kind: str = "learned"
    # A diffusers pipeline folder (diffusion) or a LearnedTranslator folder (learned), trained on the
    # biased training set. With `train_if_missing` it is trained here first, for `train_steps` steps.
    model: str = "runs/cdvg_translator"
    train_if_missing: bool = True
    train_steps: int = 1500
    strength: float = 1.0
    switch: float | None = 0.8
    num_inference_steps: int = 20
    guidance_scale: float = 2.0
    # Views per image and epoch. Every epoch draws new ones (a new target class and seed each) unless `draws`
    # caps how many distinct draws an image gets (epoch e uses draw e mod draws): a budget for costly
    # translators; `draws: 1` is one fixed set of views for the whole run.
    views: int = 2
    draws: int | None = None
    seed: int = 0
    cache_dir: str | None = None  # default: <model>/views_cache
    # diffusion only: one prompt per class; default: each class's prompt in the training set's metadata
    class_prompts: list[str] | None = None

    @property
    def makes_views(self) -> bool:
        return self.kind != NO_VIEWS

    def validate(self, prefix: str = "translator") -> None:
        check(split_spec(self.kind)[0] in VIEW_MAKERS, f"{prefix}.kind",
              f"must be one of {VIEW_MAKERS.usages()}, got '{self.kind}'")
        check(self.views >= 1, f"{prefix}.views", f"must be at least 1, got {self.views}")
        check(self.draws is None or self.draws >= 1, f"{prefix}.draws", f"must be at least 1 or null, got {self.draws}")
        check(0 < self.strength <= 1, f"{prefix}.strength", f"must be in (0, 1], got {self.strength}")
        check(self.switch is None or 0 <= self.switch <= 1, f"{prefix}.switch",
              f"must be in [0, 1] or null, got {self.switch}")
        check(0 <= self.guidance_scale <= GUIDANCE_SCALE_LIMIT, f"{prefix}.guidance_scale",
              f"must be between 0 and {GUIDANCE_SCALE_LIMIT:g}, got {self.guidance_scale}")
        check(self.train_steps > 0, f"{prefix}.train_steps", "must be positive")
        check_seed(self.seed, f"{prefix}.seed")


@dataclass
class EncoderConfig:
    name: str = "small_resnet"  # or timm:<name> / torchvision:<name>
    pretrained: bool = False
    widths: list[int] = field(default_factory=lambda: [16, 32, 64])
    projection_dim: int = 64


@dataclass
class ContrastiveConfig:
    alpha: float = 2.0
    # supcon (multi-positive NT-Xent) | ntxent | quality_driven (GenView) | multilevel (CustomContrast's
    # multiscale appearance term), the last two from invgen.views
    loss: str = "multilevel"
    temperature: float = 0.1
    positives: str = "instance"  # instance (an image and its views) | class
    # The image itself is one more positive of its views; false: only the views are set against each other
    # (the image is then only in the cross-entropy).
    include_original: bool = True
    # SimCLR's augmentations (invgen.views.train.augment) on every view, after the bias transformation.
    augment: bool = True
    quality_temperature: float = 1.0  # quality_driven only: GenView's gamma

    def validate(self, prefix: str = "contrastive") -> None:
        check(self.alpha >= 0, f"{prefix}.alpha", f"must be 0 or more, got {self.alpha}")
        losses = ("supcon", "ntxent", "quality_driven", "multilevel")
        check(self.loss in losses, f"{prefix}.loss", f"must be one of {losses}, got '{self.loss}'")
        check(self.loss != "quality_driven" or self.positives == "instance", f"{prefix}.positives",
              "quality_driven pairs each image with its own view: use positives: instance")
        check(self.temperature > 0, f"{prefix}.temperature", "must be positive")
        check(self.quality_temperature > 0, f"{prefix}.quality_temperature", "must be positive")
        check(self.positives in ("instance", "class"), f"{prefix}.positives", "must be instance or class")


@dataclass
class EvaluationConfig:
    """The test set's metadata columns `invgen eval cdvg` reads (plain column names, any data set)."""

    aligned_attribute: str = "bias_aligned"  # true where the image shows its class's majority bias value
    bias_attribute: str = "color_index"  # the bias value; worst-group accuracy is over (class, this) groups


@dataclass
class CDvGConfig:
    output_dir: str = "runs/cdvg"
    data: DataConfig = field(default_factory=DataConfig)
    num_classes: int = 10
    translator: TranslatorConfig = field(default_factory=TranslatorConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=800, batch_size=128, learning_rate=2e-3, warmup_steps=20,
                                            weight_decay=1e-4, checkpoint_every=200)
    )

    def validate(self) -> None:
        self.data.validate()
        self.translator.validate()
        self.contrastive.validate()
        self.train.validate()
        check(self.contrastive.include_original or self.translator.views >= 2 or not self.translator.makes_views,
              "contrastive.include_original", "false needs translator.views >= 2: one view alone has no positive")
        check(self.num_classes >= 2, "num_classes", f"must be at least 2, got {self.num_classes}")


class CDvGClassifier(ModelMixin, ConfigMixin):
    """Encoder + linear classifier + projection head (the head is only used for the contrastive loss)."""

    @register_to_config
    def __init__(
        self,
        encoder_name: str = "small_resnet",
        widths: tuple[int, ...] = (16, 32, 64),
        num_classes: int = 10,
        projection_dim: int = 64,
        pretrained: bool = False,
    ):
        super().__init__()
        self.encoder = build_encoder(encoder_name, pretrained=pretrained, widths=tuple(widths))
        d = self.encoder.feature_dim
        self.classifier = nn.Linear(d, num_classes)
        self.projection = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, projection_dim))

    def forward(self, x: torch.Tensor, project: bool = False, multiscale: bool = False):
        """Class logits; with `project=True` also the projection of the features, and with `multiscale=True`
        the encoder's pooled features after each stage as a third output."""
        scales = self.encoder.multiscale(x) if multiscale else None
        feats = scales[-1] if multiscale else self.encoder(x)
        logits = self.classifier(feats)
        if not project:
            return logits
        return (logits, self.projection(feats), scales) if multiscale else (logits, self.projection(feats))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        self.eval()
        device = next(self.parameters()).device
        return torch.cat([self(images[i : i + batch_size].to(device)).argmax(1).cpu()
                          for i in range(0, len(images), batch_size)])


def train_cdvg(cfg: CDvGConfig, resume: bool = False) -> Path:
    from invgen.cdvg.data import load_labelled_images

    out = Path(cfg.output_dir)
    enc = cfg.encoder
    torch.manual_seed(cfg.train.seed)  # the initialisation: the same in every process and every run
    model = CDvGClassifier(enc.name, tuple(enc.widths), cfg.num_classes, enc.projection_dim, enc.pretrained)
    if not cfg.translator.makes_views:
        # No views, no contrastive term: a head without gradients would stall DDP's gradient reduction.
        model.projection.requires_grad_(False)
    trainer = Trainer(cfg.train, out, model, desc=f"cdvg[{cfg.translator.kind}]")
    split = start_run(trainer, cfg, resume)
    images, labels, _ = load_labelled_images(split, cfg.num_classes)
    schedule = _view_schedule(cfg, images, labels) if cfg.translator.makes_views else None
    objective = CDvGObjective(cfg.contrastive)

    def compute_loss(model, step, micro, gen):
        idx = torch.randint(0, len(images), (cfg.train.batch_size,), generator=gen)
        x, y = trainer.shard(images[idx]), trainer.shard(labels[idx])
        views = None
        if schedule is not None:
            # Each process makes the views of its own share of the batch only.
            views = schedule(trainer.shard(idx).cpu(), step)
            if cfg.contrastive.augment:
                seed = int(torch.randint(0, 2**62, (1,), generator=gen)) + trainer.accelerator.process_index
                views = augment_views(views, torch.Generator().manual_seed(seed))
            views = views.to(trainer.device)
        return objective(model, x, y, views)

    trainer.fit(compute_loss)
    return trainer.save_model(out / MODEL_DIR)


def _view_schedule(cfg: CDvGConfig, images: torch.Tensor, labels: torch.Tensor) -> ViewSchedule:
    from accelerate import PartialState

    # Every process takes part: training a missing translator is itself a (distributed) run.
    transform = build_transform(cfg)
    PartialState().wait_for_everyone()
    t = cfg.translator
    return ViewSchedule(transform, images, labels, t.views, t.draws, t.seed, cfg.train.batch_size)


def augment_views(views: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """SimCLR's augmentations on every view of (b, V, 3, H, W) views, each with its own random draw."""
    from invgen.views.train import augment

    return augment(views.flatten(0, 1), gen).view_as(views)
