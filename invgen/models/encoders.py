"""Image encoders for the contrastive trainers: a small ResNet for 16-32 px images, or any timm /
torchvision model by name for real images (random init offline; pretrained weights when the user has them).

Every encoder maps a float batch in [-1, 1] of shape (B, 3, H, W) to features (B, feature_dim), and
`multiscale(x)` returns the pooled features after each stage (for multiscale appearance losses).
"""

from __future__ import annotations

import torch
from torch import nn

from invgen.errors import InvgenModelError
from invgen.registry import Registry


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.skip(x))


class SmallResNet(nn.Module):
    """A ResNet with one basic block per stage; (16, 32, 64) channels is ~0.1 M parameters."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), in_channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]))
        stages, cin = [], widths[0]
        for i, w in enumerate(widths):
            stages.append(_Block(cin, w, 1 if i == 0 else 2))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.feature_dim = widths[-1]
        self.stage_dims = list(widths)

    def multiscale(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = torch.relu(self.stem(x))
        feats = []
        for stage in self.stages:
            h = stage(h)
            feats.append(h.mean(dim=(2, 3)))
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.multiscale(x)[-1]


class _TimmEncoder(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.feature_dim = int(model.num_features)
        info = getattr(model, "feature_info", None)
        self.stage_dims = [int(c) for c in info.channels()] if hasattr(info, "channels") else [self.feature_dim]

    def multiscale(self, x: torch.Tensor) -> list[torch.Tensor]:
        if hasattr(self.model, "forward_intermediates"):
            _, inter = self.model.forward_intermediates(x)
            return [f.mean(dim=(2, 3)) if f.ndim == 4 else f.mean(dim=1) for f in inter]
        return [self.forward(x)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


ENCODERS: Registry[nn.Module] = Registry("encoder")
"""`factory(arg, pretrained=..., widths=...)` -> a module with `feature_dim`, `stage_dims` and `multiscale`."""


@ENCODERS.register("small_resnet", help="a one-block-per-stage ResNet for 16-32 px images")
def _small_resnet(arg: str, pretrained: bool = False, widths: tuple[int, ...] = (16, 32, 64)) -> nn.Module:
    return SmallResNet(tuple(widths))


@ENCODERS.register("timm", arg="NAME", help="any timm model, classifier head removed")
def _timm(arg: str, pretrained: bool = False, widths: tuple[int, ...] = ()) -> nn.Module:
    import timm

    try:
        return _TimmEncoder(timm.create_model(arg, pretrained=pretrained, num_classes=0))
    except RuntimeError as e:  # unknown name or weights missing offline
        raise InvgenModelError(f"encoder 'timm:{arg}': {e}") from None


@ENCODERS.register("torchvision", arg="NAME", help="any torchvision classifier, head removed")
def _torchvision(arg: str, pretrained: bool = False, widths: tuple[int, ...] = ()) -> nn.Module:
    import torchvision

    name = f"torchvision:{arg}"
    try:
        model = torchvision.models.get_model(arg, weights="DEFAULT" if pretrained else None)
    except (ValueError, RuntimeError, OSError) as e:
        raise InvgenModelError(f"encoder {name!r}: {e}") from None
    # Torchvision classifiers end in `fc` or `classifier`; drop it to get features.
    head_name = "fc" if hasattr(model, "fc") else "classifier" if hasattr(model, "classifier") else None
    if head_name is None:
        raise InvgenModelError(f"encoder {name!r}: cannot find its classification head (fc/classifier)")
    head = getattr(model, head_name)
    last = head if isinstance(head, nn.Linear) else [m for m in head.modules() if isinstance(m, nn.Linear)][0]
    setattr(model, head_name, nn.Identity())
    model.feature_dim = last.in_features
    model.stage_dims = [last.in_features]
    model.multiscale = lambda x, m=model: [m(x)]
    return model


def build_encoder(name: str = "small_resnet", pretrained: bool = False,
                  widths: tuple[int, ...] = (16, 32, 64)) -> nn.Module:
    """The encoder a spec names in `ENCODERS`: `small_resnet`, `timm:<name>`, `torchvision:<name>` or a
    plug-in's."""
    return ENCODERS.resolve(name, pretrained=pretrained, widths=tuple(widths))
