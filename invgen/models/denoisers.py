"""Which network denoises, and which family a pipeline belongs to.

invgen never forks a pipeline: it finds the denoiser (`pipe.unet` for UNet pipelines, `pipe.transformer`
for DiT pipelines) and works on it through diffusers' own APIs. The family decides how prompts become
conditions, which objective the denoiser was trained with and where LoRA layers go by default.

| family  | pipelines                                   | denoiser                  | objective                    |
| ------- | ------------------------------------------- | ------------------------- | ---------------------------- |
| `sd`    | SD 1.x / 2.x, invgen's pixel pipeline       | `UNet2DConditionModel`    | epsilon or v (scheduler)     |
| `sdxl`  | SDXL (two text encoders, added time ids)    | `UNet2DConditionModel`    | epsilon or v (scheduler)     |
| `sd3`   | SD3 / SD3.5                                 | `SD3Transformer2DModel`   | flow matching (velocity)     |
| `flux`  | Flux.1                                      | `FluxTransformer2DModel`  | flow matching (velocity)     |
"""

from __future__ import annotations

from typing import Any, Literal

from torch import nn

from invgen.errors import InvgenModelError

Family = Literal["sd", "sdxl", "sd3", "flux"]
FAMILIES: tuple[str, ...] = ("sd", "sdxl", "sd3", "flux")

_TRANSFORMER_FAMILIES = {"SD3Transformer2DModel": "sd3", "FluxTransformer2DModel": "flux"}


def denoiser_of(pipe_or_denoiser: Any) -> nn.Module:
    """`pipe.unet` or `pipe.transformer`; a denoiser module given directly is returned as is."""
    for attr in ("unet", "transformer"):
        module = getattr(pipe_or_denoiser, attr, None)
        if isinstance(module, nn.Module):
            return module
    if isinstance(pipe_or_denoiser, nn.Module) and hasattr(pipe_or_denoiser, "config"):
        return pipe_or_denoiser
    raise InvgenModelError(
        f"expected a diffusers pipeline with a `unet` or a `transformer` (or the denoiser itself), "
        f"got {type(pipe_or_denoiser).__name__}"
    )


def denoiser_family(denoiser: nn.Module) -> Family:
    """The family of a denoiser module, from its class and config."""
    name = type(denoiser).__name__
    if name in _TRANSFORMER_FAMILIES:
        return _TRANSFORMER_FAMILIES[name]  # type: ignore[return-value]
    cfg = getattr(denoiser, "config", {})
    get = cfg.get if isinstance(cfg, dict) else lambda k, d=None: getattr(cfg, k, d)
    if name == "UNet2DConditionModel":
        return "sdxl" if get("addition_embed_type") == "text_time" else "sd"
    raise InvgenModelError(
        f"{name} is not a denoiser invgen supports (UNet2DConditionModel, SD3Transformer2DModel, "
        "FluxTransformer2DModel)"
    )


def pipeline_family(pipe_or_denoiser: Any) -> Family:
    """The family of a pipeline (or of a denoiser module)."""
    return denoiser_family(denoiser_of(pipe_or_denoiser))


DENOISER_CLASSES: tuple[str, ...] = ("UNet2DConditionModel", *_TRANSFORMER_FAMILIES)
# The config entries that fix a denoiser's layer shapes: an adapter fits a denoiser whose entries are equal.
_SIGNATURE_KEYS = {
    "UNet2DConditionModel": ("in_channels", "out_channels", "block_out_channels", "cross_attention_dim",
                             "layers_per_block"),
    "SD3Transformer2DModel": ("in_channels", "out_channels", "patch_size", "num_layers", "attention_head_dim",
                              "num_attention_heads", "joint_attention_dim", "caption_projection_dim",
                              "pooled_projection_dim"),
    "FluxTransformer2DModel": ("in_channels", "out_channels", "patch_size", "num_layers", "num_single_layers",
                               "attention_head_dim", "num_attention_heads", "joint_attention_dim",
                               "pooled_projection_dim"),
}


def denoiser_attr(family: str) -> str:
    """The pipeline attribute, and the key prefix in diffusers' LoRA files: "unet" or "transformer"."""
    return "transformer" if family in ("sd3", "flux") else "unet"


def denoiser_word(denoiser_or_class: Any) -> str:
    """The word messages use for a denoiser: UNet or transformer."""
    name = denoiser_or_class if isinstance(denoiser_or_class, str) else type(denoiser_or_class).__name__
    return "UNet" if "UNet" in name else "transformer"


def denoiser_signature(denoiser: nn.Module) -> dict[str, Any]:
    """The denoiser's class and the config entries that fix its layer shapes (JSON-ready)."""
    name = type(denoiser).__name__
    cfg = getattr(denoiser, "config", {})
    get = cfg.get if isinstance(cfg, dict) else lambda k, d=None: getattr(cfg, k, d)
    sig = {k: get(k) for k in _SIGNATURE_KEYS.get(name, ())}
    sig = {k: list(v) if isinstance(v, tuple) else v for k, v in sig.items()}
    sig["class"] = name
    return sig


__all__ = ["DENOISER_CLASSES", "FAMILIES", "Family", "denoiser_attr", "denoiser_family", "denoiser_of",
           "denoiser_signature", "denoiser_word", "pipeline_family"]
