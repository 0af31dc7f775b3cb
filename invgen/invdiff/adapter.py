"""The networks that produce the guidance correction Δ(x_t, t, c), and their config.

Three kinds:
- `lora` (default): a LoRA on the denoiser's attention projections (and, for UNets, the projections and
  convolutions around them), held as a diffusers adapter named "invgen" (see `invgen/invdiff/lora.py`); Δ is
  the difference the adapter makes and its scale is the adapter weight.
- `residual`: a small side network fed with x_t, t and c; zero-initialised output, so an untrained
  adapter is the base model.
- `copy`: a full copy of the UNet with a zero-initialised output layer (the official method, for parity).

`residual` and `copy` are not LoRAs: they are added to the UNet's output by a forward hook and saved in
invgen's own format.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from invgen.config import check

ADAPTER_NAME = "invgen"
KINDS = ("lora", "residual", "copy")

# Where a LoRA goes when `adapter.target_modules` is left unset. UNets: the attention projections plus the
# projections into and out of each transformer block, the resnets' second conv and their time projection (what
# the digits demo was tuned with). DiTs: every attention projection, the text stream's (add_*, to_add_out) too.
_UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "conv2", "time_emb_proj"]
_DIT_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]
DEFAULT_LORA_TARGETS: dict[str, list[str]] = {"sd": _UNET_TARGETS, "sdxl": _UNET_TARGETS,
                                              "sd3": _DIT_TARGETS, "flux": _DIT_TARGETS}


def default_target_modules(family: str) -> list[str]:
    return list(DEFAULT_LORA_TARGETS[family])


@dataclass
class AdapterConfig:
    kind: Literal["lora", "residual", "copy"] = "lora"
    rank: int = 4
    alpha: float = 4.0
    # None: the denoiser family's default (`DEFAULT_LORA_TARGETS`), fixed when the adapter is created.
    target_modules: list[str] | None = None
    residual_channels: int = 16

    def validate(self, prefix: str = "adapter") -> None:
        check(self.kind in KINDS, f"{prefix}.kind", f"must be one of {', '.join(KINDS)}, got '{self.kind}'")
        check(isinstance(self.rank, int) and not isinstance(self.rank, bool) and self.rank > 0, f"{prefix}.rank",
              f"must be a positive integer, got {self.rank!r}")
        alpha_ok = isinstance(self.alpha, (int, float)) and not isinstance(self.alpha, bool)
        check(alpha_ok and math.isfinite(self.alpha) and self.alpha > 0, f"{prefix}.alpha",
              f"must be a finite number above 0, got {self.alpha!r}")
        check(isinstance(self.residual_channels, int) and self.residual_channels > 0, f"{prefix}.residual_channels",
              f"must be a positive integer, got {self.residual_channels!r}")
        if self.target_modules is not None:
            targets = self.target_modules
            check(isinstance(targets, list) and bool(targets), f"{prefix}.target_modules",
                  f"must name at least one module (or be left unset for the family's default), got {targets!r}")
            for t in targets:
                check(isinstance(t, str) and bool(t.strip()), f"{prefix}.target_modules",
                      f"module names must be non-empty strings, got {t!r}")


class ResidualAdapter(ModelMixin, ConfigMixin):
    """A small conditional conv net: Δ = f(x_t, t, pooled c), output layer zero-initialised."""

    @register_to_config
    def __init__(self, in_channels: int = 3, channels: int = 16, cross_attention_dim: int = 32):
        super().__init__()
        self.time_proj = Timesteps(channels, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(channels, channels)
        self.text_proj = nn.Linear(cross_attention_dim, channels)
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.block = nn.Sequential(
            nn.GroupNorm(4, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(4, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )
        self.conv_out = nn.Conv2d(channels, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor):
        t = torch.as_tensor(timestep, device=sample.device).flatten()
        t = t.expand(len(sample)) if t.numel() == 1 else t
        emb = self.time_embed(self.time_proj(t).to(sample.dtype))
        emb = emb + self.text_proj(encoder_hidden_states.mean(dim=1))
        h = self.conv_in(sample) + emb[:, :, None, None]
        h = h + self.block(h)
        return self.conv_out(h)


class UNetCopyAdapter(nn.Module):
    """Δ = a full copy of the UNet whose output layer starts at zero."""

    def __init__(self, unet: nn.Module, zero_init: bool = True):
        super().__init__()
        self.unet = copy.deepcopy(unet)
        self.unet.requires_grad_(True)
        if zero_init:
            nn.init.zeros_(self.unet.conv_out.weight)
            nn.init.zeros_(self.unet.conv_out.bias)

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states).sample


def lora_config(cfg: AdapterConfig):
    """The peft `LoraConfig` of a LoRA adapter config whose target modules are resolved."""
    from peft import LoraConfig

    if cfg.target_modules is None:
        raise ValueError("resolve adapter.target_modules for the denoiser's family first")
    return LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=list(cfg.target_modules),
                      init_lora_weights=True)
