"""The denoising objective, shared by the base trainer, the grouper and the InvDiff trainer.

Each family is trained on the objective its denoiser was pre-trained with (`DenoisingObjective`):

- `sd`, `sdxl` (DDPM): x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε with t uniform on the scheduler's steps; the
  target is ε, v = √ᾱ_t · ε − √(1 − ᾱ_t) · x0 or x0, as the scheduler config's `prediction_type` says.
- `sd3`, `flux` (rectified flow): x_t = (1 − σ) · x0 + σ · ε, target ε − x0 (the velocity), σ drawn
  from a logit-normal density and shifted as the scheduler config says (SD3: `shift`; Flux: the
  resolution-dependent shift when `use_dynamic_shifting`).

The loss is the per-sample mean squared error, so the InvDiff objective can weight samples by group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from invgen.config import check
from invgen.models.denoisers import Family, denoiser_of, pipeline_family
from invgen.train.conditioning import PROMPT_EMBEDS, denoiser_kwargs, pack_flux_latents

FLOW_FAMILIES = ("sd3", "flux")


def draw_noise(shape: torch.Size | tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Gaussian noise from a CPU generator, so every device and process draws the same numbers."""
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float32)


def ddpm_target(scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What a DDPM-trained denoiser predicts, from the scheduler config's `prediction_type`."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(x0, noise, t)
    if kind == "sample":
        return x0
    raise ValueError(f"unknown prediction_type '{kind}' in the scheduler config")


def flow_matching_pair(x0: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(x_t, target) of rectified flow: x_t = (1 − σ) · x0 + σ · ε, target ε − x0."""
    s = sigmas.to(x0.device, x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
    return (1 - s) * x0 + s * noise, noise - x0


def denoising_loss(
    unet,
    scheduler,
    x0: torch.Tensor,
    embeddings: torch.Tensor,
    timesteps: torch.Tensor,
    noise: torch.Tensor,
) -> torch.Tensor:
    """Per-sample mean squared error of a DDPM UNet conditioned on text states only (the `sd` family)."""
    noise = noise.to(x0.device, x0.dtype)
    t = timesteps.to(x0.device)
    noisy = scheduler.add_noise(x0, noise, t)
    pred = unet(noisy, t, encoder_hidden_states=embeddings.to(x0.device, x0.dtype)).sample
    return (pred.float() - ddpm_target(scheduler, x0, noise, t).float()).pow(2).flatten(1).mean(1)


@dataclass
class FlowMatchingConfig:
    """How the flow-matching families (sd3, flux) draw training noise levels; UNet families ignore it.

    The density names are those of `diffusers.training_utils.compute_density_for_timestep_sampling`;
    logit-normal (0, 1) is what SD3 was trained with (Esser et al., 2024), mode_scale only applies to
    `mode`. `guidance` is the value fed to Flux-dev's guidance embedding while training (what diffusers'
    Flux LoRA scripts use); transformers without a guidance embedding ignore it.
    """

    weighting_scheme: Literal["logit_normal", "mode", "none"] = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29
    guidance: float = 3.5

    def validate(self, prefix: str = "objective.flow_matching") -> None:
        check(self.logit_std > 0, f"{prefix}.logit_std", f"must be positive, got {self.logit_std}")


class DenoisingObjective:
    """A family's training objective: noise levels, noisy input, target, and the denoiser call.

    Noise levels are tensors of the scheduler's own kind: integer timesteps t for DDPM families, σ in
    [0, 1] for flow matching. `fixed_levels` maps the grouper's t ∈ [0, 1000) to them (σ = t / 1000).
    """

    def __init__(
        self,
        family: Family,
        scheduler,
        vae_scale_factor: int = 1,
        flow: FlowMatchingConfig | None = None,
        guidance_embeds: bool = False,
    ):
        self.family = family
        self.scheduler = scheduler
        self.vae_scale_factor = vae_scale_factor
        self.flow_cfg = flow or FlowMatchingConfig()
        self.guidance_embeds = guidance_embeds

    @classmethod
    def for_pipeline(cls, pipe, flow: FlowMatchingConfig | None = None) -> DenoisingObjective:
        """The objective of `pipe`'s denoiser, with a training scheduler built from its scheduler config."""
        from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler

        family = pipeline_family(pipe)
        if family in FLOW_FAMILIES:
            scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
        else:
            # SDXL ships an Euler scheduler: the same betas and prediction type drive DDPM's training noise.
            scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        factor = int(getattr(pipe, "vae_scale_factor", 1) or 1) if getattr(pipe, "vae", None) is not None else 1
        guidance = bool(getattr(denoiser_of(pipe).config, "guidance_embeds", False))
        return cls(family, scheduler, factor, flow, guidance_embeds=guidance)

    @property
    def is_flow(self) -> bool:
        return self.family in FLOW_FAMILIES

    # ------------------------------------------------------------------ noise levels
    def draw_levels(self, n: int, gen: torch.Generator, latent_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Training noise levels for `n` samples from the CPU generator `gen`."""
        if not self.is_flow:
            return torch.randint(0, self.scheduler.config.num_train_timesteps, (n,), generator=gen)
        from diffusers.training_utils import compute_density_for_timestep_sampling

        f = self.flow_cfg
        u = compute_density_for_timestep_sampling(f.weighting_scheme, n, logit_mean=f.logit_mean,
                                                  logit_std=f.logit_std, mode_scale=f.mode_scale, generator=gen)
        return self.shift(u.clamp(0.0, 1.0), latent_shape)

    def shift(self, sigmas: torch.Tensor, latent_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """The scheduler's shift of flow-matching noise levels towards more noise (as at sampling time)."""
        cfg = self.scheduler.config
        if cfg.get("use_dynamic_shifting"):
            from diffusers.pipelines.flux.pipeline_flux import calculate_shift

            h, w = (latent_shape or (64, 64))[-2:]
            mu = calculate_shift((h // 2) * (w // 2), cfg.get("base_image_seq_len", 256),
                                 cfg.get("max_image_seq_len", 4096), cfg.get("base_shift", 0.5),
                                 cfg.get("max_shift", 1.15))
            return self.scheduler.time_shift(mu, 1.0, sigmas)
        s = float(cfg.get("shift", 1.0))
        return s * sigmas / (1 + (s - 1) * sigmas)

    def fixed_levels(self, t: int, n: int) -> torch.Tensor:
        """The grouper's fixed level t ∈ [0, 1000): DDPM timestep t, or σ = t / 1000 for flow matching."""
        if self.is_flow:
            return torch.full((n,), t / 1000.0, dtype=torch.float32)
        return torch.full((n,), t, dtype=torch.long)

    # ------------------------------------------------------------------ the loss
    def noisy_and_target(self, x0: torch.Tensor, noise: torch.Tensor, levels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.is_flow:
            return flow_matching_pair(x0, noise, levels)
        t = levels.to(x0.device)
        return self.scheduler.add_noise(x0, noise, t), ddpm_target(self.scheduler, x0, noise, t)

    def model_timestep(self, levels: torch.Tensor) -> torch.Tensor:
        """The `timestep` argument the family's pipeline passes its denoiser at this noise level."""
        if self.family == "sd3":
            return levels * 1000.0
        return levels  # t for UNets; σ for Flux (its pipeline passes t / 1000)

    def per_sample_loss(
        self,
        model,
        x0: torch.Tensor,
        conditions: dict[str, torch.Tensor],
        levels: torch.Tensor,
        noise: torch.Tensor,
    ) -> torch.Tensor:
        """Mean squared error of the denoiser's prediction against the family's target, one value per sample.

        `conditions` holds one row per sample (`conditioning.select`); `model` takes the denoiser's
        own keyword arguments (the denoiser, or a training module wrapping it).
        """
        noise = noise.to(x0.device, x0.dtype)
        levels = levels.to(x0.device)
        noisy, target = self.noisy_and_target(x0, noise, levels)
        if self.family == "sd":
            # Positional like the pipelines call it, so wrappers with the UNet's signature work unchanged.
            pred = model(noisy, levels, encoder_hidden_states=conditions[PROMPT_EMBEDS].to(x0.device, x0.dtype))
        else:
            guidance = self.flow_cfg.guidance if self.guidance_embeds else None
            pred = model(**denoiser_kwargs(self.family, noisy, self.model_timestep(levels), conditions,
                                           self.vae_scale_factor, guidance))
        pred = pred[0] if isinstance(pred, tuple) else pred.sample
        if self.family == "flux":
            target = pack_flux_latents(target)  # the loss is taken on tokens; a permutation of the latents
        return (pred.float() - target.float()).pow(2).flatten(1).mean(1)


__all__ = [
    "DenoisingObjective",
    "FlowMatchingConfig",
    "ddpm_target",
    "denoising_loss",
    "draw_noise",
    "flow_matching_pair",
]
