"""`checkpoint:PATH`: a trained classifier saved with `save_pretrained`, and the small CNN invgen trains.

Which model classes a checkpoint may hold is itself open: `register_checkpoint_class` adds one by the
`_class_name` that `save_pretrained` writes (the digits plug-in adds its digit CNN).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from invgen.errors import InvgenDataError, InvgenModelError, first_line
from invgen.metrics.classifiers import CLASSIFIERS
from invgen.models.clip import default_device
from invgen.registry import load_plugins


class AttributeCNN(ModelMixin, ConfigMixin):
    """A small CNN that reads one attribute; `names` (and `attribute`) live in its saved config."""

    @register_to_config
    def __init__(
        self,
        names: list[str] | None = None,
        attribute: str = "",
        size: int = 32,
        in_channels: int = 3,
        width: int = 16,
    ):
        super().__init__()
        if not names or len(names) < 2:
            raise ValueError("AttributeCNN needs at least two attribute names")
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, len(names))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def to_input(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, C) → float (N, C, size, size) in [0, 1]."""
        x = torch.from_numpy(np.ascontiguousarray(images)).float().div(255.0).permute(0, 3, 1, 2)
        if x.shape[1] != self.config.in_channels:
            if x.shape[1] != 1:
                raise InvgenDataError(
                    f"the classifier reads {self.config.in_channels}-channel images, "
                    f"got {x.shape[1]} channels"
                )
            x = x.expand(-1, self.config.in_channels, -1, -1)
        if x.shape[-2:] != (self.config.size, self.config.size):
            x = F.interpolate(
                x,
                size=(self.config.size, self.config.size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        return x

    @torch.no_grad()
    def predict(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        self.eval()
        out = [
            self(self.to_input(images[i : i + batch_size]).to(self.device)).argmax(1).cpu()
            for i in range(0, len(images), batch_size)
        ]
        return torch.cat(out).numpy().astype(np.int64) if out else np.zeros(0, dtype=np.int64)


def fit_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    weight_decay: float = 0.0,
    one_cycle: bool = False,
    pool: torch.Tensor | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> nn.Module:
    """Cross-entropy on random batches of `x` (drawn from the indices `pool`, default all) with AdamW (one-cycle
    learning rate if asked); `augment(batch, generator)` may change each batch. Seeded: one generator draws
    the batches and the augmentations, so a rerun gives the same model."""
    pool = torch.arange(len(x)) if pool is None else pool
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps) if one_cycle else None
    model.train()
    for _ in range(steps):
        idx = pool[torch.randint(len(pool), (min(batch_size, len(pool)),), generator=g)]
        xb = x[idx] if augment is None else augment(x[idx], g)
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    return model.eval()


def train_attribute_cnn(
    images: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    names: Sequence[str],
    attribute: str = "",
    steps: int = 200,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    size: int | None = None,
) -> AttributeCNN:
    """Fit an `AttributeCNN` on labelled images (uint8 (N, H, W, C)); save it with `save_pretrained`."""
    images = np.asarray(images)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    torch.manual_seed(seed)
    model = AttributeCNN(
        names=list(names), attribute=attribute, size=size or images.shape[1], in_channels=images.shape[-1]
    )
    fit_classifier(model, model.to_input(images), y, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
    return model.eval()


@dataclass(frozen=True)
class CheckpointClass:
    load: Callable[[], type]  # the class, imported only when a checkpoint of it is opened
    default_names: Callable[[dict[str, Any]], list[str]] | None = None  # names when the config has none


CHECKPOINT_CLASSES: dict[str, CheckpointClass] = {"AttributeCNN": CheckpointClass(lambda: AttributeCNN)}
"""Classes `checkpoint:PATH` can load, by the `_class_name` that `save_pretrained` writes."""


def register_checkpoint_class(
    class_name: str,
    load: Callable[[], type],
    default_names: Callable[[dict[str, Any]], list[str]] | None = None,
) -> None:
    """Let `checkpoint:PATH` open a model of `class_name` (it needs `from_pretrained` and `predict`)."""
    CHECKPOINT_CLASSES[class_name] = CheckpointClass(load, default_names)


class CheckpointClassifier:
    """A trained classifier loaded from a `save_pretrained` folder; predicts with `model.predict`."""

    def __init__(self, model: Any, names: Sequence[str], attribute: str = ""):
        self.model = model
        self.names = [str(n) for n in names]
        self.attribute = attribute

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(images), dtype=np.int64)


def _read_config(path: Path) -> dict[str, Any]:
    config_file = path / "config.json"
    if not path.is_dir():
        raise InvgenModelError(f"no classifier checkpoint folder at {path}")
    if not config_file.is_file():
        raise InvgenModelError(f"{path} has no config.json (save the classifier with save_pretrained)")
    try:
        return json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise InvgenModelError(f"{config_file}: not valid JSON ({e.msg})") from None


def load_checkpoint_classifier(
    path: str | os.PathLike, names: Sequence[str] | None = None, device: str | None = None
) -> CheckpointClassifier:
    load_plugins()  # plug-ins register their checkpoint classes on import
    path = Path(path).expanduser()
    config = _read_config(path)
    class_name = config.get("_class_name", "")
    known = CHECKPOINT_CLASSES.get(class_name)
    if known is None:
        raise InvgenModelError(
            f"{path} holds a '{class_name or 'unnamed'}' model, which invgen cannot load as a classifier "
            f"(known: {', '.join(CHECKPOINT_CLASSES)})"
        )
    names = list(names) if names else config.get("names")
    if not names and known.default_names is not None:
        names = known.default_names(config)
    if not names:
        raise InvgenModelError(
            f"{path / 'config.json'} has no 'names': give the attribute values (names= / --labels)"
        )
    try:
        model = known.load().from_pretrained(path)
    except Exception as e:  # noqa: BLE001 - diffusers raises OSError/ValueError/KeyError alike
        raise InvgenModelError(f"could not load the classifier in {path}: {first_line(e)}") from None
    model = model.to(default_device(device)).eval()
    outputs = getattr(getattr(model, "head", None), "out_features", len(names))
    if outputs != len(names):
        raise InvgenModelError(
            f"{path}: the classifier has {outputs} outputs but {len(names)} names were given"
        )
    return CheckpointClassifier(model, names, config.get("attribute", ""))


def _checkpoint(arg: str, *, names: Sequence[str] | None = None, device: str | None = None,
                **_: Any) -> CheckpointClassifier:
    return load_checkpoint_classifier(arg, names, device)


CLASSIFIERS.register("checkpoint", _checkpoint, arg="PATH", help="a classifier saved with save_pretrained")
