"""GenView views, foreground estimators, the quality-driven and multilevel contrastive losses, the CLI."""

import json
import math

import numpy as np
import pytest
import torch
from helpers import tiny_open_clip

from invgen.errors import InvgenConfigError, InvgenDataError, InvgenModelError
from invgen.views import (
    GenViewGenerator,
    MaskFolderForeground,
    MultilevelContrastiveLoss,
    QualityDrivenContrastiveLoss,
    SaliencyForeground,
    build_foreground,
    build_view_loss,
    foreground_proportion,
    noise_levels_for,
    pair_similarities,
)


def squares(sides, size=16, color=(0.9, -0.8, -0.8)):
    """Black images with a centred colored square of each side: foreground proportion side^2 / size^2."""
    x = -torch.ones(len(sides), 3, size, size)
    for i, s in enumerate(sides):
        a = (size - s) // 2
        x[i, :, a : a + s, a : a + s] = torch.tensor(color)[:, None, None]
    return x


def eight_bit(x):
    from invgen.pixels import to_signed, to_uint8

    return to_signed(to_uint8(x))


# ----------------------------------------------------------------------------------------------- foreground
def test_saliency_masks_the_bright_pixels_and_gives_the_proportion():
    x = squares([4, 8, 16])
    masks = SaliencyForeground()(x)
    assert masks.shape == (3, 1, 16, 16)
    # 16/256, 64/256; a full square has no border of another color: its border *is* the background.
    assert foreground_proportion(masks).tolist() == pytest.approx([16 / 256, 64 / 256, 0.0])


def test_mask_folder_reads_masks_by_name_and_names_a_missing_one(tmp_path):
    from PIL import Image

    (tmp_path / "m" / "sub").mkdir(parents=True)
    mask = np.zeros((8, 8), np.uint8)
    mask[:4] = 255
    Image.fromarray(mask).save(tmp_path / "m" / "sub" / "a.png")
    est = MaskFolderForeground(tmp_path / "m")
    got = est(torch.zeros(1, 3, 16, 16), names=["sub/a.jpg"])  # same stem, resized to the image
    assert foreground_proportion(got).item() == pytest.approx(0.5)
    with pytest.raises(InvgenDataError, match=r"no mask for image sub/b\.png"):
        est(torch.zeros(2, 3, 16, 16), names=["sub/a.png", "sub/b.png"])
    with pytest.raises(InvgenDataError, match="needs the images' file names"):
        est(torch.zeros(1, 3, 16, 16))


def test_clip_foreground_runs_on_a_tiny_local_open_clip(tmp_path):
    est = build_foreground(f"clip:{tiny_open_clip(tmp_path / 'clip')}")
    masks = est(squares([6, 10]))
    assert masks.shape == (2, 1, 16, 16)
    assert masks.min() >= 0 and masks.max() <= 1 and masks.max() > 0.9  # min-max normalised per image
    with pytest.raises(InvgenModelError, match="no CLIP weights"):
        build_foreground(f"clip:{tmp_path / 'missing'}")


def test_bad_foreground_specs_and_images_are_clear_errors():
    with pytest.raises(InvgenConfigError, match=r"unknown foreground estimator 'sal' \(use clip:PATH, masks:FOLDER"):
        build_foreground("sal")
    with pytest.raises(InvgenDataError, match="threshold must be a number"):
        build_foreground("saliency:x")
    with pytest.raises(InvgenDataError, match=r"\(B, 3, H, W\)"):
        SaliencyForeground()(torch.zeros(3, 16, 16))


# ----------------------------------------------------------------------------------------------- noise levels
def test_noise_level_is_monotone_in_the_foreground_proportion():
    p = torch.linspace(0, 1, 101)
    for levels in [(0.2, 0.8), [0, 100, 200, 300, 400]]:
        got = noise_levels_for(p, levels)
        assert all(b >= a for a, b in zip(got, got[1:], strict=False))
    assert noise_levels_for([0.0, 0.5, 1.0], (0.2, 0.6)) == pytest.approx([0.2, 0.4, 0.6])
    assert noise_levels_for([0.1, 0.25, 0.59, 0.61, 0.99, 1.0], [0, 100, 200, 300, 400]) == [
        0, 100, 200, 300, 400, 400]


