"""Contrastive losses for generated views, NT-Xent as pytorch-metric-learning defines it.

- `QualityDrivenContrastiveLoss` (GenView): NT-Xent over the 2B views of a batch, each positive pair
  weighted by its quality score `q_i = fg_sim_i - bg_sim_i` (a good pair keeps the subject and changes
  the background): `w = B * softmax(q / quality_temperature)` over the batch, so the weights average 1.
- `MultilevelContrastiveLoss` (CustomContrast): a cross-modal semantic term (subject image features
  against text features of the subject) plus a multiscale appearance term (the same subject under two
  views close at every feature scale, other subjects negatives).

`build_view_loss(name, **kwargs)` builds either by name (`quality_driven`, `multilevel`) for trainers
that select the loss with a config key `loss:`. `pair_similarities` computes `fg_sim`/`bg_sim` from
feature maps and foreground masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from invgen.errors import InvgenConfigError, InvgenDataError


def _pair_losses(emb: torch.Tensor, labels: torch.Tensor, temperature: float, ref: torch.Tensor | None = None,
                 ref_labels: torch.Tensor | None = None) -> torch.Tensor:
    """NT-Xent loss of every positive pair, as pytorch-metric-learning's `NTXentLoss` defines it (cosine
    similarity / temperature; each positive against its anchor's negatives:
    `-log(e^{s_ap} / (e^{s_ap} + sum_n e^{s_an}))`), written as matrix operations: PML's pair loop made the
    multiscale SSL loss 15x slower than one NT-Xent. Without `ref` the embeddings are compared with one
    another (self-pairs excluded); with it, anchors in `emb` against `ref`. Equality with PML is tested."""
    self_pairs = ref is None
    if self_pairs:
        ref, ref_labels = emb, labels
    a, r = F.normalize(emb.float(), dim=1), F.normalize(ref.float(), dim=1)
    sim = a @ r.T / temperature
    same = labels[:, None] == ref_labels[None, :]
    if self_pairs:
        same = same & ~torch.eye(len(a), dtype=torch.bool, device=a.device)
    negative = labels[:, None] != ref_labels[None, :]
    neg_lse = torch.logsumexp(sim.masked_fill(~negative, float("-inf")), dim=1, keepdim=True)  # -inf: none
    losses = -(sim - torch.logaddexp(sim, neg_lse))
    if not same.any():  # no positive pair: zero, keeping the graph for backward
        return emb.sum() * 0.0 + torch.zeros(1, device=emb.device)
    return losses[same]


def _check_pair(z1: torch.Tensor, z2: torch.Tensor, what: str = "z1/z2") -> None:
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise InvgenDataError(f"{what} must be two (B, D) tensors of one shape, got {tuple(z1.shape)} and "
                              f"{tuple(z2.shape)}")
    if len(z1) < 2:
        raise InvgenDataError(f"a contrastive loss needs at least 2 samples in the batch, got {len(z1)}")


class QualityDrivenContrastiveLoss(nn.Module):
    def __init__(self, temperature: float = 0.2, quality_temperature: float = 1.0):
        super().__init__()
        if temperature <= 0 or quality_temperature <= 0:
            raise InvgenConfigError(f"temperature and quality_temperature must be positive, got {temperature} "
                                    f"and {quality_temperature}")
        self.temperature = float(temperature)
        self.quality_temperature = float(quality_temperature)

    def pair_weights(self, fg_sim: torch.Tensor, bg_sim: torch.Tensor) -> torch.Tensor:
        """Per-pair weights (B,), mean 1: rising with foreground similarity, falling with background
        similarity. Detached: the weights steer the loss, they are not optimised."""
        q = (fg_sim.float() - bg_sim.float()).detach()
        return torch.softmax(q / self.quality_temperature, dim=0) * len(q)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, fg_sim: torch.Tensor | None = None,
                bg_sim: torch.Tensor | None = None) -> torch.Tensor:
        """`z1`, `z2`: (B, D) embeddings of the two views; `fg_sim`, `bg_sim`: (B,) similarities of each
        pair's foregrounds and backgrounds. Without them every pair weighs 1 (plain NT-Xent)."""
        _check_pair(z1, z2)
        b = len(z1)
        if (fg_sim is None) != (bg_sim is None):
            raise InvgenDataError("give both fg_sim and bg_sim, or neither")
        if fg_sim is None:
            w = torch.ones(b, device=z1.device)
        else:
            if fg_sim.shape != (b,) or bg_sim.shape != (b,):
                raise InvgenDataError(f"fg_sim and bg_sim must have shape ({b},), got {tuple(fg_sim.shape)} and "
                                      f"{tuple(bg_sim.shape)}")
            w = self.pair_weights(fg_sim, bg_sim).to(z1.device)
        # NT-Xent written as one cross-entropy over the (2B, 2B) similarity matrix: with two views per
        # sample it equals pytorch-metric-learning's NTXentLoss pair by pair (tested) and is ~10x faster.
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
        sim = (z @ z.T / self.temperature).masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), -1e9)
        target = (torch.arange(2 * b, device=z.device) + b) % (2 * b)
        losses = F.cross_entropy(sim, target, reduction="none")
        return (w.repeat(2) * losses).mean()


