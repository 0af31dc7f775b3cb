"""`LearnedTranslator`: a small class-conditional image-to-image network (StarGAN-like), trained once on
the biased set and then frozen.

Objective (StarGAN's, simplified): the discriminator tells real from translated images and classifies real
ones; the generator makes G(x, b) look real and be classified as b, and must map G(G(x, b), a) back to x
(cycle reconstruction). On biased data the discriminator's classifier leans on the bias, so the cheapest
way for G to be "classified as b" is to take on b's bias, while the cycle term keeps the content.

Both networks are updated from one loss with a single optimizer (so the shared accelerate `Trainer` gives
checkpoints, resume and multi-process for free): the generator's terms see the discriminator through
detached parameters and the discriminator's terms see detached translations.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.func import functional_call

from invgen.cdvg.transforms import BiasTransform
from invgen.config import check
from invgen.errors import InvgenModelError
from invgen.fingerprint import weights_digest
from invgen.train.data import DataConfig, start_run
from invgen.train.loop import TrainConfig, Trainer


class TranslatorNet(ModelMixin, ConfigMixin):
    """Generator G(x, b) and discriminator D(x) -> (real/fake logit, class logits) in one module."""

    @register_to_config
    def __init__(self, num_classes: int = 10, channels: int = 32, blocks: int = 2):
        super().__init__()
        c = channels
        layers: list[nn.Module] = [nn.Conv2d(3 + num_classes, c, 3, 1, 1), nn.ReLU()]
        for _ in range(blocks):
            layers += [nn.Conv2d(c, c, 3, 1, 1), nn.ReLU()]
        layers += [nn.Conv2d(c, 3, 3, 1, 1)]
        # G predicts a change to the image, starting from "no change": the cycle term then only has to
        # tolerate what the classification term asks for.
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
        self.generator = nn.Sequential(*layers)
        self.discriminator = nn.Sequential(
            nn.Conv2d(3, c, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * c, 1 + num_classes),
        )

    def translate(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(target, self.config.num_classes).to(x.dtype)[:, :, None, None]
        h = torch.cat([x, onehot.expand(-1, -1, *x.shape[-2:])], dim=1)
        return (x + self.generator(h)).clamp(-1, 1)

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.translate(x, target)


@dataclass
class LearnedTranslatorConfig:
    output_dir: str = "runs/translator_learned"
    data: DataConfig = field(default_factory=DataConfig)
    num_classes: int = 10
    channels: int = 32
    blocks: int = 2
    lambda_cls: float = 1.0
    lambda_rec: float = 10.0
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=1500, batch_size=64, learning_rate=1e-3, lr_scheduler="constant",
                                            warmup_steps=0, checkpoint_every=500)
    )

    def validate(self) -> None:
        self.data.validate()
        self.train.validate()
        check(self.num_classes >= 2, "num_classes", f"must be at least 2, got {self.num_classes}")
        check(self.lambda_cls >= 0, "lambda_cls", f"must be 0 or more, got {self.lambda_cls}")
        check(self.lambda_rec >= 0, "lambda_rec", f"must be 0 or more, got {self.lambda_rec}")


def translator_loss(net: nn.Module, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, cfg: LearnedTranslatorConfig):
    model = net.module if hasattr(net, "module") else net  # unwrapped for functional_call under DDP
    fake = net(x, b)
    frozen_d = {k: v.detach() for k, v in model.discriminator.named_parameters()}

    def d_frozen(img):
        return functional_call(model.discriminator, frozen_d, (img,))

    # Discriminator: real vs translated, and the class of real images.
    d_real, d_fake = model.discriminator(x), model.discriminator(fake.detach())
    loss_d = (
        F.binary_cross_entropy_with_logits(d_real[:, 0], torch.ones_like(d_real[:, 0]))
        + F.binary_cross_entropy_with_logits(d_fake[:, 0], torch.zeros_like(d_fake[:, 0]))
        + cfg.lambda_cls * F.cross_entropy(d_real[:, 1:], a)
    )
    # Generator: fool D, be classified as b, and come back to x.
    g_out = d_frozen(fake)
    loss_g = (
        F.binary_cross_entropy_with_logits(g_out[:, 0], torch.ones_like(g_out[:, 0]))
        + cfg.lambda_cls * F.cross_entropy(g_out[:, 1:], b)
        + cfg.lambda_rec * (net(fake, a) - x).abs().mean()
    )
    return loss_d + loss_g


def train_learned_translator(cfg: LearnedTranslatorConfig, resume: bool = False) -> Path:
    """Train the translator on the (biased) training split and save it with `save_pretrained`."""
    from invgen.cdvg.data import load_labelled_images

    cfg.validate()
    out = Path(cfg.output_dir)
    torch.manual_seed(cfg.train.seed)  # the initialisation: the same in every process and every run
    net = TranslatorNet(cfg.num_classes, cfg.channels, cfg.blocks)
    trainer = Trainer(cfg.train, out, net, desc="translator")
    split = start_run(trainer, cfg, resume)
    images, labels, _ = load_labelled_images(split, cfg.num_classes)

    def compute_loss(model, step, micro, gen):
        idx = torch.randint(0, len(images), (cfg.train.batch_size,), generator=gen)
        a = labels[idx]
        b = (a + 1 + torch.randint(0, cfg.num_classes - 1, a.shape, generator=gen)) % cfg.num_classes
        return translator_loss(model, trainer.shard(images[idx]), trainer.shard(a), trainer.shard(b), cfg)

    trainer.fit(compute_loss)
    return trainer.save_model(out / "model")


class LearnedTranslator(BiasTransform):
    """A trained `TranslatorNet` as a `BiasTransform` (deterministic: the seed only picks the target class)."""

    def __init__(self, net: TranslatorNet, batch_size: int = 512):
        self.net = net.eval().requires_grad_(False)
        self.num_classes = int(net.config.num_classes)
        self.batch_size = batch_size
        self._fingerprint = f"learned|{weights_digest(net)}"

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> LearnedTranslator:
        path = Path(path)
        if (path / "model").is_dir():
            path = path / "model"
        if not (path / "config.json").is_file():
            raise InvgenModelError(f"{path} is not a trained LearnedTranslator (no config.json)")
        return cls(TranslatorNet.from_pretrained(path))

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def _translate(self, images: torch.Tensor, targets: list[int], seeds: list[int], labels: list[int]):
        device = next(self.net.parameters()).device
        t = torch.tensor(targets, device=device)
        out = [
            self.net.translate(images[i : i + self.batch_size].to(device), t[i : i + self.batch_size]).cpu()
            for i in range(0, len(images), self.batch_size)
        ]
        return torch.cat(out)