def test_genview_bins_are_right_closed_at_their_edges():
    # GenView's bins: [0, .2] -> 0, (.2, .4] -> 100, ..., (.8, 1] -> 400; a proportion on an edge stays below.
    levels = [0, 100, 200, 300, 400]
    assert noise_levels_for([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], levels) == [0, 0, 100, 200, 300, 400]
    assert noise_levels_for([0.2000001, 0.4000001, 0.8000001], levels) == [100, 200, 400]
    # An edge reached through floating-point arithmetic is still on the edge.
    assert noise_levels_for([0.1 + 0.2, 0.2 + 0.2 + 0.2], list(range(10))) == [2, 5]
    assert noise_levels_for([0.2 + 0.2 + 0.2], levels) == [200]
    # A user's own list keeps its own number of bins: 3 levels, edges at 1/3 and 2/3.
    assert noise_levels_for([1 / 3, 0.34, 2 / 3, 0.67], [0.1, 0.5, 0.9]) == [0.1, 0.5, 0.5, 0.9]


def test_default_strengths_are_genviews_levels_over_1000_and_level_0_is_the_image(tiny_pipe):
    gen = GenViewGenerator(tiny_pipe, num_inference_steps=4)
    assert gen.noise_levels == [0.0, 0.1, 0.2, 0.3, 0.4] and gen.guidance_scale == 1.0
    x = squares([4, 10, 12])  # proportions .0625, .39, .5625 -> strengths 0, .1, .2
    out = gen.generate(x, generator=torch.Generator().manual_seed(0))
    assert out.noise_levels == [0.0, 0.1, 0.2]
    assert torch.equal(out.views[0], eight_bit(x[0]))  # views are 8-bit, like the images they come from
    assert not torch.equal(out.views[2], x[2])


class FakeImg2ImgPipeline:
    """Records the calls a diffusers img2img pipeline would get; like diffusers, refuses a zero-step schedule."""

    def __init__(self):
        self.calls = []

    def __call__(self, prompt, image, strength, generator, num_inference_steps, guidance_scale, output_type):
        if int(num_inference_steps * strength) < 1:
            raise ValueError("After adjusting the num_inference_steps by strength parameter ... is < 1")
        self.calls.append((strength, len(image)))
        return type("Out", (), {"images": image * 0 + strength})()


def test_a_zero_strength_does_not_call_the_pipeline():
    pipe = FakeImg2ImgPipeline()
    x = squares([4, 6, 12])  # proportions .0625, .14, .5625 -> 0, 0, .2
    out = GenViewGenerator(pipe).generate(x, generator=torch.Generator().manual_seed(0))
    assert out.noise_levels == [0.0, 0.0, 0.2]
    assert pipe.calls == [(0.2, 1)]
    assert torch.equal(out.views[:2], eight_bit(x[:2]))
    assert (out.views[2] - (2 * 0.2 - 1)).abs().max() < 0.01  # the fake's view: the strength, as a gray


