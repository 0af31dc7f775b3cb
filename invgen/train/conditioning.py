"""Prompts to the conditions each denoiser family takes, and the per-batch inputs that go with them.

Prompts are encoded once, by the pipeline's own `encode_prompt` (the frozen text encoders never run in
a training loop), into a dict of tensors whose first dimension is the prompt:

| family | per-prompt conditions                          | per batch, from the latents' shape             |
| ------ | ---------------------------------------------- | ---------------------------------------------- |
| `sd`   | prompt_embeds (P, 77, D)                       | -                                              |
| `sdxl` | prompt_embeds (P, 77, 2048), pooled (P, 1280)  | time ids (original size, crop, target size)    |
| `sd3`  | prompt_embeds (P, 77 + 256, 4096), pooled      | -                                              |
| `flux` | prompt_embeds (P, 512, 4096), pooled (P, 768)  | packed latents, txt_ids, img_ids, guidance     |

`denoiser_kwargs` turns a batch of noisy latents, noise levels and conditions into the keyword
arguments of the family's denoiser, exactly as its pipeline passes them at sampling time, so an adapter
is trained on the inputs it will see.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from invgen.models.denoisers import Family, pipeline_family

PROMPT_EMBEDS = "prompt_embeds"
POOLED = "pooled_prompt_embeds"
# Prompts per `encode_prompt` call: captions can be many, and T5 states are large.
ENCODE_CHUNK = 64


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: list[str]) -> torch.Tensor:
    """Frozen text-encoder states (P, L, D) float32 on the CPU, in chunks (captions can be many)."""
    out = []
    for start in range(0, len(prompts), 256):
        ids = tokenizer(
            prompts[start : start + 256],
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(text_encoder.device)
        out.append(text_encoder(ids)[0].float().cpu())
    return torch.cat(out)


def text_encoders(pipe) -> list[torch.nn.Module]:
    """The pipeline's text encoders (one for SD, two for SDXL and Flux, three for SD3)."""
    names = ("text_encoder", "text_encoder_2", "text_encoder_3")
    return [m for m in (getattr(pipe, n, None) for n in names) if isinstance(m, torch.nn.Module)]


@torch.no_grad()
def encode_conditions(
    pipe, prompts: Sequence[str], device: torch.device | str | None = None
) -> dict[str, torch.Tensor]:
    """Per-prompt conditions of `pipe`'s family, float32 on the CPU, first dimension = prompt."""
    family = pipeline_family(pipe)
    prompts = list(prompts)
    if family == "sd":
        # SD 1.x/2.x and invgen's pixel pipeline: the last hidden states of the one CLIP text encoder
        # (what `StableDiffusionPipeline.encode_prompt` returns without clip_skip).
        return {PROMPT_EMBEDS: encode_prompts(pipe.tokenizer, pipe.text_encoder, prompts)}
    device = device or pipe.text_encoder.device
    parts: dict[str, list[torch.Tensor]] = {PROMPT_EMBEDS: [], POOLED: []}
    for start in range(0, len(prompts), ENCODE_CHUNK):
        chunk = prompts[start : start + ENCODE_CHUNK]
        if family == "sdxl":
            embeds, _, pooled, _ = pipe.encode_prompt(chunk, device=device, do_classifier_free_guidance=False)
        elif family == "sd3":
            embeds, _, pooled, _ = pipe.encode_prompt(chunk, prompt_2=None, prompt_3=None, device=device,
                                                      do_classifier_free_guidance=False)
        else:
            embeds, pooled, _ = pipe.encode_prompt(chunk, prompt_2=None, device=device)
        parts[PROMPT_EMBEDS].append(embeds.float().cpu())
        parts[POOLED].append(pooled.float().cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


def select(conditions: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
    """The conditions of the prompts `index` (one row per sample)."""
    return {k: v[index] for k, v in conditions.items()}


def sdxl_time_ids(height: int, width: int, batch_size: int) -> torch.Tensor:
    """SDXL's micro-conditioning (B, 6): original size, crop top-left, target size, in pixels.

    Training images are resized and center-cropped to the training resolution, and the adapter is used
    with the pipeline's defaults (original = target = the output size, no crop), so the ids are those
    defaults: the adapter learns under the conditioning it is sampled with.
    """
    ids = torch.tensor([height, width, 0, 0, height, width], dtype=torch.float32)
    return ids.expand(batch_size, 6).clone()


def pack_flux_latents(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) latents as Flux's token sequence (B, H/2 · W/2, 4C), with the pipeline's own layout."""
    from diffusers import FluxPipeline

    b, c, h, w = latents.shape
    # The pipeline's static helper, so training sees exactly the tokens sampling does.
    return FluxPipeline._pack_latents(latents, b, c, h, w)


def flux_ids(latent_height: int, latent_width: int, text_length: int, device, dtype) -> tuple[torch.Tensor, ...]:
    """(txt_ids (L, 3), img_ids (H/2 · W/2, 3)): zero ids for text tokens, (0, row, col) for image tokens."""
    from diffusers import FluxPipeline

    img_ids = FluxPipeline._prepare_latent_image_ids(1, latent_height // 2, latent_width // 2, device, dtype)
    return torch.zeros(text_length, 3, device=device, dtype=dtype), img_ids


def denoiser_kwargs(
    family: Family,
    noisy: torch.Tensor,
    timestep: torch.Tensor,
    conditions: dict[str, torch.Tensor],
    vae_scale_factor: int = 8,
    guidance: float | None = None,
) -> dict:
    """Keyword arguments of the family's denoiser for `noisy` (B, C, H, W) at `timestep` (B,).

    `timestep` is what the pipeline passes: t for UNets, σ · 1000 for SD3 and σ for Flux (its pipeline
    divides by 1000 and the transformer multiplies back). Flux's latents are packed into tokens here;
    `guidance` is its embedded guidance value (None for a transformer without `guidance_embeds`).
    """
    dtype = noisy.dtype
    embeds = conditions[PROMPT_EMBEDS].to(noisy.device, dtype)
    if family in ("sd", "sdxl"):
        kwargs = {"sample": noisy, "timestep": timestep, "encoder_hidden_states": embeds}
        if family == "sdxl":
            h, w = noisy.shape[-2] * vae_scale_factor, noisy.shape[-1] * vae_scale_factor
            kwargs["added_cond_kwargs"] = {
                "text_embeds": conditions[POOLED].to(noisy.device, dtype),
                "time_ids": sdxl_time_ids(h, w, len(noisy)).to(noisy.device, dtype),
            }
        return kwargs
    pooled = conditions[POOLED].to(noisy.device, dtype)
    if family == "sd3":
        return {"hidden_states": noisy, "timestep": timestep, "encoder_hidden_states": embeds,
                "pooled_projections": pooled}
    txt_ids, img_ids = flux_ids(noisy.shape[-2], noisy.shape[-1], embeds.shape[1], noisy.device, dtype)
    kwargs = {"hidden_states": pack_flux_latents(noisy), "timestep": timestep.to(dtype),
              "encoder_hidden_states": embeds, "pooled_projections": pooled, "txt_ids": txt_ids, "img_ids": img_ids}
    if guidance is not None:
        kwargs["guidance"] = torch.full((len(noisy),), float(guidance), device=noisy.device, dtype=torch.float32)
    return kwargs


__all__ = [
    "POOLED",
    "PROMPT_EMBEDS",
    "denoiser_kwargs",
    "encode_conditions",
    "flux_ids",
    "pack_flux_latents",
    "sdxl_time_ids",
    "select",
    "text_encoders",
]