class MultilevelContrastiveLoss(nn.Module):
    def __init__(
        self,
        temperature: float = 0.07,
        semantic_weight: float = 1.0,
        appearance_weight: float = 1.0,
        scale_weights: Sequence[float] | None = None,
    ):
        super().__init__()
        if temperature <= 0:
            raise InvgenConfigError(f"temperature must be positive, got {temperature}")
        if semantic_weight < 0 or appearance_weight < 0:
            raise InvgenConfigError("semantic_weight and appearance_weight must be 0 or more")
        self.temperature = float(temperature)
        self.semantic_weight, self.appearance_weight = float(semantic_weight), float(appearance_weight)
        self.scale_weights = None if scale_weights is None else [float(w) for w in scale_weights]
        self.terms: dict[str, float] = {}

    def semantic(self, image_feats: torch.Tensor, text_feats: torch.Tensor, subjects: torch.Tensor) -> torch.Tensor:
        """Symmetric cross-modal InfoNCE: each image against the texts (positives: its subject's texts), and
        each text against the images."""
        _check_pair(image_feats, text_feats, "image_feats/text_feats")
        a = _pair_losses(image_feats, subjects, self.temperature, text_feats, subjects)
        b = _pair_losses(text_feats, subjects, self.temperature, image_feats, subjects)
        return (a.mean() + b.mean()) / 2

    def appearance(self, scales1: Sequence[torch.Tensor], scales2: Sequence[torch.Tensor],
                   subjects: torch.Tensor) -> torch.Tensor:
        """NT-Xent at each scale over both views (positives: the same subject), weighted over scales."""
        if len(scales1) != len(scales2) or not scales1:
            raise InvgenDataError(f"scales1 and scales2 must list the same number (>0) of feature scales, got "
                                  f"{len(scales1)} and {len(scales2)}")
        weights = self.scale_weights or [1.0] * len(scales1)
        if len(weights) != len(scales1):
            raise InvgenConfigError(f"scale_weights has {len(weights)} entries for {len(scales1)} feature scales")
        labels = subjects.repeat(2)
        total = 0.0
        for w, f1, f2 in zip(weights, scales1, scales2, strict=True):
            _check_pair(f1, f2, "each scale's features")
            losses = _pair_losses(torch.cat([f1, f2]), labels, self.temperature)
            total = total + w * losses.mean()
        return total / sum(weights)

    def forward(
        self,
        image_feats: torch.Tensor | None,
        text_feats: torch.Tensor | None,
        scales1: Sequence[torch.Tensor],
        scales2: Sequence[torch.Tensor],
        subjects: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`image_feats`/`text_feats`: (B, D) subject image and text features (None to skip the semantic
        term, which then needs `semantic_weight=0`); `scales1`/`scales2`: per-scale (B, D_k) features of two
        views; `subjects`: (B,) subject ids (default: every sample its own subject)."""
        b = len(scales1[0]) if scales1 else len(image_feats)
        subjects = torch.arange(b) if subjects is None else torch.as_tensor(subjects).long()
        subjects = subjects.to(scales1[0].device if scales1 else image_feats.device)
        sem = torch.zeros((), device=subjects.device)
        if self.semantic_weight > 0:
            if image_feats is None or text_feats is None:
                raise InvgenDataError("the semantic term needs image_feats and text_feats (or semantic_weight=0)")
            sem = self.semantic(image_feats, text_feats, subjects)
        app = self.appearance(scales1, scales2, subjects)
        self.terms = {"semantic": float(sem.detach()), "appearance": float(app.detach())}
        return self.semantic_weight * sem + self.appearance_weight * app


def masked_pool(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Average (B, C, h, w) feature maps over each (B, 1, H, W) mask (resized to h x w): (B, C)."""
    m = F.interpolate(masks.float(), size=features.shape[-2:], mode="area")
    return (features * m).sum(dim=(2, 3)) / (m.sum(dim=(2, 3)) + 1e-6)


def pair_similarities(
    feats1: torch.Tensor, feats2: torch.Tensor, masks1: torch.Tensor, masks2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarity of the two views' foreground-pooled features and of their background-pooled
    features (GenView's pair quality inputs): two (B,) tensors."""
    fg = F.cosine_similarity(masked_pool(feats1, masks1), masked_pool(feats2, masks2), dim=1)
    bg = F.cosine_similarity(masked_pool(feats1, 1 - masks1), masked_pool(feats2, 1 - masks2), dim=1)
    return fg, bg


class FrozenFeatures(nn.Module):
    """Fixed random 3x3 conv features (32 channels, ReLU): the frozen feature maps the pair quality score
    is computed on. GenView uses a frozen CLIP; a fixed random filter bank needs no weights and still sees
    local color and stroke structure."""

    def __init__(self, channels: int = 32, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("weight", torch.randn(channels, 3, 3, 3, generator=g) / 3.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(F.conv2d(x.float(), self.weight, padding=1))


class PairQuality:
    """`quality(a, b) -> (fg_sim, bg_sim)`: the quality-driven loss's inputs for pairs of views, from
    foreground masks (default: saliency) and frozen features (default: `FrozenFeatures`); no gradients."""

    def __init__(self, foreground=None, features: nn.Module | None = None):
        from invgen.views.foreground import SaliencyForeground

        self.foreground = foreground if foreground is not None else SaliencyForeground()
        self.features = features if features is not None else FrozenFeatures()

    @torch.no_grad()
    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return pair_similarities(self.features(a), self.features(b), self.foreground(a), self.foreground(b))


LOSSES = {"quality_driven": QualityDrivenContrastiveLoss, "multilevel": MultilevelContrastiveLoss}


def build_view_loss(name: str, **kwargs) -> nn.Module:
    """A view loss by name (`quality_driven` or `multilevel`) with its keyword settings."""
    if name not in LOSSES:
        import difflib

        close = difflib.get_close_matches(name, LOSSES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise InvgenConfigError(f"loss: unknown view loss '{name}'{hint}; choose from {sorted(LOSSES)}")
    try:
        return LOSSES[name](**kwargs)
    except TypeError as e:
        raise InvgenConfigError(f"loss: bad settings for '{name}': {e}") from None
