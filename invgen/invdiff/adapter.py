"""The networks that produce the guidance correction Δ(x_t, t, c).

Three kinds, one interface (`build_adapter_module`, `attach_module`, `detach_module`):
- `lora` (default): a peft LoRA on the UNet's attention and conv projections; Δ is the difference the
  adapter makes, its scale is the LoRA scale, and at scale 1 it can be fused into the weights.
- `residual`: a small side network fed with x_t, t and c; zero-initialised output, so an untrained
  adapter is the base model.
- `copy`: a full copy of the UNet with a zero-initialised output layer (the official method, for parity).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from invgen.config import check

ADAPTER_NAME = "invgen"
KINDS = ("lora", "residual", "copy")

DEFAULT_LORA_TARGETS = [
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "conv2",
    "time_emb_proj",
]


@dataclass
class AdapterConfig:
    kind: Literal["lora", "residual", "copy"] = "lora"
    rank: int = 4
    alpha: float = 4.0
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    residual_channels: int = 16

    def validate(self, prefix: str = "adapter") -> None:
        check(self.kind in KINDS, f"{prefix}.kind", f"must be one of {', '.join(KINDS)}, got '{self.kind}'")
        check(self.rank > 0, f"{prefix}.rank", f"must be positive, got {self.rank}")
        check(self.residual_channels > 0, f"{prefix}.residual_channels", "must be positive")
        check(bool(self.target_modules), f"{prefix}.target_modules", "must name at least one module")


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
    from peft import LoraConfig

    return LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=list(cfg.target_modules), init_lora_weights=True)


def lora_layers(unet: nn.Module):
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [(name, m) for name, m in unet.named_modules() if isinstance(m, BaseTunerLayer)]


def inject_lora(unet: nn.Module, cfg: AdapterConfig, state_dict: dict | None = None) -> nn.Module:
    from peft import inject_adapter_in_model, set_peft_model_state_dict

    if lora_layers(unet):
        from invgen.errors import InvgenModelError

        raise InvgenModelError("this UNet already has an invgen adapter attached; detach it first")
    inject_adapter_in_model(lora_config(cfg), unet, adapter_name=ADAPTER_NAME)
    if state_dict is not None:
        from invgen.errors import InvgenModelError

        try:
            result = set_peft_model_state_dict(unet, state_dict, adapter_name=ADAPTER_NAME)
        except (RuntimeError, ValueError) as e:  # weights of other shapes (another base model or rank)
            remove_lora(unet)  # leave the UNet as it was, not half adapted
            raise InvgenModelError(f"the adapter does not fit this UNet: {str(e).strip().splitlines()[-1]}") from None
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            remove_lora(unet)
            raise InvgenModelError(f"the adapter does not fit this UNet: unexpected weights {unexpected[:3]}")
    return unet


def lora_state_dict(unet: nn.Module) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(unet, adapter_name=ADAPTER_NAME)
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def set_lora_scale(unet: nn.Module, scale: float) -> None:
    for _, layer in lora_layers(unet):
        layer.set_scale(ADAPTER_NAME, scale)


def remove_lora(unet: nn.Module) -> None:
    """Put every wrapped layer's original module back, so the UNet is exactly the base model again."""
    for name, layer in lora_layers(unet):
        parent_name, _, child = name.rpartition(".")
        parent = unet.get_submodule(parent_name) if parent_name else unet
        setattr(parent, child, layer.get_base_layer())
    configs = getattr(unet, "peft_config", None)
    if isinstance(configs, dict):
        configs.pop(ADAPTER_NAME, None)
        if not configs:
            del unet.peft_config


def trainable_lora_parameters(unet: nn.Module) -> list[nn.Parameter]:
    unet.requires_grad_(False)
    params = []
    for name, p in unet.named_parameters():
        if "lora_" in name:
            p.requires_grad_(True)
            params.append(p)
    return params

