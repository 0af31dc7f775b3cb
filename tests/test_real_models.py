"""The real-model path (Stable Diffusion in latent space), run end to end on a tiny saved StableDiffusionPipeline."""

import json

import numpy as np
import pytest
import torch
from helpers import tiny_open_clip
from PIL import Image

from invgen.config import load_config
from invgen.data.imagefolder import ImageRecord, read_imagefolder, write_imagefolder
from invgen.errors import InvgenConfigError, InvgenDataError
from invgen.invdiff.config import InvDiffConfig
from invgen.invdiff.train import infer_groups, train_invdiff
from invgen.train.base import BaseConfig, train_base
from invgen.train.data import DataConfig, encode_image_set

RECIPES = [f"configs/sd15/invdiff_{name}.yaml" for name in ("waterbirds", "celeba", "fairface")]


@pytest.fixture(scope="module")
def tiny_sd_dir(tmp_path_factory):
    from diffusers import StableDiffusionPipeline

    from invgen.models import tiny_stable_diffusion_components
    from invgen.models.loading import save_pipeline

    return save_pipeline(StableDiffusionPipeline(**tiny_stable_diffusion_components(seed=0)),
                         tmp_path_factory.mktemp("tiny-sd") / "pipe")


@pytest.fixture(scope="module")
def birds_dir(tmp_path_factory):
    """A tiny Waterbirds-like set: bird blob on a blue (water) or green (land) background, 24x20 px (not square)."""
    rng = np.random.default_rng(0)
    images, records = [], []
    for i in range(48):
        bird = "waterbird" if i % 2 else "landbird"
        aligned = i % 8 != 0  # 1 in 8 on the other background
        water = (bird == "waterbird") == aligned
        img = np.zeros((20, 24, 3), np.uint8)
        img[:] = (40, 90, 200) if water else (60, 160, 50)
        y, x = rng.integers(4, 12), rng.integers(4, 16)
        img[y : y + 6, x : x + 6] = (230, 230, 230) if bird == "waterbird" else (150, 90, 40)
        records.append(ImageRecord(f"{i:03d}.png", f"a photo of a {bird}",
                                   attributes={"background": "water" if water else "land", "bias_aligned": aligned}))
        images.append(img)
    root = tmp_path_factory.mktemp("birds")
    write_imagefolder(root / "train", images, records)
    return root


def _overrides(tmp, sd_dir, birds, steps=20):
    return [
        f"base_model={sd_dir}", f"output_dir={tmp / 'invdiff'}", f"data.root={birds}", "data.size=16",
        f"data.latent_cache={tmp / 'cache'}", "data.encode_batch_size=8", "groups.batch_size=16",
        f"train.steps={steps}", "train.batch_size=8", "train.learning_rate=0.01", "train.warmup_steps=0",
        "train.mixed_precision='no'", "train.checkpoint_every=1000",
        "groups.num_groups=2", "groups.noise_draws=1", "groups.timesteps=[500]",
        "evaluation.per_prompt=2", "evaluation.num_inference_steps=2", "evaluation.resolution=16",
        "evaluation.batch_size=8", "evaluation.guidance_scale=1.0",
    ]


def test_recipes_load_with_the_published_hyperparameters():
    for path in RECIPES:
        cfg = load_config(InvDiffConfig, path)
        assert cfg.data.size == 512 and cfg.train.batch_size == 64 and cfg.train.learning_rate == 1e-4
        assert cfg.train.steps == 10_000 and cfg.train.warmup_steps == 1000 and cfg.objective.lam == 1.0
        assert cfg.groups.num_groups == 8 and cfg.groups.assignment == "soft"
        assert cfg.train.mixed_precision == "fp16" and cfg.train.gradient_checkpointing
        assert cfg.evaluation.classifier.startswith("clip:") and len(cfg.evaluation.attribute_prompts) >= 2
        base = path.replace("invdiff_", "base_")
        assert load_config(BaseConfig, base).pretrained
    with pytest.raises(InvgenConfigError, match=r"evaluation.attribute_prompts: a clip classifier needs at least two"):
        load_config(InvDiffConfig, RECIPES[0], ["evaluation.attribute_prompts={}"])


