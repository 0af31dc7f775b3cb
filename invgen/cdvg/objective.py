"""CDvG's objective on one batch: cross-entropy on the images plus α times a contrastive term whose positives
are each image's bias-transformed views (and, with `include_original`, the image itself).

Rows of the one forward pass are [x_0 .. x_{b-1}, view(0, 0) .. view(0, V-1), ..., view(b-1, V-1)]: one call
through the (possibly DDP-wrapped) model, so gradients are synchronised across processes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def contrastive_loss_fn(cfg: Any):
    """The loss `contrastive.loss` names, with its temperature (`cfg` is a ContrastiveConfig)."""
    from pytorch_metric_learning import losses

    if cfg.loss == "supcon":
        return losses.SupConLoss(temperature=cfg.temperature)
    if cfg.loss == "quality_driven":
        from invgen.views.losses import QualityDrivenContrastiveLoss

        return QualityDrivenContrastiveLoss(cfg.temperature, cfg.quality_temperature)
    if cfg.loss == "multilevel":
        from invgen.views.losses import MultilevelContrastiveLoss

        # CustomContrast's appearance term only: its semantic term contrasts images with text features of the
        # subject, which an image classifier does not have.
        return MultilevelContrastiveLoss(cfg.temperature, semantic_weight=0.0)
    return losses.NTXentLoss(temperature=cfg.temperature)


class CDvGObjective:
    """`objective(model, x, y, views) -> loss`; `views` (b, V, 3, H, W) on the model's device, or None."""

    def __init__(self, cfg: Any):
        self.cfg = cfg  # a ContrastiveConfig
        self.loss = contrastive_loss_fn(cfg)
        self.quality = None
        if cfg.loss == "quality_driven":
            from invgen.views.losses import PairQuality

            self.quality = PairQuality()

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor, views: torch.Tensor | None) -> torch.Tensor:
        if views is None:
            return F.cross_entropy(model(x), y)
        cfg = self.cfg
        b, nv = views.shape[:2]
        rows = torch.cat([x, views.flatten(0, 1)])
        ids = torch.arange(b, device=x.device) if cfg.positives == "instance" else y
        if cfg.loss == "multilevel":
            logits, z, scales = model(rows, project=True, multiscale=True)
            # The projection head is not used by this loss; its zero term keeps DDP from waiting for its gradients.
            return F.cross_entropy(logits[:b], y) + cfg.alpha * self._multilevel(scales, b, nv, ids) + 0.0 * z.sum()
        logits, z = model(rows, project=True)
        ce = F.cross_entropy(logits[:b], y)
        if self.quality is not None:  # GenView's loss: each image against its first view, pairs weighted by quality
            fg, bg = self.quality(x, views[:, 0])
            return ce + cfg.alpha * self.loss(z[:b], z[b::nv], fg, bg)
        group = ids.repeat_interleave(nv)  # a view shares its image's id
        z = F.normalize(z, dim=1)
        if cfg.include_original:
            group = torch.cat([ids, group])
        else:  # the views against each other: the image itself is only in the cross-entropy
            z = z[b:]
        return ce + cfg.alpha * self.loss(z, group)

    def _multilevel(self, scales: list[torch.Tensor], b: int, nv: int, ids: torch.Tensor) -> torch.Tensor:
        """CustomContrast's multiscale appearance term on two positives per image: the image and its first view
        (`include_original`), or its first two views."""
        if self.cfg.include_original:
            first, second = [s[:b] for s in scales], [s[b::nv] for s in scales]
        else:
            first, second = [s[b::nv] for s in scales], [s[b + 1 :: nv] for s in scales]
        return self.loss(None, None, first, second, ids)
