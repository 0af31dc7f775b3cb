"""Tiny diffusers components built from configs, as diffusers' own tests build them.

They make the whole library runnable offline: a text encoder initialised at random from a fixed seed
(frozen, so prompts still map to distinct, stable embeddings), small UNets and a small VAE.

`tiny_pipeline(kind)` assembles a stock diffusers pipeline of each denoiser family invgen supports (see
invgen/models/denoisers.py) from such parts, so family-specific code can be tested without any checkpoint.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel

from invgen.errors import InvgenModelError
from invgen.models.tokenizer import build_clip_tokenizer, build_t5_tokenizer


@dataclass
class TinyUNetConfig:
    """The embedded model: a pixel-space text-conditioned UNet (about 1.4M parameters)."""

    sample_size: int = 16
    channels: int = 3
    block_out_channels: tuple[int, ...] = (32, 48, 64)
    layers_per_block: int = 1
    cross_attention_dim: int = 32
    attention_head_dim: int = 8
    norm_num_groups: int = 8


def tiny_unet(cfg: TinyUNetConfig | None = None, seed: int = 0) -> UNet2DConditionModel:
    cfg = cfg or TinyUNetConfig()
    n = len(cfg.block_out_channels)
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=cfg.sample_size,
        in_channels=cfg.channels,
        out_channels=cfg.channels,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        cross_attention_dim=cfg.cross_attention_dim,
        attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=cfg.norm_num_groups,
        # A pooled text embedding added to the time embedding gives every block the prompt, which a
        # tiny UNet needs to learn the class quickly; stock pipelines are unaffected (it is internal).
        addition_embed_type="text",
        addition_embed_type_num_heads=2,
    )


def tiny_latent_unet(cross_attention_dim: int = 32, seed: int = 0) -> UNet2DConditionModel:
    """A UNet shaped like Stable Diffusion's (4 latent channels), tiny."""
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
    )


def tiny_text_encoder(hidden_size: int = 32, seed: int = 0) -> CLIPTextModel:
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    model = CLIPTextModel(config)
    model.requires_grad_(False)
    return model.eval()


def tiny_stable_diffusion_components(seed: int = 0) -> dict:
    """Everything `StableDiffusionPipeline(**components)` needs, tiny and offline."""
    from diffusers import DDIMScheduler

    return {
        "unet": tiny_latent_unet(seed=seed),
        "vae": tiny_vae(seed=seed),
        "text_encoder": tiny_text_encoder(seed=seed),
        "tokenizer": build_clip_tokenizer(),
        "scheduler": DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear",
                                   beta_start=0.00085, beta_end=0.012, clip_sample=False,
                                   steps_offset=1, set_alpha_to_one=False),
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
        "requires_safety_checker": False,
    }


# ---- the four denoiser families as stock pipelines -------------------------------------------------------------
#
# Shapes are the real architectures' wiring at toy widths. CLIP encoders keep CLIP's full vocabulary because they
# are fed the real CLIP tokenizer; everything else has tens to hundreds of thousands of parameters.

_CLIP_WIDTH = 32  # hidden size and projection size of every tiny CLIP encoder below
_T5_WIDTH = 32


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Draw a module's initial weights from `seed` without moving the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def tiny_projected_text_encoder(hidden_size: int = _CLIP_WIDTH, projection_dim: int = _CLIP_WIDTH,
                                seed: int = 0) -> CLIPTextModelWithProjection:
    """A frozen `CLIPTextModelWithProjection`: SDXL's second and SD3's two CLIP encoders."""
    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=hidden_size, intermediate_size=2 * hidden_size, projection_dim=projection_dim,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )
    with _seeded(seed):
        model = CLIPTextModelWithProjection(config)
    model.requires_grad_(False)
    return model.eval()


def tiny_t5_encoder(vocab_size: int, d_model: int = _T5_WIDTH, seed: int = 0) -> T5EncoderModel:
    """A frozen `T5EncoderModel` (SD3's and Flux's long-prompt encoder), two layers wide `d_model`."""
    from transformers import T5Config

    config = T5Config(
        vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, dropout_rate=0.0, feed_forward_proj="gated-gelu",
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    with _seeded(seed):
        model = T5EncoderModel(config)
    model.requires_grad_(False)
    return model.eval()


def tiny_flow_vae(latent_channels: int = 4, seed: int = 0) -> AutoencoderKL:
    """The SD3/Flux VAE layout: no quant convs, latents shifted as well as scaled."""
    with _seeded(seed):
        return AutoencoderKL(
            in_channels=3, out_channels=3, block_out_channels=(16, 32),
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            latent_channels=latent_channels, norm_num_groups=8, sample_size=16,
            use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035,
        )


def tiny_sdxl_components(seed: int = 0) -> dict[str, Any]:
    """Everything `StableDiffusionXLPipeline(**components)` needs, tiny and offline.

    The UNet conditions on both CLIP encoders' penultimate states (concatenated: `cross_attention_dim`) and on
    SDXL's "text_time" embedding: the second encoder's pooled projection plus six micro-conditioning ids of
    `addition_time_embed_dim` each.
    """
    from diffusers import EulerDiscreteScheduler

    time_dim = 8
    with _seeded(seed):
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4), use_linear_projection=True, transformer_layers_per_block=(1, 2),
            cross_attention_dim=2 * _CLIP_WIDTH, norm_num_groups=8,
            addition_embed_type="text_time", addition_time_embed_dim=time_dim,
            projection_class_embeddings_input_dim=6 * time_dim + _CLIP_WIDTH,
        )
    return {
        "unet": unet,
        "vae": tiny_vae(seed=seed),
        "text_encoder": tiny_text_encoder(hidden_size=_CLIP_WIDTH, seed=seed),
        "tokenizer": build_clip_tokenizer(),
        "text_encoder_2": tiny_projected_text_encoder(seed=seed + 1),
        "tokenizer_2": build_clip_tokenizer(),
        "scheduler": EulerDiscreteScheduler(
            num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
            steps_offset=1, timestep_spacing="leading",
        ),
        "image_encoder": None,
        "feature_extractor": None,
        "force_zeros_for_empty_prompt": True,
        # The watermark would need the optional invisible-watermark package and makes images depend on it.
        "add_watermarker": False,
    }