def test_latents_follow_the_vae_and_are_cached(tmp_path, tiny_sd_dir, birds_dir, monkeypatch):
    from invgen.models.loading import load_pipeline

    pipe = load_pipeline(tiny_sd_dir)
    data = DataConfig(root=str(birds_dir), builder=None, size=16, latents="mean", latent_cache=str(tmp_path / "c"))
    first = encode_image_set(birds_dir / "train", pipe.tokenizer, pipe.text_encoder, vae=pipe.vae, data=data)
    assert first.space == "latent" and not first.from_cache and first.cache_file.is_file()
    assert first.x0.shape == (48, 4, 8, 8)
    assert first.prompts == ["a photo of a landbird", "a photo of a waterbird"]
    # The latents are the VAE's posterior mean times its scaling factor, on the resized, center-cropped image.
    # 24x20 -> shorter side 16 (19x16, bicubic) -> central 16x16.
    im = Image.open(birds_dir / "train" / "000.png").resize((19, 16), Image.BICUBIC).crop((1, 0, 17, 16))
    x = torch.from_numpy(np.array(im)).permute(2, 0, 1)[None].float().div(127.5).sub(1)
    with torch.no_grad():
        want = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
    torch.testing.assert_close(first.x0[:1], want, atol=1e-5, rtol=1e-4)

    # Second run: read from the cache, without touching the VAE.
    def boom(*a, **k):
        raise AssertionError("the VAE was called although the latents are cached")

    monkeypatch.setattr(pipe.vae, "encode", boom)
    second = encode_image_set(birds_dir / "train", pipe.tokenizer, pipe.text_encoder, vae=pipe.vae, data=data)
    assert second.from_cache and second.cache_file == first.cache_file
    assert torch.equal(second.x0, first.x0)
    monkeypatch.undo()

    # Another resolution or encoding mode is another key; sampled latents are seeded per image.
    sampled = DataConfig(**{**data.__dict__, "latents": "sample"})
    a = encode_image_set(birds_dir / "train", pipe.tokenizer, pipe.text_encoder, vae=pipe.vae, data=sampled)
    assert not a.from_cache and a.cache_file != first.cache_file and not torch.equal(a.x0, first.x0)
    sampled.latent_cache, sampled.encode_batch_size = None, 5
    b = encode_image_set(birds_dir / "train", pipe.tokenizer, pipe.text_encoder, vae=pipe.vae, data=sampled)
    torch.testing.assert_close(a.x0, b.x0)  # the batch size does not change the draws


def test_missing_model_folder_and_missing_captions_are_one_sentence(tmp_path, tiny_sd_dir, birds_dir):
    cfg = load_config(InvDiffConfig, RECIPES[0], _overrides(tmp_path, tmp_path / "no-model", birds_dir))
    with pytest.raises(InvgenConfigError, match=r"^base_model: no trained pipeline at .*no-model"):
        infer_groups(cfg)
    base = load_config(BaseConfig, "configs/sd15/base_waterbirds.yaml",
                       [f"pretrained={tmp_path / 'no-model'}", f"output_dir={tmp_path / 'b'}"])
    with pytest.raises(InvgenConfigError, match=r"^pretrained: no trained pipeline at .*no-model"):
        train_base(base)

    bad = tmp_path / "bad"
    (bad / "train").mkdir(parents=True)
    lines = (birds_dir / "train" / "metadata.jsonl").read_text().splitlines()
    rec = json.loads(lines[2])
    del rec["prompt"]
    lines[2] = json.dumps(rec)
    (bad / "train" / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    for p in (birds_dir / "train").glob("*.png"):
        (bad / "train" / p.name).write_bytes(p.read_bytes())
    cfg = load_config(InvDiffConfig, RECIPES[0], _overrides(tmp_path, tiny_sd_dir, bad))
    with pytest.raises(InvgenDataError, match=r"metadata.jsonl:3: missing 'prompt' \(a string\) for 002.png"):
        infer_groups(cfg)


def test_gradient_checkpointing_trains_the_lora_of_a_frozen_latent_unet(tiny_sd_dir):
    from invgen.invdiff.adapter import AdapterConfig
    from invgen.invdiff.guidance import InvariantGuidance
    from invgen.models.loading import load_frozen_pipeline

    pipe = load_frozen_pipeline(tiny_sd_dir, "base_model")
    grads = []
    for checkpointing in (False, True):
        unet = load_frozen_pipeline(tiny_sd_dir, "base_model").unet if checkpointing else pipe.unet
        if checkpointing:
            unet.enable_gradient_checkpointing()
        torch.manual_seed(0)  # the LoRA's A matrices are drawn at injection
        model, params = InvariantGuidance.for_denoiser(unet, AdapterConfig(rank=2)).training_module(unet)
        for p in params:  # B starts at zero; make it non-zero so A gets a gradient too
            p.data.add_(0.01 * torch.randn_like(p))
        model.train()
        g = torch.Generator().manual_seed(0)
        x, c = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 32, generator=g)
        model(x, torch.tensor([10, 700]), encoder_hidden_states=c).sample.pow(2).mean().backward()
        assert all(not p.requires_grad for n, p in unet.named_parameters() if "lora_" not in n)
        grads.append(torch.cat([p.grad.flatten() for p in params]))
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-4)


