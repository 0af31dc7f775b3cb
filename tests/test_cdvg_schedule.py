"""CDvG's views per epoch (ViewSchedule), augmented views and the objective's options."""

import pytest
import torch

from invgen.cdvg.objective import CDvGObjective
from invgen.cdvg.schedule import ViewSchedule, view_seed
from invgen.cdvg.train import CDvGClassifier, ContrastiveConfig, augment_views
from invgen.cdvg.transforms import BiasTransform, draw_targets


class _Targets(BiasTransform):
    """Writes each view's target class into its pixels, so a test can read which class a view aimed at."""

    num_classes = 10
    fingerprint = "targets-test"

    def _translate(self, images, targets, seeds, labels):
        return torch.tensor(targets, dtype=torch.float32)[:, None, None, None].expand_as(images) / 10


def _schedule(draws, views=2, n=40, batch_size=20):
    images = torch.zeros(n, 3, 4, 4)
    labels = torch.arange(n) % 10
    return ViewSchedule(_Targets(), images, labels, views, draws, seed=0, batch_size=batch_size)


def _targets(schedule, index, step):
    return (schedule(torch.tensor(index), step)[:, :, 0, 0, 0] * 10).round().long()


def test_every_epoch_draws_new_views_and_draws_cap_them():
    fresh = _schedule(draws=None)
    # 40 images at batch 20: steps 0-1 are epoch 0, steps 2-3 epoch 1, ...
    assert [fresh.draw(s) for s in range(6)] == [0, 0, 1, 1, 2, 2]
    index = list(range(40))
    epochs = [_targets(fresh, index, step) for step in (0, 2, 4, 6)]
    # The same epoch gives the same views whatever the batch; a new epoch gives new target classes.
    assert torch.equal(_targets(fresh, index[::-1], 1), epochs[0].flip(0))
    assert all((epochs[0] != e).float().mean() > 0.5 for e in epochs[1:])
    # Targets are other classes, and the views of one image differ from each other.
    labels = torch.arange(40) % 10
    assert all((e != labels[:, None]).all() for e in epochs)
    assert (epochs[0][:, 0] != epochs[0][:, 1]).float().mean() > 0.5
    # draws=2: epoch 2 repeats epoch 0, epoch 3 repeats epoch 1.
    capped = _schedule(draws=2)
    assert torch.equal(_targets(capped, index, 4), _targets(capped, index, 0))
    assert torch.equal(_targets(capped, index, 6), _targets(capped, index, 2))
    assert not torch.equal(_targets(capped, index, 2), _targets(capped, index, 0))


def test_the_first_draw_keeps_the_one_draw_seeds():
    # Draw 0 uses the seeds views were made with before views were redrawn, so their cache still serves them.
    assert view_seed(3, 17, 1) == (3 * 1_000_003 + 17 * 101 + 1) % 2**62
    one = _schedule(draws=1, views=1)
    seeds = [view_seed(0, j, 0) for j in range(40)]
    expected = torch.tensor(draw_targets((torch.arange(40) % 10).tolist(), seeds, 10))
    assert torch.equal(_targets(one, list(range(40)), 7)[:, 0], expected)


def test_augmented_views_differ_from_each_other_and_keep_their_shape():
    views = torch.rand(4, 3, 3, 16, 16) * 2 - 1
    views[:, 1] = views[:, 0]
    out = augment_views(views, torch.Generator().manual_seed(0))
    assert out.shape == views.shape and out.min() >= -1 and out.max() <= 1
    # Two equal views come out different: each view has its own augmentation.
    assert (out[:, 0] - out[:, 1]).abs().mean() > 0.05
    assert torch.equal(out, augment_views(views, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("loss", ["supcon", "multilevel"])
def test_objective_options_train_and_differ(loss):
    torch.manual_seed(0)
    x, y = torch.rand(16, 3, 16, 16) * 2 - 1, torch.arange(16) % 4
    views = (x.flip(1)[:, None].repeat(1, 2, 1, 1, 1) + 0.05 * torch.randn(16, 2, 3, 16, 16)).clamp(-1, 1)
    values = {}
    for include in (True, False):
        model = CDvGClassifier(num_classes=4, widths=(8, 16))
        objective = CDvGObjective(ContrastiveConfig(loss=loss, include_original=include))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        first = None
        for _ in range(15):
            opt.zero_grad()
            value = objective(model, x, y, views)
            value.backward()
            opt.step()
            first = float(value.detach()) if first is None else first
        assert float(value.detach()) < first  # the objective is trained down
        torch.manual_seed(0)
        with torch.no_grad():
            values[include] = float(CDvGObjective(ContrastiveConfig(loss=loss, include_original=include))(
                CDvGClassifier(num_classes=4, widths=(8, 16)), x, y, views))
    # With and without the image among the positives are two different objectives.
    assert values[True] != pytest.approx(values[False])


def test_one_view_without_the_image_has_no_positive():
    from invgen.cdvg.train import CDvGConfig
    from invgen.config import load_config
    from invgen.errors import InvgenConfigError

    with pytest.raises(InvgenConfigError, match="contrastive.include_original: false needs translator.views >= 2"):
        load_config(CDvGConfig, None, ["contrastive.include_original=false", "translator.views=1"])
    with pytest.raises(InvgenConfigError, match="translator.draws: must be at least 1"):
        load_config(CDvGConfig, None, ["translator.draws=0"])
    with pytest.raises(InvgenConfigError, match="contrastive.loss: must be one of"):
        load_config(CDvGConfig, None, ["contrastive.loss=multi_level"])
