from invgen.models.loading import load_pipeline
from invgen.models.tiny import (
    TINY_PIPELINE_KINDS,
    TinyUNetConfig,
    tiny_flux_components,
    tiny_latent_unet,
    tiny_pipeline,
    tiny_sd3_components,
    tiny_sdxl_components,
    tiny_stable_diffusion_components,
    tiny_text_encoder,
    tiny_unet,
    tiny_vae,
)
from invgen.models.tokenizer import build_clip_tokenizer, build_t5_tokenizer

__all__ = [
    "TINY_PIPELINE_KINDS",
    "TinyUNetConfig",
    "build_clip_tokenizer",
    "build_t5_tokenizer",
    "load_pipeline",
    "tiny_flux_components",
    "tiny_latent_unet",
    "tiny_pipeline",
    "tiny_sd3_components",
    "tiny_sdxl_components",
    "tiny_stable_diffusion_components",
    "tiny_text_encoder",
    "tiny_unet",
    "tiny_vae",
]
