"""CDvG trainer: `accelerate launch -m invgen.train cdvg --config configs/digits/cdvg.yaml`.

loss = cross-entropy(classifier(encoder(x)), y) + α · contrastive(projection(encoder([x, views])))

where each image's bias-transformed views are its positives (`contrastive.positives: instance`; or every
image of the same class, `class`). The contrastive loss is pytorch-metric-learning's (NT-Xent or SupCon).
Views are computed once before training, by the main process, through the on-disk cache, so every epoch
and every process reads the same views. `translator.kind: none` is the plain cross-entropy baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from invgen.cdvg.makers import NO_VIEWS, build_transform
from invgen.config import GUIDANCE_SCALE_LIMIT, check, check_seed
from invgen.models.encoders import build_encoder
from invgen.registry import split_spec
from invgen.train.data import DataConfig, start_run
from invgen.train.loop import TrainConfig, Trainer
from invgen.views.makers import VIEW_MAKERS

MODEL_DIR = "model"
__all__ = ["CDvGClassifier", "CDvGConfig", "ContrastiveConfig", "EncoderConfig", "EvaluationConfig",
           "TranslatorConfig", "build_transform",
           "compute_views", "contrastive_loss_fn", "train_cdvg"]


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
    views: int = 1
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
    alpha: float = 1.0
    loss: str = "supcon"  # supcon (multi-positive NT-Xent) | ntxent | quality_driven (GenView, invgen.views)
    temperature: float = 0.1
    positives: str = "instance"  # instance (an image and its views) | class
    quality_temperature: float = 1.0  # quality_driven only: GenView's gamma

    def validate(self, prefix: str = "contrastive") -> None:
        check(self.alpha >= 0, f"{prefix}.alpha", f"must be 0 or more, got {self.alpha}")
        losses = ("supcon", "ntxent", "quality_driven")
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
        default_factory=lambda: TrainConfig(steps=400, batch_size=128, learning_rate=2e-3, warmup_steps=20,
                                            weight_decay=1e-4, checkpoint_every=200)
    )

    def validate(self) -> None:
        self.data.validate()
        self.translator.validate()
        self.contrastive.validate()
        self.train.validate()
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

    def forward(self, x: torch.Tensor, project: bool = False):
        """Class logits, and with `project=True` also the projection of the features."""
        feats = self.encoder(x)
        logits = self.classifier(feats)
        return (logits, self.projection(feats)) if project else logits

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        self.eval()
        device = next(self.parameters()).device
        return torch.cat([self(images[i : i + batch_size].to(device)).argmax(1).cpu()
                          for i in range(0, len(images), batch_size)])


def contrastive_loss_fn(cfg: ContrastiveConfig):
    from pytorch_metric_learning import losses

    if cfg.loss == "supcon":
        return losses.SupConLoss(temperature=cfg.temperature)
    if cfg.loss == "quality_driven":
        from invgen.views.losses import QualityDrivenContrastiveLoss

        return QualityDrivenContrastiveLoss(cfg.temperature, cfg.quality_temperature)
    return losses.NTXentLoss(temperature=cfg.temperature)


def view_seed(seed: int, source: int, view: int) -> int:
    return (seed * 1_000_003 + source * 101 + view) % (2**62)


def compute_views(cfg: CDvGConfig, images: torch.Tensor, labels: torch.Tensor, is_main: bool = True):
    """(N, V, 3, H, W) views of every training image; the main process fills the cache, then all read it."""
    from accelerate import PartialState

    state = PartialState()
    t = cfg.translator
    # Every process takes part: training a missing translator is itself a (distributed) run.
    transform = build_transform(cfg)
    state.wait_for_everyone()
    if not is_main:
        state.wait_for_everyone()  # the main process fills the cache first; the others then read it
    views = _fill_views(transform, t, images, labels, is_main)
    if is_main:
        state.wait_for_everyone()
    return views


def _fill_views(transform, t: TranslatorConfig, images: torch.Tensor, labels: torch.Tensor, is_main: bool):
    from tqdm.auto import tqdm

    views = torch.empty((len(images), t.views, *images.shape[1:]))
    chunk = 512
    with tqdm(total=len(images) * t.views, desc="views", disable=not is_main) as bar:
        for v in range(t.views):
            for i in range(0, len(images), chunk):
                idx = range(i, min(i + chunk, len(images)))
                seeds = [view_seed(t.seed, j, v) for j in idx]
                views[i : i + len(idx), v] = transform.transform(images[i : i + len(idx)], labels[i : i + len(idx)],
                                                                 seeds=seeds)
                bar.update(len(idx))
    return views


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
    views = None
    if cfg.translator.makes_views:
        views = compute_views(cfg, images, labels, trainer.is_main)
    con = contrastive_loss_fn(cfg.contrastive)
    quality = None
    if cfg.contrastive.loss == "quality_driven":
        from invgen.views.losses import PairQuality

        quality = PairQuality()

    def compute_loss(model, step, micro, gen):
        idx = torch.randint(0, len(images), (cfg.train.batch_size,), generator=gen)
        x, y = trainer.shard(images[idx]), trainer.shard(labels[idx])
        if views is None:
            return F.cross_entropy(model(x), y)
        v = trainer.shard(views[idx])  # (b, V, 3, H, W)
        b, nv = v.shape[:2]
        # One call through the (possibly DDP-wrapped) model, so gradients are synchronised across processes.
        logits, z = model(torch.cat([x, v.flatten(0, 1)]), project=True)
        ce = F.cross_entropy(logits[:b], y)
        if quality is not None:  # GenView's loss: each image against its first view, pairs weighted by quality
            fg, bg = quality(x, v[:, 0])
            return ce + cfg.contrastive.alpha * con(z[:b], z[b::nv], fg, bg)
        z = F.normalize(z, dim=1)
        ids = torch.arange(b, device=x.device) if cfg.contrastive.positives == "instance" else y
        # Rows are [x_0..x_b, view(0,0), view(0,1), ..., view(b-1, V-1)]: a view shares its image's id.
        group = torch.cat([ids, ids.repeat_interleave(nv)])
        return ce + cfg.contrastive.alpha * con(z, group)

    trainer.fit(compute_loss)
    return trainer.save_model(out / MODEL_DIR)