def test_guidance_under_the_empty_prompt_changes_nothing(tiny_pipe):
    x = squares([4, 8, 12, 16])
    views = [GenViewGenerator(tiny_pipe, noise_levels=[0.5], num_inference_steps=4, guidance_scale=g)(
        x, generator=torch.Generator().manual_seed(3)) for g in (1.0, 10.0)]
    assert torch.equal(views[0], views[1])
    assert (views[0] - x).abs().max() > 0.5  # the views did change: the equality is not that of no-ops
    prompted = GenViewGenerator(tiny_pipe, noise_levels=[0.5], num_inference_steps=4, guidance_scale=10.0,
                                prompt="a photo of the digit 3")(x, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(prompted, views[0])  # with a prompt guidance does act


def test_generator_picks_more_noise_for_larger_foregrounds(tiny_pipe):
    gen = GenViewGenerator(tiny_pipe, noise_levels=(0.1, 0.9), num_inference_steps=4)
    out = gen.generate(squares([4, 8, 12]), generator=torch.Generator().manual_seed(0))
    assert out.proportions == pytest.approx([16 / 256, 64 / 256, 144 / 256])
    assert out.noise_levels == pytest.approx([0.1 + 0.8 * p for p in out.proportions])
    assert out.views.shape == (3, 3, 16, 16) and out.views.abs().max() <= 1


def test_bad_noise_levels_are_clear_errors(tiny_pipe):
    with pytest.raises(InvgenModelError, match=r"outside \[0, 1\]"):
        GenViewGenerator(tiny_pipe, noise_levels=[100, 200])
    with pytest.raises(InvgenModelError, match="increasing"):
        GenViewGenerator(tiny_pipe, noise_levels=[0.4, 0.2, 0.3])


# ----------------------------------------------------------------------------------------------- views
def test_views_are_deterministic_for_a_seed_and_cached(tiny_pipe, tmp_path):
    x = squares([6, 10, 14])
    gen = GenViewGenerator(tiny_pipe, noise_levels=(0.3, 0.7), num_inference_steps=2, cache_dir=tmp_path / "c")
    a = gen(x, generator=torch.Generator().manual_seed(1))
    assert (gen.hits, gen.misses) == (0, 3)
    b = gen(x, generator=torch.Generator().manual_seed(1))
    assert (gen.hits, gen.misses) == (3, 3)
    assert torch.equal(a, b)
    assert len(list((tmp_path / "c").rglob("*.png"))) == 3
    # A fresh generator without the cache computes the same views; another seed gives other views.
    fresh = GenViewGenerator(tiny_pipe, noise_levels=(0.3, 0.7), num_inference_steps=2)
    assert torch.equal(fresh(x, generator=torch.Generator().manual_seed(1)), a)
    assert not torch.equal(fresh(x, generator=torch.Generator().manual_seed(2)), a)
    # An image's view does not depend on its batch.
    assert torch.equal(fresh(x[1:], seeds=gen.generate(x, generator=torch.Generator().manual_seed(1)).seeds[1:]),
                       a[1:])


class FakeUnCLIPImg2ImgPipeline:
    """Records the calls a diffusers unCLIP image-variation pipeline would get."""

    def __init__(self):
        self.calls = []

    def __call__(self, prompt, image, noise_level, generator, num_inference_steps, guidance_scale, output_type):
        self.calls.append((noise_level, len(image)))
        assert image.min() >= 0 and len(generator) == len(image) == len(prompt)
        return type("Out", (), {"images": image * 0 + noise_level / 1000})()


def test_unclip_pipelines_get_the_embedding_noise_level_grouped_by_level():
    pipe = FakeUnCLIPImg2ImgPipeline()
    gen = GenViewGenerator(pipe)  # GenView's default levels 0..400 and guidance 10
    assert gen.guidance_scale == 10.0
    out = gen.generate(squares([4, 8, 12, 13], size=16), generator=torch.Generator().manual_seed(0))
    # proportions .0625, .25, .5625, .66 -> bins 0, 1, 2, 3
    assert out.noise_levels == [0, 100, 200, 300]
    assert sorted(pipe.calls) == [(0, 1), (100, 1), (200, 1), (300, 1)]
    assert out.views[:, 0, 0, 0].tolist() == pytest.approx([-1.0, -0.8, -0.6, -0.4], abs=0.01)


# ----------------------------------------------------------------------------------------------- losses
E = math.e


def test_quality_driven_loss_equals_the_hand_computed_value():
    z = torch.eye(4)  # two identical views per sample, orthogonal to every other sample
    loss = QualityDrivenContrastiveLoss(temperature=1.0)
    # Each of the 8 anchors: positive similarity 1, six negatives at 0 -> -log(e / (e + 6)).
    expected = math.log(1 + 6 / E)
    assert loss(z, z).item() == pytest.approx(expected, rel=1e-5)
    same = torch.zeros(4)
    assert loss(z, z, same, same).item() == pytest.approx(expected, rel=1e-5)


def test_quality_driven_loss_matches_a_written_out_weighted_ntxent():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    fg, bg = torch.tensor([0.9, 0.5, 0.2, 0.7]), torch.tensor([0.1, 0.4, 0.6, 0.3])
    tau, tq = 0.5, 0.25
    got = QualityDrivenContrastiveLoss(temperature=tau, quality_temperature=tq)(z1, z2, fg, bg).item()

    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1).tolist()
    q = [(f - b) / tq for f, b in zip(fg.tolist(), bg.tolist(), strict=True)]
    w = [4 * math.exp(v) / sum(math.exp(u) for u in q) for v in q]
    total = 0.0
    for a in range(8):
        p = (a + 4) % 8
        sim = [sum(x * y for x, y in zip(z[a], z[j], strict=True)) / tau for j in range(8)]
        denom = math.exp(sim[p]) + sum(math.exp(sim[j]) for j in range(8) if j % 4 != a % 4)
        total += w[a % 4] * -math.log(math.exp(sim[p]) / denom)
    assert got == pytest.approx(total / 8, rel=1e-5)


