"""`tiny_pipeline`: a stock diffusers pipeline of each denoiser family, built offline with random weights."""

import diffusers
import numpy as np
import pytest
import torch

from invgen.errors import InvgenModelError
from invgen.models import tiny_pipeline
from invgen.models.denoisers import denoiser_of, pipeline_family
from invgen.models.loading import load_pipeline, save_pipeline

KINDS = ("sd", "sdxl", "sd3", "flux")
STOCK = {
    "sd": diffusers.StableDiffusionPipeline,
    "sdxl": diffusers.StableDiffusionXLPipeline,
    "sd3": diffusers.StableDiffusion3Pipeline,
    "flux": diffusers.FluxPipeline,
}
# (prompt_embeds shape, pooled shape) each family's encode_prompt gives for one prompt: SD3 joins 77 CLIP and
# 256 T5 tokens, Flux uses 512 T5 tokens; widths are the tiny encoders' (see invgen/models/tiny.py).
EMBEDS = {
    "sd": ((1, 77, 32), None),
    "sdxl": ((1, 77, 64), (1, 32)),
    "sd3": ((1, 333, 64), (1, 64)),
    "flux": ((1, 512, 32), (1, 32)),
}


@pytest.fixture(scope="module")
def pipes():
    return {kind: tiny_pipeline(kind, seed=0) for kind in KINDS}


def generate(pipe, prompt, seed=0, **kwargs):
    # 16 px everywhere: Flux's own default is 128 latent pixels whatever the VAE.
    return pipe(prompt, num_inference_steps=2, height=16, width=16, generator=torch.Generator().manual_seed(seed),
                output_type="np", **kwargs).images


def encode(pipe, kind, prompt):
    if kind == "sd":
        embeds, _ = pipe.encode_prompt(prompt, "cpu", 1, False)
        return embeds, None
    if kind == "flux":
        embeds, pooled, text_ids = pipe.encode_prompt(prompt=prompt, prompt_2=None)
        assert text_ids.shape == (embeds.shape[1], 3)
        return embeds, pooled
    if kind == "sdxl":
        embeds, _, pooled, _ = pipe.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=False)
        return embeds, pooled
    embeds, _, pooled, _ = pipe.encode_prompt(prompt, None, None, device="cpu", do_classifier_free_guidance=False)
    return embeds, pooled


def weights(pipe):
    return {f"{name}.{k}": v for name, module in pipe.components.items() if isinstance(module, torch.nn.Module)
            for k, v in module.state_dict().items()}


@pytest.mark.parametrize("kind", KINDS)
def test_stock_class_and_family(pipes, kind):
    pipe = pipes[kind]
    assert type(pipe) is STOCK[kind]
    assert pipeline_family(pipe) == kind
    # Every network is tiny apart from the CLIP token embeddings, which the real CLIP tokenizer's 49408 ids need.
    denoiser = denoiser_of(pipe)
    assert sum(p.numel() for p in denoiser.parameters()) < 1_000_000


@pytest.mark.parametrize("kind", KINDS)
def test_generation_is_deterministic_and_follows_the_prompt(pipes, kind):
    pipe = pipes[kind]
    a = generate(pipe, "a photo of a doctor")
    assert a.shape == (1, 16, 16, 3) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, generate(pipe, "a photo of a doctor"))
    assert np.abs(a - generate(pipe, "a photo of a nurse")).max() > 1e-4


@pytest.mark.parametrize("kind", KINDS)
def test_encode_prompt(pipes, kind):
    embeds, pooled = encode(pipes[kind], kind, "a photo of a doctor")
    shape, pooled_shape = EMBEDS[kind]
    assert tuple(embeds.shape) == shape and torch.isfinite(embeds).all()
    assert (pooled is None) == (pooled_shape is None)
    if pooled is not None:
        assert tuple(pooled.shape) == pooled_shape
    other, _ = encode(pipes[kind], kind, "a photo of a nurse")
    assert not torch.equal(embeds, other)


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_gives_the_same_images(pipes, kind, tmp_path):
    pipe = pipes[kind]
    save_pipeline(pipe, tmp_path / kind)
    loaded = load_pipeline(tmp_path / kind)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded) is STOCK[kind]
    # The tokenizers come back from their own files: same classes, same ids (the T5 one included).
    prompt = "Two cats, a dog & 3 birds!"
    for name in ("tokenizer", "tokenizer_2", "tokenizer_3"):
        if getattr(pipe, name, None) is not None:
            assert type(getattr(loaded, name)) is type(getattr(pipe, name))
            assert getattr(loaded, name)(prompt).input_ids == getattr(pipe, name)(prompt).input_ids
    # Same weights, same images up to float round-off: a loaded model's tensors may sit at other addresses, and
    # the CPU kernels then sum in another order (Flux differed by 7e-7 in one CI run). A wrong weight moves
    # pixels by far more than 1e-5.
    np.testing.assert_allclose(generate(pipe, "a photo of a doctor"), generate(loaded, "a photo of a doctor"),
                               rtol=0, atol=1e-5)


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = (weights(tiny_pipeline("sd3", seed=s)) for s in (7, 7, 8))
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for part in ("transformer.", "text_encoder.", "text_encoder_2.", "text_encoder_3.", "vae."):
        assert any(not torch.equal(a[k], c[k]) for k in a if k.startswith(part)), part
    # The two CLIP encoders are drawn from different seeds, not copies of each other.
    key = "text_model.embeddings.token_embedding.weight"
    assert not torch.equal(a[f"text_encoder.{key}"], a[f"text_encoder_2.{key}"])


def test_building_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    tiny_pipeline("flux", seed=0)
    np.testing.assert_array_equal(torch.rand(4).numpy(), expected.numpy())


def test_flux_takes_guidance_as_an_input(pipes):
    pipe = pipes["flux"]
    assert pipe.transformer.config.guidance_embeds
    low = generate(pipe, "a photo of a doctor", guidance_scale=1.0)
    assert np.abs(low - generate(pipe, "a photo of a doctor", guidance_scale=5.0)).max() > 1e-4


def test_sdxl_unet_takes_text_time_conditioning(pipes):
    unet = pipes["sdxl"].unet
    cfg = unet.config
    assert cfg.addition_embed_type == "text_time"
    # Six micro-conditioning ids plus the second encoder's pooled projection, as the pipeline builds them.
    projection = pipes["sdxl"].text_encoder_2.config.projection_dim
    assert unet.add_embedding.linear_1.in_features == 6 * cfg.addition_time_embed_dim + projection


def test_unknown_kind_names_the_kinds():
    with pytest.raises(InvgenModelError) as err:
        tiny_pipeline("kandinsky")
    assert str(err.value) == "unknown tiny pipeline kind 'kandinsky' (expected one of: sd, sdxl, sd3, flux)"
