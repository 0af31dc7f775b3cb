from invgen.models.loading import load_pipeline
from invgen.models.tiny import (
    TinyUNetConfig,
    tiny_class_unet,
    tiny_latent_unet,
    tiny_stable_diffusion_components,
    tiny_text_encoder,
    tiny_unet,
    tiny_vae,
)
from invgen.models.tokenizer import build_clip_tokenizer

__all__ = [
    "TinyUNetConfig",
    "build_clip_tokenizer",
    "load_pipeline",
    "tiny_class_unet",
    "tiny_latent_unet",
    "tiny_stable_diffusion_components",
    "tiny_text_encoder",
    "tiny_unet",
    "tiny_vae",
]
