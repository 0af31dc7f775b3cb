"""Self-supervised encoder training with standard augmentations or with GenView views, and a linear probe.

    model = train_ssl(SSLConfig(views="genview", loss="quality_driven"), images, generated=views)
    acc = linear_probe(model.encoder, train_x, train_y, test_x, test_y)

Two views of each image are contrasted. With `views="augment"` both are standard augmentations of the image;
with `views="genview"` one of the two, chosen at random per image, starts from a pre-generated GenView view
of it, the other from the image, and both are then augmented (as GenView does). Losses:
- `ntxent`: SimCLR's NT-Xent over the 2B views of a batch;
- `quality_driven` (GenView): each pair weighted by its quality score, computed from frozen features of the
  two views and their foreground masks;
- `multilevel` (CustomContrast's appearance term): NT-Xent at every scale of `encoder.multiscale(x)`, each
  scale through its own small projection head, averaged over scales. Its cross-modal semantic term needs
  text features, which label-free self-supervised learning has none of: its weight is 0 here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from invgen.config import check
from invgen.errors import InvgenDataError, InvgenModelError
from invgen.train.loop import TrainConfig, Trainer
from invgen.views.foreground import SaliencyForeground
from invgen.views.losses import MultilevelContrastiveLoss, PairQuality, QualityDrivenContrastiveLoss

LOSS_NAMES = ("ntxent", "quality_driven", "multilevel")


@dataclass
class SSLConfig:
    output_dir: str = "runs/views/ssl"
    encoder: str = "small_resnet"
    views: Literal["augment", "genview"] = "augment"
    loss: Literal["ntxent", "quality_driven", "multilevel"] = "ntxent"
    temperature: float = 0.2
    quality_temperature: float = 1.0  # GenView: gamma = 1
    proj_dim: int = 64
    saliency_threshold: float = 0.25
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=300, batch_size=128, learning_rate=3e-3, warmup_steps=20, checkpoint_every=10_000, log_every=25))

    def validate(self) -> None:
        self.train.validate()
        check(self.views in ("augment", "genview"), "views", f"must be augment or genview, got {self.views!r}")
        check(self.loss in LOSS_NAMES, "loss", f"must be ntxent, quality_driven or multilevel, got {self.loss!r}")
        check(self.temperature > 0, "temperature", "must be positive")
        check(self.quality_temperature > 0, "quality_temperature", "must be positive")
        check(self.proj_dim > 0, "proj_dim", "must be positive")
        check(0 < self.saliency_threshold < 1, "saliency_threshold",
              f"must be in (0, 1), got {self.saliency_threshold}")


class SSLModel(nn.Module):
    """Encoder + the usual 2-layer projection head (contrasted features live after the head). With
    `multiscale`, every scale of `encoder.multiscale(x)` but the last gets a small head of its own (the last
    one shares the main head), for the multilevel loss."""

    def __init__(self, encoder: nn.Module, proj_dim: int, multiscale: bool = False):
        super().__init__()
        self.encoder = encoder
        d = encoder.feature_dim
        self.head = _head(d, proj_dim)
        dims = list(getattr(encoder, "stage_dims", [d])) if multiscale else []
        self.scale_heads = nn.ModuleList([_head(k, proj_dim) for k in dims[:-1]])

    def forward(self, x: torch.Tensor, scales: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """The projected features (B, proj_dim); with `scales`, one (B, proj_dim) per scale of the encoder."""
        if not scales:
            return self.head(self.encoder(x))
        feats = self.encoder.multiscale(x)
        heads = [*self.scale_heads, self.head]
        if len(feats) != len(heads):
            raise InvgenModelError(f"the encoder gave {len(feats)} feature scales but lists {len(heads)} stage_dims")
        return [h(f) for h, f in zip(heads, feats, strict=True)]


def _head(d: int, proj_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, proj_dim))


def genview_pair(images: torch.Tensor, generated: torch.Tensor,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """GenView's positive pair before augmentation: per image, one of the two views, chosen at random, is the
    generated one and the other the image. The losses here are symmetric in the two views, so the side only
    matters in distribution for asymmetric ones (a momentum encoder on one branch, as in MoCo v3 or BYOL)."""
    first_generated = (torch.rand(len(images), generator=gen) < 0.5)[:, None, None, None]
    return torch.where(first_generated, generated, images), torch.where(first_generated, images, generated)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """SimCLR's augmentations for small images, per sample and batched: random resized crop (scale 0.5-1),
    color jitter (p 0.8: brightness, contrast, saturation 0.4) and grayscale (p 0.2). No flips: digits are
    not mirror-symmetric. Images in and out in [-1, 1]."""
    b = len(x)

    def u(lo, hi):
        return lo + (hi - lo) * torch.rand(b, generator=gen)

    side = u(0.5, 1.0).sqrt()
    tx, ty = (1 - side) * u(-1, 1), (1 - side) * u(-1, 1)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = side, side, tx, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    y = (F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False) + 1) / 2

    jitter = (torch.rand(b, generator=gen) < 0.8)[:, None, None, None]
    gray = (0.299 * y[:, 0] + 0.587 * y[:, 1] + 0.114 * y[:, 2])[:, None]
    bright = u(0.6, 1.4)[:, None, None, None]
    contrast = u(0.6, 1.4)[:, None, None, None]
    sat = u(0.6, 1.4)[:, None, None, None]
    j = y * bright
    mean = gray.mean(dim=(2, 3), keepdim=True) * bright
    j = (j - mean) * contrast + mean
    jg = (0.299 * j[:, 0] + 0.587 * j[:, 1] + 0.114 * j[:, 2])[:, None]
    j = (j - jg) * sat + jg
    y = torch.where(jitter, j, y).clamp(0, 1)
    to_gray = (torch.rand(b, generator=gen) < 0.2)[:, None, None, None]
    g = (0.299 * y[:, 0] + 0.587 * y[:, 1] + 0.114 * y[:, 2])[:, None].expand_as(y)
    return torch.where(to_gray, g, y) * 2 - 1


def train_ssl(cfg: SSLConfig, images: torch.Tensor, generated: torch.Tensor | None = None,
              resume: bool = False) -> SSLModel:
    """`images`: (N, 3, H, W) in [-1, 1]; `generated`: (N, K, 3, H, W) GenView views (K per image), needed
    when `cfg.views == "genview"`. With `resume`, continue from the newest checkpoint in `cfg.output_dir`
    (a finished run is then returned as it is). Returns the trained model (its `.encoder` is what gets probed)."""
    from invgen.models.encoders import build_encoder

    cfg.validate()
    if cfg.views == "genview":
        if generated is None or generated.ndim != 5 or generated.shape[0] != len(images):
            shape = None if generated is None else tuple(generated.shape)
            raise InvgenDataError(f"views=genview needs generated views of shape (N={len(images)}, K, 3, H, W), "
                                  f"got {shape}")
    torch.manual_seed(cfg.train.seed)  # the encoder's initialisation
    model = SSLModel(build_encoder(cfg.encoder), cfg.proj_dim, multiscale=cfg.loss == "multilevel")
    trainer = Trainer(cfg.train, cfg.output_dir, model, desc=f"ssl[{cfg.views},{cfg.loss}]")
    trainer.start(resume)
    loss_fn = QualityDrivenContrastiveLoss(cfg.temperature, cfg.quality_temperature)
    multilevel = MultilevelContrastiveLoss(cfg.temperature, semantic_weight=0.0)
    quality = PairQuality(SaliencyForeground(cfg.saliency_threshold))
    n, bs = len(images), cfg.train.batch_size

    def compute_loss(model, step, micro, gen):
        idx = torch.randint(n, (bs,), generator=gen)
        x = images[idx]
        if cfg.views == "genview":
            k = torch.randint(generated.shape[1], (bs,), generator=gen)
            first, second = genview_pair(x, generated[idx, k], gen)
        else:
            first, second = x, x
        v1, v2 = augment(first, gen), augment(second, gen)
        if cfg.loss == "multilevel":
            v1, v2 = trainer.shard(v1), trainer.shard(v2)
            return multilevel(None, None, model(v1, scales=True), model(v2, scales=True))
        fg = bg = None
        if cfg.loss == "quality_driven":
            fg, bg = quality(v1, v2)
            fg, bg = trainer.shard(fg), trainer.shard(bg)
        v1, v2 = trainer.shard(v1), trainer.shard(v2)
        return loss_fn(model(v1), model(v2), fg, bg)

    trainer.fit(compute_loss)
    return trainer.unwrap()


@torch.no_grad()
def embed(encoder: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    encoder.eval()
    return torch.cat([encoder(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def linear_probe(
    encoder: nn.Module,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    steps: int = 300,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> tuple[float, torch.Tensor]:
    """Accuracy of a logistic-regression probe on frozen, standardised features (full-batch Adam), and the
    per-image correctness on the test set (to split accuracy by group)."""
    f_train, f_test = embed(encoder, train_x), embed(encoder, test_x)
    mu, sd = f_train.mean(0), f_train.std(0) + 1e-6
    f_train, f_test = (f_train - mu) / sd, (f_test - mu) / sd
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    torch.manual_seed(seed)
    probe = nn.Linear(f_train.shape[1], num_classes)
    opt = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(probe(f_train), train_y).backward()
            opt.step()
    correct = probe(f_test).argmax(1) == test_y
    return float(correct.float().mean()), correct