def test_higher_background_similarity_lowers_the_pair_weight():
    loss = QualityDrivenContrastiveLoss(quality_temperature=1.0)
    fg = torch.tensor([0.8, 0.8, 0.8, 0.8])
    w = loss.pair_weights(fg, torch.tensor([0.0, 0.2, 0.4, 0.6]))
    assert w.sum().item() == pytest.approx(4.0)
    assert w[0] > w[1] > w[2] > w[3]
    # Hand value: q = fg - bg = [.8, .6, .4, .2]; w_0 = 4 e^.8 / (e^.8 + e^.6 + e^.4 + e^.2).
    assert w[0].item() == pytest.approx(4 * E**0.8 / (E**0.8 + E**0.6 + E**0.4 + E**0.2), rel=1e-6)
    # Higher foreground similarity raises it.
    w2 = loss.pair_weights(torch.tensor([0.9, 0.8, 0.8, 0.8]), torch.zeros(4))
    assert w2[0] > w2[1]


def test_multilevel_loss_equals_the_hand_computed_value():
    e = torch.eye(4)
    loss = MultilevelContrastiveLoss(temperature=1.0, semantic_weight=0.5, appearance_weight=2.0)
    got = loss(e, e, [e, e], [e, e]).item()
    # Semantic: each image against 4 texts (one positive at 1, three at 0), and back: log(1 + 3/e).
    # Appearance, at each scale: 8 views, one positive, six negatives: log(1 + 6/e).
    expected = 0.5 * math.log(1 + 3 / E) + 2.0 * math.log(1 + 6 / E)
    assert got == pytest.approx(expected, rel=1e-5)
    assert loss.terms["semantic"] == pytest.approx(math.log(1 + 3 / E), rel=1e-5)


def test_multilevel_loss_treats_same_subject_samples_as_positives():
    g = torch.Generator().manual_seed(3)
    img, txt = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    subjects = torch.tensor([0, 0, 1, 1])
    tau = 0.5
    loss = MultilevelContrastiveLoss(temperature=tau, appearance_weight=0.0)
    got = loss(img, txt, [img], [img], subjects).item()

    a = torch.nn.functional.normalize(img, dim=1)
    b = torch.nn.functional.normalize(txt, dim=1)

    def one_way(x, y):
        s = (x @ y.T / tau).exp()
        terms = [-math.log(s[i, j] / (s[i, j] + s[i][subjects != subjects[i]].sum()))
                 for i in range(4) for j in range(4) if subjects[i] == subjects[j]]
        return sum(terms) / len(terms)

    assert got == pytest.approx((one_way(a, b) + one_way(b, a)) / 2, rel=1e-5)


