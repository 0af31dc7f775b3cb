import json

import numpy as np
import pytest
import torch

from invgen.benchmarks.digits.data import digit_prompts
from invgen.cdvg.transforms import BiasTransform, CachedTransform, DiffusionTranslator, draw_targets
from invgen.errors import InvgenConfigError, InvgenDataError

DIGITS = digit_prompts()


@pytest.fixture(scope="module")
def ten_dir(tmp_path_factory):
    from invgen.benchmarks.digits.data import make_colored_digits

    return make_colored_digits(tmp_path_factory.mktemp("ten"), p_align=0.99, size=16, palette_name="ten")


@pytest.fixture(scope="module")
def learned(ten_dir, tmp_path_factory):
    from invgen.cdvg.learned import LearnedTranslator, LearnedTranslatorConfig, train_learned_translator
    from invgen.config import load_config

    out = tmp_path_factory.mktemp("translator")
    cfg = load_config(LearnedTranslatorConfig, None, [f"output_dir={out}", f"data.root={ten_dir}", "data.builder=null",
                                                      "train.steps=400", "train.log_every=400"])
    return LearnedTranslator.from_pretrained(train_learned_translator(cfg))


def _sample(root, n=120):
    from invgen.cdvg.data import load_labelled_images

    images, labels, image_set = load_labelled_images(root / "train", 10)
    idx = torch.arange(0, len(images), len(images) // n)[:n]
    return images[idx], labels[idx]


def test_learned_translator_changes_color_and_keeps_the_digit(ten_dir, learned, tmp_path):
    from invgen.benchmarks.digits.cnn import load_or_train_digit_cnn
    from invgen.benchmarks.digits.oracle import ColorOracle

    images, labels = _sample(ten_dir)
    seeds = list(range(len(images)))
    views = learned.transform(images, labels, seeds=seeds)
    targets = np.array(draw_targets(labels.tolist(), seeds, 10))
    u8 = ((views + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    color = ColorOracle("ten")(u8)
    digit = load_or_train_digit_cnn(tmp_path / "cnn").predict(u8)
    # The translator learned the bias: a view of digit a aimed at class b wears b's majority color ...
    assert (color == targets % 10).mean() > 0.6
    # ... and the content survives: the digit CNN still reads a.
    assert (digit == labels.numpy()).mean() > 0.6


class _Recolor(BiasTransform):
    """A deterministic stand-in that counts its calls."""

    num_classes = 10
    fingerprint = "recolor-test"

    def __init__(self):
        self.calls = 0

    def _translate(self, images, targets, seeds, labels):
        self.calls += len(images)
        shift = torch.tensor([(t * 0.37 + s % 7 * 0.01) % 1 for t, s in zip(targets, seeds, strict=True)])
        return images.roll(1, dims=1) * (0.5 + shift[:, None, None, None])


def test_cache_returns_identical_views_without_recomputing(tmp_path):
    inner = _Recolor()
    cached = CachedTransform(inner, tmp_path / "cache")
    x = torch.rand(6, 3, 8, 8) * 2 - 1
    labels = [0, 1, 2, 3, 4, 5]
    first = cached.transform(x, labels, generator=torch.Generator().manual_seed(3))
    assert inner.calls == 6 and cached.misses == 6
    again = cached.transform(x, labels, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    assert inner.calls == 6 and cached.hits == 6  # the second epoch costs nothing
    other = cached.transform(x, labels, generator=torch.Generator().manual_seed(4))  # new seeds: new views
    assert inner.calls == 12 and not torch.equal(other, first)


def test_targets_are_other_classes_and_follow_the_seed():
    labels = list(range(10)) * 5
    seeds = list(range(50))
    targets = draw_targets(labels, seeds, 10)
    assert all(t != a and 0 <= t < 10 for a, t in zip(labels, targets, strict=True))
    assert targets == draw_targets(labels, seeds, 10)
    assert len(set(targets)) == 10


def test_diffusion_translator_on_the_embedded_and_sd_pipelines(tiny_pipe):
    from diffusers import StableDiffusionPipeline

    from invgen.models import tiny_stable_diffusion_components

    x = torch.rand(3, 3, 16, 16) * 2 - 1
    for pipe in (tiny_pipe, StableDiffusionPipeline(**tiny_stable_diffusion_components(seed=0))):
        t = DiffusionTranslator(pipe, DIGITS, strength=0.6, switch=0.3, num_inference_steps=4)
        a = t.transform(x, [1, 2, 3], seeds=[5, 6, 7])
        b = t.transform(x, [1, 2, 3], seeds=[5, 6, 7])
        assert a.shape == x.shape and torch.equal(a, b)  # seeded per image
        assert a.min() >= -1 and a.max() <= 1
        # Views are 8-bit, like cached ones: a fresh view equals its cached copy exactly.
        assert torch.equal(a, torch.from_numpy(np.asarray(((a + 1) * 127.5).round())) / 127.5 - 1)
        # Each view depends on its own seed only, not on the batch it was computed in (up to one 8-bit level
        # where a batch's float rounding crosses a level boundary).
        assert torch.allclose(t.transform(x[1:2], [2], seeds=[6]), a[1:2], atol=1.01 / 127.5)


def test_prompt_switch_uses_the_source_prompt_late(tiny_pipe):
    with torch.no_grad():
        for p in tiny_pipe.unet.parameters():
            p.add_(0.02 * torch.randn_like(p))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    kw = dict(strength=1.0, num_inference_steps=4, guidance_scale=1.0)
    plain = DiffusionTranslator(tiny_pipe, DIGITS, switch=None, **kw).transform(x, [1, 2], [7, 8], seeds=[0, 1])
    switched = DiffusionTranslator(tiny_pipe, DIGITS, switch=0.6, **kw).transform(x, [1, 2], [7, 8], seeds=[0, 1])
    # Below t = 600 the source class's prompt replaces the target's, so the views differ from plain SDEdit.
    assert (plain - switched).abs().max() > 1e-4


def test_transform_rejects_bad_batches(tiny_pipe):
    t = DiffusionTranslator(tiny_pipe, DIGITS, num_inference_steps=2)
    with pytest.raises(InvgenDataError, match="images must be a float tensor"):
        t.transform(torch.rand(2, 16, 16), [0, 1])
    with pytest.raises(InvgenDataError, match="2 images but 3 labels"):
        t.transform(torch.rand(2, 3, 16, 16), [0, 1, 2])
    with pytest.raises(InvgenDataError, match="target class 12"):
        t.transform(torch.rand(1, 3, 16, 16), [0], [12])


def test_contrastive_loss_is_lower_for_aligned_positives():
    from invgen.cdvg.objective import contrastive_loss_fn
    from invgen.cdvg.train import ContrastiveConfig

    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(16, 32, generator=g), dim=1)
    views = torch.nn.functional.normalize(z + 0.1 * torch.randn(16, 32, generator=g), dim=1)
    ids = torch.arange(16)
    for kind in ("supcon", "ntxent"):
        loss = contrastive_loss_fn(ContrastiveConfig(loss=kind))
        aligned = loss(torch.cat([z, views]), torch.cat([ids, ids]))
        shuffled = loss(torch.cat([z, views[torch.randperm(16, generator=g)]]), torch.cat([ids, ids]))
        assert aligned < shuffled - 1.0


def test_accuracies_hand_computed():
    from invgen.cdvg.evaluate import accuracies

    labels = np.array([0, 0, 1, 1, 0, 1])
    bias = np.array([0, 1, 1, 0, 0, 1])
    aligned = bias == labels
    pred = np.array([0, 1, 1, 1, 0, 0])
    acc = accuracies(pred, labels, aligned, bias)
    # aligned rows 0, 2, 4, 5 -> 3/4 correct; conflicting rows 1, 3 -> 1/2; groups (0,0)=1, (0,1)=0, (1,1)=1/2, (1,0)=1
    assert acc["aligned_acc"] == 0.75 and acc["conflicting_acc"] == 0.5
    assert acc["unbiased_acc"] == pytest.approx(4 / 6)
    assert acc["worst_group_acc"] == 0.0 and acc["num_groups"] == 4
    assert acc["group_acc"] == {"0/0": 1.0, "0/1": 0.0, "1/0": 1.0, "1/1": 0.5}


def test_cdvg_trains_evaluates_and_resumes(ten_dir, learned, tmp_path):
    from invgen.cdvg.evaluate import evaluate_run
    from invgen.cdvg.train import CDvGConfig, train_cdvg
    from invgen.cli import main
    from invgen.config import load_config

    learned.net.save_pretrained(tmp_path / "translator" / "model")
    over = [f"data.root={ten_dir}", "data.builder=null", f"output_dir={tmp_path / 'run'}", "translator.kind=learned",
            f"translator.model={tmp_path / 'translator'}", "translator.train_if_missing=false",
            "train.steps=40", "train.batch_size=32", "train.checkpoint_every=20", "train.log_every=5"]
    cfg = load_config(CDvGConfig, None, over)
    train_cdvg(cfg)
    log = [json.loads(line)["loss"] for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1] < log[0]  # the trainer lowers its loss
    result = evaluate_run(tmp_path / "run")
    assert 0 <= result["worst_group_acc"] <= result["unbiased_acc"] <= 1
    assert (tmp_path / "run" / "eval.md").is_file()
    assert main(["eval", "cdvg", str(tmp_path / "run"), "--test-sets", "conflicting"]) == 0

    # Resume continues from the last checkpoint to a longer schedule.
    cfg2 = load_config(CDvGConfig, None, over + ["train.steps=60"])
    train_cdvg(cfg2, resume=True)
    log2 = [json.loads(line)["step"] for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert log2[-1] == 60


def test_cdvg_config_errors_are_one_sentence(tmp_path):
    from invgen.cdvg.train import CDvGConfig, build_transform
    from invgen.config import load_config
    from invgen.errors import InvgenModelError

    with pytest.raises(InvgenConfigError, match="translator.kind: must be one of"):
        load_config(CDvGConfig, None, ["translator.kind=stargan"])
    missing = [f"translator.model={tmp_path / 'none'}", "translator.train_if_missing=false"]
    for kind, message in (("diffusion", "is not a diffusers pipeline folder"), ("learned", "not a trained Learned")):
        with pytest.raises(InvgenModelError, match=message):
            build_transform(load_config(CDvGConfig, None, [*missing, f"translator.kind={kind}"]))


def test_cdvg_with_genviews_quality_driven_loss(ten_dir, learned, tmp_path):
    from invgen.cdvg.train import CDvGConfig, train_cdvg
    from invgen.config import load_config

    learned.net.save_pretrained(tmp_path / "translator" / "model")
    cfg = load_config(CDvGConfig, None, [
        f"data.root={ten_dir}", "data.builder=null", f"output_dir={tmp_path / 'run'}", "translator.kind=learned",
        f"translator.model={tmp_path / 'translator'}", "contrastive.loss=quality_driven", "train.steps=30",
        "train.batch_size=32", "train.log_every=5"])
    train_cdvg(cfg)
    log = [json.loads(line)["loss"] for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1] < log[0]
    with pytest.raises(InvgenConfigError, match="positives: instance"):
        load_config(CDvGConfig, None, ["contrastive.loss=quality_driven", "contrastive.positives=class"])


def test_cdvg_with_genview_views(ten_dir, tiny_pipe, tmp_path):
    from invgen.cdvg.train import CDvGConfig, build_transform, train_cdvg
    from invgen.config import load_config
    from invgen.models.loading import save_pipeline

    save_pipeline(tiny_pipe, tmp_path / "pipe")
    over = [f"data.root={ten_dir}", "data.builder=null", f"output_dir={tmp_path / 'run'}", "translator.kind=genview",
            f"translator.model={tmp_path / 'pipe'}", "translator.num_inference_steps=2", "train.steps=10",
            "train.batch_size=16", "train.log_every=5", "contrastive.loss=quality_driven", "translator.views=1",
            "translator.draws=1"]
    cfg = load_config(CDvGConfig, None, over)
    train_cdvg(cfg)
    assert (tmp_path / "run" / "model" / "config.json").is_file()
    # The views went to GenView's own cache, one per drawn image (10 steps x 16, one view, one draw), and a
    # second run with the same settings is served from it without making any.
    cached = sorted((tmp_path / "pipe" / "views_cache").rglob("*.png"))
    assert 100 < len(cached) <= 160
    train_cdvg(load_config(CDvGConfig, None, over + [f"output_dir={tmp_path / 'again'}"]))
    assert sorted((tmp_path / "pipe" / "views_cache").rglob("*.png")) == cached
    transform = build_transform(cfg)
    x, y = _sample(ten_dir, n=8)
    first = transform.transform(x, y, seeds=list(range(8)))
    hits = transform.generator.hits
    assert torch.equal(transform.transform(x, y, seeds=list(range(8))), first)
    assert transform.generator.hits == hits + 8


def test_view_makers_resolve_by_name_and_prompts_come_from_the_config_or_the_data(ten_dir):
    from invgen.cdvg.makers import class_prompts
    from invgen.cdvg.train import CDvGConfig
    from invgen.config import load_config
    from invgen.views.makers import VIEW_MAKERS

    assert {"diffusion", "genview", "learned", "none"} <= set(VIEW_MAKERS.names())
    cfg = load_config(CDvGConfig, None, [f"data.root={ten_dir}", "data.builder=null", "translator.kind=none"])
    assert VIEW_MAKERS.resolve("none", cfg=cfg) is None and not cfg.translator.makes_views
    # No prompts in the config: each class's prompt as the training set's metadata gives it.
    assert class_prompts(cfg) == digit_prompts()
    cfg.translator.class_prompts = [f"class {c}" for c in range(10)]
    assert class_prompts(cfg)[3] == "class 3"
