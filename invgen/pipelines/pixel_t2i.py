"""A pixel-space text-to-image pipeline for the embedded benchmark.

Its call signature is the one users know from `StableDiffusionPipeline` (prompt, num_inference_steps,
guidance_scale, negative_prompt, generator, output_type, callback_on_step_end), minus the VAE: the UNet
denoises pixels directly. Passing `image` and `strength` turns it into an image-to-image translator
(SDEdit), which CDvG and GenView use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from PIL import Image

from invgen.errors import InvgenError
from invgen.models.adapter_files import refuse_non_lora
from invgen.pixels import to_signed


def _to_pixels(image: Any, size: int, device, dtype) -> torch.Tensor:
    """PIL images, uint8 arrays (N,H,W,C) or float tensors in [-1, 1] → tensor (N, C, H, W) in [-1, 1]."""
    if isinstance(image, torch.Tensor):
        x = image
        if x.ndim == 3:
            x = x[None]
        return x.to(device=device, dtype=dtype)
    if isinstance(image, Image.Image):
        image = [image]
    if isinstance(image, list):
        image = np.stack([np.asarray(im.convert("RGB").resize((size, size))) for im in image])
    arr = np.asarray(image)
    if arr.ndim == 3:
        arr = arr[None]
    x = to_signed(arr)
    return x.to(device=device, dtype=dtype)


class PixelTextToImagePipeline(DiffusionPipeline, StableDiffusionLoraLoaderMixin):
    """Stable Diffusion's LoRA loader is mixed in, so `load_lora_weights`, `set_adapters`, `fuse_lora` and
    `save_lora_weights` work here as on `StableDiffusionPipeline` (an InvDiff LoRA folder loads with
    `pipe.load_lora_weights(folder)`)."""

    model_cpu_offload_seq = "text_encoder->unet"

    def __init__(self, unet, text_encoder, tokenizer, scheduler):
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)

    def load_lora_weights(self, pretrained_model_name_or_path_or_dict, adapter_name: str | None = None, **kwargs):
        """`StableDiffusionLoraLoaderMixin.load_lora_weights`; an invgen residual or copy adapter folder (not a
        LoRA) is refused with how to attach it instead."""
        refuse_non_lora(pretrained_model_name_or_path_or_dict)
        return super().load_lora_weights(pretrained_model_name_or_path_or_dict, adapter_name=adapter_name, **kwargs)

    @torch.no_grad()
    def encode_prompt(self, prompt: list[str], device=None) -> torch.Tensor:
        device = device or self._execution_device
        ids = self.tokenizer(
            prompt,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(device)
        return self.text_encoder(ids)[0].to(self.unet.dtype)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 25,
        guidance_scale: float = 2.0,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        image: Any = None,
        strength: float | list[float] | torch.Tensor = 1.0,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ):
        prompt = _expand_prompts(prompt, num_images_per_prompt)
        n = len(prompt)
        size = self.unet.config.sample_size
        height, width = height or size, width or size
        device = self._execution_device
        dtype = self.unet.dtype
        cfg = guidance_scale if guidance_scale > 1.0 else None
        embeds = self._embeddings(prompt, negative_prompt, cfg is not None, device)

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        shape = (n, self.unet.config.in_channels, height, width)
        noise = latents if latents is not None else _randn(shape, generator, device, dtype)
        if image is not None:
            x0 = _to_pixels(image, size, device, dtype)
            start = _start_steps(strength, n, len(x0), num_inference_steps)
            x = x0.clone()
        else:
            x0, start = None, torch.zeros(n, dtype=torch.long)
            x = noise * self.scheduler.init_noise_sigma
        x = self._denoise(x, start, embeds, cfg, generator, x0, noise, callback_on_step_end,
                          callback_on_step_end_tensor_inputs)
        result = _output(x, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (result,)
        return ImagePipelineOutput(images=result)

    def _embeddings(self, prompt: list[str], negative_prompt: Any, do_cfg: bool, device: Any) -> torch.Tensor:
        """The prompts' embeddings; under classifier-free guidance the negative prompts' first, [uncond; cond]."""
        cond = self.encode_prompt(prompt, device)
        if not do_cfg:
            return cond
        n = len(prompt)
        if negative_prompt is None:
            negative_prompt = [""] * n
        elif isinstance(negative_prompt, str):
            negative_prompt = [negative_prompt] * n
        uncond = self.encode_prompt(list(negative_prompt), device)
        return torch.cat([uncond, cond])

    def _denoise(
        self,
        x: torch.Tensor,
        start: torch.Tensor,
        embeds: torch.Tensor,
        cfg: float | None,
        generator: Any,
        x0: torch.Tensor | None,
        noise: torch.Tensor,
        callback: Callable | None,
        callback_inputs: list[str] | None,
    ) -> torch.Tensor:
        """The sampling loop; an image with start step k (SDEdit) joins at step k, noised to that step."""
        device = self._execution_device
        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            joining = start == i
            if x0 is not None and joining.any():
                idx = joining.nonzero().flatten().to(device)
                x[idx] = self.scheduler.add_noise(x0[idx], noise[idx], t.repeat(len(idx)))
            active = (start <= i).to(device)
            if not active.any():
                continue
            model_in = torch.cat([x, x]) if cfg is not None else x
            model_in = self.scheduler.scale_model_input(model_in, t)
            eps = self.unet(model_in, t, encoder_hidden_states=embeds).sample
            if cfg is not None:
                eps_u, eps_c = eps.chunk(2)
                eps = eps_u + cfg * (eps_c - eps_u)
            stepped = self.scheduler.step(eps, t, x, generator=generator).prev_sample
            x = torch.where(active[:, None, None, None], stepped, x)
            if callback is not None:
                # As in diffusers' pipelines: the callback may replace the latents or the prompt embeddings
                # (rows [uncond; cond] under classifier-free guidance) for the following steps.
                names = callback_inputs or ["latents"]
                state = {"latents": x, "prompt_embeds": embeds}
                out = callback(self, i, t, {k: state[k] for k in names if k in state}) or {}
                x, embeds = out.get("latents", x), out.get("prompt_embeds", embeds)
        return x


def _expand_prompts(prompt: str | list[str], per_prompt: int) -> list[str]:
    if isinstance(prompt, str):
        prompt = [prompt]
    if not prompt or any(not isinstance(p, str) for p in prompt):
        raise InvgenError("prompt must be a non-empty string or list of strings")
    return [p for p in prompt for _ in range(per_prompt)]


def _start_steps(strength: Any, n: int, n_images: int, steps: int) -> torch.Tensor:
    """SDEdit: the step at which each image joins the loop, noised to its `strength`; per-image strengths are
    allowed (GenView picks one per image)."""
    if n_images != n:
        raise InvgenError(f"got {n_images} images for {n} prompts")
    s = torch.as_tensor(strength, dtype=torch.float64).flatten().expand(n).clone()
    if ((s < 0) | (s > 1)).any():
        raise InvgenError("strength must be in [0, 1]")
    return (steps - (s * steps).round().long()).clamp(0, steps)


def _output(x: torch.Tensor, output_type: str) -> Any:
    images = (x / 2 + 0.5).clamp(0, 1)
    if output_type == "pt":
        return images
    arr = images.permute(0, 2, 3, 1).float().cpu().numpy()
    if output_type == "np":
        return arr
    if output_type == "pil":
        return [Image.fromarray((a * 255).round().astype(np.uint8)) for a in arr]
    raise InvgenError(f"unknown output_type '{output_type}' (use pil, np or pt)")


def _randn(shape, generator, device, dtype) -> torch.Tensor:
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(shape, generator=generator, device=torch.device(device), dtype=dtype)


def build_pixel_pipeline(unet_config=None, seed: int = 0) -> PixelTextToImagePipeline:
    """An untrained embedded pipeline from the tiny components."""
    from diffusers import DDIMScheduler

    from invgen.models.tiny import tiny_text_encoder, tiny_unet
    from invgen.models.tokenizer import build_clip_tokenizer

    unet = tiny_unet(unet_config, seed=seed)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    return PixelTextToImagePipeline(
        unet=unet,
        text_encoder=tiny_text_encoder(hidden_size=unet.config.cross_attention_dim, seed=seed),
        tokenizer=build_clip_tokenizer(),
        scheduler=scheduler,
    )