def test_multilevel_terms_equal_pml_ntxent():
    from pytorch_metric_learning.losses import NTXentLoss

    g = torch.Generator().manual_seed(4)
    subjects = torch.tensor([0, 0, 1, 2, 2, 2])  # repeated subjects: several positives per anchor
    f1, f2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    pml = NTXentLoss(temperature=0.3)
    loss = MultilevelContrastiveLoss(temperature=0.3, semantic_weight=0)
    assert loss.appearance([f1], [f2], subjects).item() == pytest.approx(
        pml(torch.cat([f1, f2]), subjects.repeat(2)).item(), rel=1e-5)
    # The cross-modal term: anchors against the other modality only (PML's ref_emb; a copy of the labels, or
    # PML takes the two sets for the same objects and drops each image's own text).
    other = subjects.clone()
    expected = (pml(f1, subjects, ref_emb=f2, ref_labels=other) + pml(f2, subjects, ref_emb=f1, ref_labels=other)) / 2
    assert loss.semantic(f1, f2, subjects).item() == pytest.approx(expected.item(), rel=1e-5)


def test_losses_by_name_and_their_errors():
    assert isinstance(build_view_loss("quality_driven", temperature=0.3), QualityDrivenContrastiveLoss)
    assert isinstance(build_view_loss("multilevel", semantic_weight=0.0), MultilevelContrastiveLoss)
    with pytest.raises(InvgenConfigError, match="did you mean 'multilevel'"):
        build_view_loss("multilevl")
    with pytest.raises(InvgenConfigError, match="bad settings for 'quality_driven'"):
        build_view_loss("quality_driven", tau=1)
    with pytest.raises(InvgenDataError, match="two \\(B, D\\) tensors"):
        QualityDrivenContrastiveLoss()(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(InvgenDataError, match="needs image_feats and text_feats"):
        MultilevelContrastiveLoss()(None, None, [torch.zeros(4, 3)], [torch.zeros(4, 3)])


def test_pair_similarities_see_foreground_and_background_apart():
    x = squares([8, 8])
    y = x.clone()
    y[1, 0, :3] = 1.0  # change the second pair's background color only
    masks = SaliencyForeground()(x)
    fg, bg = pair_similarities(x, y, masks, masks)
    assert fg.tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    assert bg[0].item() == pytest.approx(1.0, abs=1e-5) and bg[1] < 0.99


# ----------------------------------------------------------------------------------------------- CLI
def test_cli_writes_the_views_as_an_imagefolder_with_noise_levels(tiny_pipe, tmp_path):
    from invgen.cli import main
    from invgen.data.imagefolder import ImageRecord, read_imagefolder, write_imagefolder
    from invgen.models.loading import save_pipeline

    imgs = ((squares([4, 12]) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    src = write_imagefolder(tmp_path / "src", list(imgs), [
        ImageRecord("a.png", "a photo of the digit 3", 3, {"color": "red"}),
        ImageRecord("b.png", "a photo of the digit 5", 5, {"color": "red"}),
    ])
    model = save_pipeline(tiny_pipe, tmp_path / "pipe")
    out = tmp_path / "views"
    argv = ["views", "genview", "--images", str(src), "--out", str(out), "--model", str(model),
            "--noise-levels", "0.2:0.6", "--steps", "4", "--seed", "3"]
    assert main(argv) == 0
    views = read_imagefolder(out)
    assert [r.file_name for r in views.records] == ["a.png", "b.png"]
    assert [r.label for r in views.records] == [3, 5]
    meta = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert [m["foreground_proportion"] for m in meta] == pytest.approx([16 / 256, 144 / 256])
    assert [m["noise_level"] for m in meta] == pytest.approx([0.2 + 0.4 * 16 / 256, 0.2 + 0.4 * 144 / 256])
    assert meta[0]["color"] == "red" and "attributes" not in meta[0]  # a top-level column, as `datasets` writes it


def test_cli_errors_are_one_sentence(tmp_path, capsys):
    from invgen.cli import main

    rc = main(["views", "genview", "--images", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "error:" in capsys.readouterr().err
    rc = main(["views", "genview", "--images", str(tmp_path), "--out", str(tmp_path / "o"),
               "--noise-levels", "x"])
    assert rc == 2


def test_quality_driven_loss_with_equal_weights_is_pml_ntxent():
    from pytorch_metric_learning.losses import NTXentLoss

    g = torch.Generator().manual_seed(5)
    z1, z2 = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    expected = NTXentLoss(temperature=0.3)(torch.cat([z1, z2]), torch.arange(6).repeat(2))
    got = QualityDrivenContrastiveLoss(temperature=0.3)(z1, z2, torch.full((6,), 0.4), torch.full((6,), 0.1))
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


# ----------------------------------------------------------------------------------------------- SSL trainer
def test_ssl_trainer_lowers_the_quality_driven_loss_and_probes(digits_dir, tmp_path):
    from invgen.data.imagefolder import read_imagefolder
    from invgen.views.train import SSLConfig, linear_probe, train_ssl

    data = read_imagefolder(digits_dir / "train")
    x, y = data.tensor()[:96], torch.as_tensor(data.labels[:96])
    generated = x.flip(1)[:, None]  # a stand-in view per image: channels swapped (another color)
    cfg = SSLConfig(output_dir=str(tmp_path / "ssl"), views="genview", loss="quality_driven")
    cfg.train.steps, cfg.train.batch_size, cfg.train.warmup_steps, cfg.train.log_every = 30, 32, 0, 5
    model = train_ssl(cfg, x, generated)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "ssl" / "train_log.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0]
    acc, correct = linear_probe(model.encoder, x, y, x, y, steps=100)
    assert correct.shape == (96,) and acc > 0.3  # 10 classes: chance is 0.1
    with pytest.raises(InvgenDataError, match="views=genview needs generated views"):
        train_ssl(cfg, x, None)
    cfg.loss = "triplet"
    with pytest.raises(InvgenConfigError, match="^loss: must be ntxent, quality_driven or multilevel, got 'triplet'"):
        train_ssl(cfg, x, generated)


def test_genview_pair_puts_the_generated_view_on_a_random_side():
    from invgen.views.train import genview_pair

    images, generated = torch.zeros(400, 3, 4, 4), torch.ones(400, 3, 4, 4)
    a, b = genview_pair(images, generated, torch.Generator().manual_seed(0))
    first = a[:, 0, 0, 0] == 1
    assert torch.equal(a + b, torch.ones_like(a))  # every pair holds the image and its generated view once
    assert 160 < int(first.sum()) < 240  # about half the generated views on each side (binomial sd 10)
    a2, _ = genview_pair(images, generated, torch.Generator().manual_seed(0))
    assert torch.equal(a, a2)


def test_multilevel_ssl_loss_is_ntxent_averaged_over_the_encoders_scales(digits_dir, tmp_path):
    from invgen.data.imagefolder import read_imagefolder
    from invgen.models.encoders import build_encoder
    from invgen.views.train import SSLConfig, SSLModel, train_ssl

    torch.manual_seed(0)
    model = SSLModel(build_encoder("small_resnet"), 8, multiscale=True)
    assert len(model.scale_heads) == 2  # stages of 16 and 32 channels; the 64-channel one uses the main head
    x = squares([4, 6, 8, 10, 12, 14])
    s1, s2 = model(x, scales=True), model(x.flip(1), scales=True)
    assert [f.shape for f in s1] == [(6, 8)] * 3 and torch.equal(s1[-1], model(x))
    ntxent = QualityDrivenContrastiveLoss(temperature=0.2)
    expected = sum(ntxent(a, b) for a, b in zip(s1, s2, strict=True)) / 3
    got = MultilevelContrastiveLoss(temperature=0.2, semantic_weight=0)(None, None, s1, s2)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert got.item() != pytest.approx(ntxent(s1[-1], s2[-1]).item(), rel=1e-3)  # not NT-Xent on the last scale

    data = read_imagefolder(digits_dir / "train")
    x = data.tensor()[:96]
    logs = {}
    for loss in ("ntxent", "multilevel"):
        cfg = SSLConfig(output_dir=str(tmp_path / loss), loss=loss)
        cfg.train.steps, cfg.train.batch_size, cfg.train.warmup_steps, cfg.train.log_every = 30, 32, 0, 5
        train_ssl(cfg, x)
        lines = (tmp_path / loss / "train_log.jsonl").read_text().splitlines()
        logs[loss] = [json.loads(line)["loss"] for line in lines]
    assert logs["multilevel"][-1] < logs["multilevel"][0]
    assert logs["multilevel"][0] != pytest.approx(logs["ntxent"][0], rel=1e-3)