def tiny_sd3_components(seed: int = 0) -> dict[str, Any]:
    """Everything `StableDiffusion3Pipeline(**components)` needs, tiny and offline.

    SD3 concatenates the two CLIP encoders' states (2 x 32 wide) and zero-pads them to T5's width before
    joining them with T5's tokens, so `joint_attention_dim` is the T5 width and must be at least 64; the pooled
    condition is both CLIP projections side by side.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    t5_width = 2 * _CLIP_WIDTH
    tokenizer_3 = build_t5_tokenizer()
    with _seeded(seed):
        transformer = SD3Transformer2DModel(
            sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
            attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
            joint_attention_dim=t5_width, pooled_projection_dim=2 * _CLIP_WIDTH, pos_embed_max_size=32,
        )
    return {
        "transformer": transformer,
        "vae": tiny_flow_vae(latent_channels=4, seed=seed),
        "text_encoder": tiny_projected_text_encoder(seed=seed),
        "tokenizer": build_clip_tokenizer(),
        "text_encoder_2": tiny_projected_text_encoder(seed=seed + 1),
        "tokenizer_2": build_clip_tokenizer(),
        "text_encoder_3": tiny_t5_encoder(len(tokenizer_3), d_model=t5_width, seed=seed + 2),
        "tokenizer_3": tokenizer_3,
        "scheduler": FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        "image_encoder": None,
        "feature_extractor": None,
    }


def tiny_flux_components(seed: int = 0) -> dict[str, Any]:
    """Everything `FluxPipeline(**components)` needs, tiny and offline (Flux.1-dev style: guidance-distilled).

    Flux packs 2x2 latent patches into one token, so the transformer sees `4 * latent_channels` input channels;
    its rotary axes must add up to the head width. The pooled condition is CLIP's pooled output and the token
    condition T5's states. `guidance_embeds=True` makes `guidance_scale` an input of the transformer, as in
    Flux.1-dev, rather than classifier-free guidance.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    latent_channels = 4
    tokenizer_2 = build_t5_tokenizer()
    with _seeded(seed):
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=4 * latent_channels, num_layers=1, num_single_layers=1,
            attention_head_dim=16, num_attention_heads=2, joint_attention_dim=_T5_WIDTH,
            pooled_projection_dim=_CLIP_WIDTH, guidance_embeds=True, axes_dims_rope=(4, 6, 6),
        )
    return {
        "transformer": transformer,
        "vae": tiny_flow_vae(latent_channels=latent_channels, seed=seed),
        "text_encoder": tiny_text_encoder(hidden_size=_CLIP_WIDTH, seed=seed),
        "tokenizer": build_clip_tokenizer(),
        "text_encoder_2": tiny_t5_encoder(len(tokenizer_2), d_model=_T5_WIDTH, seed=seed + 1),
        "tokenizer_2": tokenizer_2,
        # Flux.1-dev's schedule: the shift grows with the number of image tokens.
        "scheduler": FlowMatchEulerDiscreteScheduler(
            num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
            base_image_seq_len=256, max_image_seq_len=4096,
        ),
        "image_encoder": None,
        "feature_extractor": None,
    }


_PIPELINES = {
    "sd": ("StableDiffusionPipeline", tiny_stable_diffusion_components),
    "sdxl": ("StableDiffusionXLPipeline", tiny_sdxl_components),
    "sd3": ("StableDiffusion3Pipeline", tiny_sd3_components),
    "flux": ("FluxPipeline", tiny_flux_components),
}
TINY_PIPELINE_KINDS: tuple[str, ...] = tuple(_PIPELINES)


def tiny_pipeline(kind: str, seed: int = 0) -> DiffusionPipeline:
    """A stock diffusers pipeline of one denoiser family with tiny random weights, built offline.

    `kind` is "sd" (`StableDiffusionPipeline`), "sdxl" (`StableDiffusionXLPipeline`), "sd3"
    (`StableDiffusion3Pipeline`) or "flux" (`FluxPipeline`); `invgen.models.denoisers.pipeline_family` of the
    result is `kind`. The same `seed` gives the same weights, and the caller's global RNG is left untouched.
    The default image size is 16 px except for Flux, whose pipeline fixes it at 128 times the VAE's scale
    (256 px here, about a second on a CPU); pass `height=16, width=16` there.
    """
    import diffusers

    if kind not in _PIPELINES:
        raise InvgenModelError(f"unknown tiny pipeline kind '{kind}' (expected one of: {', '.join(_PIPELINES)})")
    class_name, components = _PIPELINES[kind]
    with torch.random.fork_rng(devices=[]):
        parts = components(seed=seed)
    pipe = getattr(diffusers, class_name)(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe
