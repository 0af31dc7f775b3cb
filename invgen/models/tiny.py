"""Tiny diffusers components built from configs, as diffusers' own tests build them.

They make the whole library runnable offline: a text encoder initialised at random from a fixed seed
(frozen, so prompts still map to distinct, stable embeddings), small UNets and a small VAE.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel, UNet2DModel
from transformers import CLIPTextConfig, CLIPTextModel

from invgen.models.tokenizer import build_clip_tokenizer


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


def tiny_class_unet(sample_size: int = 16, channels: int = 3, num_classes: int = 10, seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        num_class_embeds=num_classes,
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


def tiny_scheduler() -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True)


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