def _groups_adapter_sampling_metrics(tmp_path, base_dir, birds_dir, steps):
    """The sd15 recipe's three stages on `base_dir`; checks each stage's outputs, returns the output folder."""
    from invgen.invdiff.evaluate import evaluate_invdiff

    clip = tiny_open_clip(tmp_path / "clip" / "model")
    cfg = load_config(InvDiffConfig, RECIPES[0], _overrides(tmp_path, base_dir, birds_dir, steps=steps)
                      + [f"evaluation.classifier=clip:{clip}"])
    out = infer_groups(cfg)
    groups = json.loads((out / "groups.json").read_text())
    assert groups["n"] == 48 and len(groups["group_sizes"]) == 2 and "loss_auc" in groups

    train_invdiff(cfg)
    assert (out / "invgen_guidance.json").is_file() and (out / "pytorch_lora_weights.safetensors").is_file()
    log = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log and all(np.isfinite(log))

    evaluate_invdiff(cfg)
    base_set = read_imagefolder(out / "samples" / "base")
    guided = read_imagefolder(out / "samples" / "invdiff")
    n = 2 * cfg.evaluation.per_prompt
    assert base_set.images.shape == guided.images.shape == (n, 16, 16, 3)
    assert [r.prompt for r in guided.records] == [r.prompt for r in base_set.records]
    summary = json.loads((out / "evaluation.json").read_text())
    assert set(summary["bias_score"]) == {"base", "invdiff"} and summary["images_per_set"] == n
    assert summary["mean_abs_pixel_change"] == pytest.approx(
        np.abs(base_set.images.astype(int) - guided.images.astype(int)).mean())
    report = json.loads((out / "reports" / "invdiff.json").read_text())
    assert report["attribute"] == "background" and report["values"] == ["water", "land"]
    assert report["n_images"] == n and (out / "reports" / "comparison.md").is_file()
    return summary


def test_sd15_recipe_on_a_tiny_stable_diffusion_fast(tmp_path, tiny_sd_dir, birds_dir):
    # The saved SD itself as the base model, a few steps: every stage runs and the adapter acts.
    summary = _groups_adapter_sampling_metrics(tmp_path, tiny_sd_dir, birds_dir, steps=4)
    assert summary["mean_abs_pixel_change"] > 0


@pytest.mark.slow
def test_sd15_recipe_end_to_end_on_a_tiny_stable_diffusion(tmp_path, tiny_sd_dir, birds_dir):
    # Base: fine-tune the saved SD's UNet in latent space (the official recipe starts from such a model).
    base = load_config(BaseConfig, "configs/sd15/base_waterbirds.yaml", [
        f"pretrained={tiny_sd_dir}", f"output_dir={tmp_path / 'base'}", f"data.root={birds_dir}", "data.size=16",
        f"data.latent_cache={tmp_path / 'cache'}", "train.steps=30", "train.batch_size=8",
        "train.learning_rate=0.002", "train.warmup_steps=0", "train.mixed_precision='no'",
        "train.checkpoint_every=1000",
    ])
    base_dir = train_base(base)
    losses = [json.loads(line)["loss"] for line in (base_dir / "train_log.jsonl").read_text().splitlines()]
    assert (base_dir / "model_index.json").is_file() and (base_dir / "vae").is_dir()
    assert losses[-1] < losses[0]
    summary = _groups_adapter_sampling_metrics(tmp_path, base_dir, birds_dir, steps=30)
    assert summary["mean_abs_pixel_change"] > 0.5
