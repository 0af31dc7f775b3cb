"""Which bias-transformed views an image gets at which training step.

Every epoch draws new views of every image (a new target class and seed per view), as CDvG's translations are
sampled afresh: `draws` bounds how many distinct draws an image ever gets (epoch e uses draw e mod draws), so a
costly translator (a diffusion model) can be given a budget; `draws: 1` is one fixed set of views for the whole
run. A view is a pure function of (image, draw, view index), so it does not depend on the batch, the process or
a resume, and the view cache serves a rerun without computing anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# An odd 62-bit constant (the golden ratio's bits): draws after the first land far from the first draw's seeds.
_DRAW_STRIDE = 0x9E3779B97F4A7C15


def view_seed(seed: int, source: int, view: int, draw: int = 0) -> int:
    """The seed of view `view` of image `source` in draw `draw`; draw 0 keeps the seeds of the one-draw
    setting, so views cached by it are reused."""
    return (seed * 1_000_003 + source * 101 + view + draw * _DRAW_STRIDE) % (2**62)


@dataclass
class ViewSchedule:
    """`schedule(index, step)`: the (b, views, 3, H, W) views of training images `index` at `step`."""

    transform: object  # a BiasTransform (invgen.cdvg.transforms)
    images: torch.Tensor
    labels: torch.Tensor
    views: int
    draws: int | None
    seed: int
    batch_size: int  # the global batch size: an epoch is len(images) / batch_size steps

    def draw(self, step: int) -> int:
        epoch = step * self.batch_size // len(self.images)
        return epoch if self.draws is None else epoch % self.draws

    def __call__(self, index: torch.Tensor, step: int) -> torch.Tensor:
        index = index.cpu()
        d, nv = self.draw(step), self.views
        seeds = [view_seed(self.seed, int(j), v, d) for j in index for v in range(nv)]
        # One call for all b x views images: a diffusion translator batches them together.
        rows = index.repeat_interleave(nv)
        out = self.transform.transform(self.images[rows], self.labels[rows], seeds=seeds)
        return out.view(len(index), nv, *out.shape[1:])
