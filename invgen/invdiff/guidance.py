"""`InvariantGuidance`: a trained adapter that corrects a frozen diffusion model's noise prediction.

    guidance = InvariantGuidance.from_pretrained("runs/digits/invdiff")
    guidance.attach(pipe, scale=1.0)    # any pipeline with a `unet`
    images = pipe(prompts).images
    guidance.detach(pipe)               # pipe is exactly the base model again

The guided prediction is ε̂ = ε_base(x_t, t, c) + s · Δ(x_t, t, c). For `residual` and `copy` adapters Δ
is a separate network added by a forward hook on `pipe.unet`, so the formula holds exactly for every s.
For `lora`, Δ is the difference the LoRA makes and s is the LoRA scale: exact at s = 0 and s = 1, first
order in between. `attach` folds a LoRA into the weights (at any scale) so sampling costs what the base
model costs; the replaced weights are kept so that `detach` restores them exactly.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from invgen.errors import InvgenModelError
from invgen.invdiff.adapter import (
    ADAPTER_NAME,
    AdapterConfig,
    ResidualAdapter,
    UNetCopyAdapter,
    inject_lora,
    lora_layers,
    lora_state_dict,
    remove_lora,
    set_lora_scale,
    trainable_lora_parameters,
)

CONFIG_NAME = "invgen_guidance.json"
WEIGHTS_NAME = "adapter.safetensors"
SIGNATURE_KEYS = ("in_channels", "out_channels", "block_out_channels", "cross_attention_dim", "layers_per_block")


def unet_signature(unet: nn.Module) -> dict[str, Any]:
    cfg = dict(getattr(unet, "config", {}))
    sig = {k: cfg.get(k) for k in SIGNATURE_KEYS}
    sig = {k: list(v) if isinstance(v, tuple) else v for k, v in sig.items()}
    sig["class"] = type(unet).__name__
    return sig


def _unet_of(pipe_or_unet: Any) -> nn.Module:
    unet = getattr(pipe_or_unet, "unet", pipe_or_unet)
    if not isinstance(unet, nn.Module):
        raise InvgenModelError(f"expected a pipeline with a `unet` or a UNet, got {type(pipe_or_unet).__name__}")
    return unet


class GuidedUNet(nn.Module):
    """base UNet + s · Δ as one module (what the trainer optimises and accelerate wraps)."""

    def __init__(self, unet: nn.Module, delta: nn.Module | None, scale: float = 1.0):
        super().__init__()
        self.unet = unet
        self.delta = delta
        self.scale = scale

    @property
    def config(self):
        return self.unet.config

    def forward(self, sample, timestep, encoder_hidden_states=None, **kwargs):
        out = self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, **kwargs)
        if self.delta is not None and self.scale != 0:
            out.sample = out.sample + self.scale * self.delta(sample, timestep, encoder_hidden_states)
        return out


class InvariantGuidance:
    """A guidance adapter: its config, its weights, and how to attach it to a pipeline."""

    def __init__(
        self,
        adapter: AdapterConfig,
        signature: dict[str, Any],
        module: nn.Module | None = None,
        lora_weights: dict[str, torch.Tensor] | None = None,
        base_model: str | None = None,
        info: dict[str, Any] | None = None,
    ):
        self.adapter = adapter
        self.signature = signature
        self.module = module
        self.lora_weights = lora_weights
        self.base_model = base_model
        self.info = info or {}
        self._attached: dict[int, dict[str, Any]] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def for_unet(cls, unet: nn.Module, adapter: AdapterConfig, base_model: str | None = None) -> InvariantGuidance:
        """A fresh (untrained, Δ = 0) adapter shaped for `unet`."""
        adapter.validate()
        module = None
        if adapter.kind == "residual":
            cross = getattr(unet.config, "cross_attention_dim", None) or 32
            module = ResidualAdapter(unet.config.in_channels, adapter.residual_channels, cross)
        elif adapter.kind == "copy":
            module = UNetCopyAdapter(unet)
        return cls(adapter, unet_signature(unet), module=module, base_model=base_model)

    def training_module(self, unet: nn.Module) -> tuple[nn.Module, list[nn.Parameter]]:
        """The module to optimise (base frozen) and its trainable parameters."""
        unet.requires_grad_(False)
        if self.adapter.kind == "lora":
            inject_lora(unet, self.adapter, self.lora_weights)
            return GuidedUNet(unet, None), trainable_lora_parameters(unet)
        self.module.requires_grad_(True)
        return GuidedUNet(unet, self.module), list(self.module.parameters())

    def collect(self, trained: nn.Module) -> None:
        """Take the trained weights back from a `training_module` (after unwrapping)."""
        if self.adapter.kind == "lora":
            self.lora_weights = lora_state_dict(trained.unet)
        else:
            self.module = trained.delta

    def num_parameters(self) -> int:
        if self.adapter.kind == "lora":
            if self.lora_weights is None:
                raise InvgenModelError("this LoRA adapter has no weights yet")
            return sum(v.numel() for v in self.lora_weights.values())
        return sum(p.numel() for p in self.module.parameters())

    # ------------------------------------------------------------------ attach / detach
    def _check_fits(self, unet: nn.Module) -> None:
        sig = unet_signature(unet)
        diff = [k for k in self.signature if self.signature.get(k) != sig.get(k)]
        if diff:
            k = diff[0]
            raise InvgenModelError(
                f"this adapter was trained for another base model: {k} is {self.signature.get(k)} "
                f"for the adapter but {sig.get(k)} for this UNet"
            )

    def attach(self, pipe: Any, scale: float = 1.0, fuse: bool = True) -> Any:
        """Add the adapter to `pipe.unet` (in place) with guidance scale `scale`; returns `pipe`.

        A LoRA adapter is folded into the weights by default (`fuse=True`): sampling then costs what the
        base model costs, and `detach` still restores the base weights bit for bit from a CPU copy of the
        wrapped layers. `fuse=False` keeps peft's LoRA layers (extra matmuls on every call), which is what
        training needs and what one may prefer to save the copy's memory on very large UNets.
        """
        unet = _unet_of(pipe)
        if id(unet) in self._attached or getattr(unet, "_invgen_guidance", None) is not None:
            raise InvgenModelError("an invgen adapter is already attached to this pipeline; detach it first")
        self._check_fits(unet)
        entry: dict[str, Any] = {"scale": float(scale)}
        if self.adapter.kind == "lora":
            if self.lora_weights is None:
                raise InvgenModelError("this LoRA adapter has no weights yet")
            self._inject(unet, float(scale))
            if fuse:
                self._merge(unet, entry)
        else:
            self.module.to(unet.device)
            if next(self.module.parameters()).dtype != unet.dtype:
                self.module.to(unet.dtype)
            self.module.eval()
            entry["hook"] = unet.register_forward_hook(self._hook(entry), with_kwargs=True)
        self._attached[id(unet)] = entry
        unet._invgen_guidance = self
        return pipe

    def _inject(self, unet: nn.Module, scale: float) -> None:
        inject_lora(unet, self.adapter, self.lora_weights)
        set_lora_scale(unet, scale)
        for _, layer in lora_layers(unet):
            layer.to(device=unet.device)

    def _merge(self, unet: nn.Module, entry: dict[str, Any]) -> None:
        originals = {}
        for name, layer in lora_layers(unet):
            originals[name] = layer.get_base_layer().weight.detach().to("cpu", copy=True)
            if entry["scale"] != 0:  # at scale 0 the weights stay the base's, bit for bit
                layer.merge(adapter_names=[ADAPTER_NAME])
        remove_lora(unet)
        entry["fused"] = originals

    def _unmerge(self, unet: nn.Module, entry: dict[str, Any]) -> None:
        with torch.no_grad():
            for name, weight in entry.pop("fused").items():
                unet.get_submodule(name).weight.copy_(weight)

    def _hook(self, entry: dict[str, Any]):
        def hook(module, args, kwargs, output):
            s = entry["scale"]
            if s == 0:
                return None  # leave the base output untouched, bit for bit
            sample = kwargs.get("sample", args[0] if args else None)
            timestep = kwargs.get("timestep", args[1] if len(args) > 1 else None)
            context = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
            delta = self.module(sample, timestep, context)
            if isinstance(output, tuple):
                return (output[0] + s * delta,) + tuple(output[1:])
            output.sample = output.sample + s * delta
            return output

        return hook

    def set_scale(self, pipe: Any, scale: float) -> None:
        unet = _unet_of(pipe)
        entry = self._entry(unet)
        entry["scale"] = float(scale)
        if self.adapter.kind != "lora":
            return
        if "fused" in entry:  # fold again at the new scale, from the exact base weights
            self._unmerge(unet, entry)
            self._inject(unet, float(scale))
            self._merge(unet, entry)
        else:
            set_lora_scale(unet, float(scale))

    def _entry(self, unet: nn.Module) -> dict[str, Any]:
        if id(unet) not in self._attached:
            raise InvgenModelError("this adapter is not attached to that pipeline")
        return self._attached[id(unet)]

    def fuse(self, pipe: Any) -> None:
        """Fold a LoRA adapter attached with `fuse=False` into the UNet's weights at its current scale."""
        unet = _unet_of(pipe)
        entry = self._entry(unet)
        if self.adapter.kind != "lora":
            raise InvgenModelError(f"only LoRA adapters can be fused, this one is '{self.adapter.kind}'")
        if "fused" not in entry:
            self._merge(unet, entry)

    def detach(self, pipe: Any) -> Any:
        """Remove the adapter: `pipe.unet` computes exactly what it computed before `attach`."""
        unet = _unet_of(pipe)
        entry = self._entry(unet)
        if "hook" in entry:
            entry["hook"].remove()
        elif "fused" in entry:
            self._unmerge(unet, entry)
        else:
            remove_lora(unet)
        del self._attached[id(unet)]
        unet._invgen_guidance = None
        return pipe

    # ------------------------------------------------------------------ save / load
    def _weights(self) -> dict[str, torch.Tensor]:
        if self.adapter.kind == "lora":
            if self.lora_weights is None:
                raise InvgenModelError("this LoRA adapter has no weights yet")
            return self.lora_weights
        return {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write `invgen_guidance.json` and `adapter.safetensors` (atomically) into `path`."""
        from safetensors.torch import save

        from invgen.atomic import atomic_file

        path = Path(path)
        config = {
            "kind": self.adapter.kind,
            "adapter": asdict(self.adapter),
            "signature": self.signature,
            "base_model": self.base_model,
            "info": self.info,
        }
        if self.adapter.kind == "residual":
            config["module_config"] = dict(self.module.config)
        if self.adapter.kind == "copy":
            config["module_config"] = {"_class_name": type(self.module.unet).__name__, **dict(self.module.unet.config)}
        path.mkdir(parents=True, exist_ok=True)
        # An older adapter's config goes first, so a save killed halfway never pairs it with new weights.
        (path / CONFIG_NAME).unlink(missing_ok=True)
        with atomic_file(path / WEIGHTS_NAME, "wb") as f:
            f.write(save(self._weights()))
        # The config is written last: a folder with it holds a complete adapter.
        with atomic_file(path / CONFIG_NAME) as f:
            json.dump(config, f, indent=2, default=_json_default)
        return path

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> InvariantGuidance:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        cfg_path = path / CONFIG_NAME
        if not cfg_path.is_file():
            raise InvgenModelError(f"no invgen adapter in {path} (missing {CONFIG_NAME})")
        try:
            config = json.loads(cfg_path.read_text())
            adapter = AdapterConfig(**config["adapter"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise InvgenModelError(f"{cfg_path}: not a valid adapter config ({e})") from None
        try:
            weights = load_file(path / WEIGHTS_NAME)
        except (SafetensorError, OSError, ValueError) as e:
            raise InvgenModelError(f"{path / WEIGHTS_NAME}: unreadable or corrupt weights ({e})") from None
        module = None
        lora = None
        if adapter.kind == "lora":
            lora = weights
        elif adapter.kind == "residual":
            module = ResidualAdapter.from_config(config["module_config"])
            _load_strict(module, weights, path / WEIGHTS_NAME)
        else:
            import diffusers

            mc = dict(config["module_config"])
            unet_cls = getattr(diffusers, mc.pop("_class_name"))
            module = UNetCopyAdapter(unet_cls.from_config(mc), zero_init=False)
            _load_strict(module, weights, path / WEIGHTS_NAME)
        module = module.eval() if module is not None else None
        return cls(adapter, config["signature"], module, lora, config.get("base_model"), config.get("info"))


def _load_strict(module: nn.Module, weights: dict[str, torch.Tensor], where: Path) -> None:
    try:
        module.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise InvgenModelError(f"{where}: weights do not match the adapter ({str(e).splitlines()[0]})") from None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)
