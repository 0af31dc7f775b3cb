"""`InvariantGuidance`: a trained adapter that corrects a frozen diffusion model's noise prediction.

    guidance = InvariantGuidance.from_pretrained("runs/digits/invdiff")
    guidance.attach(pipe, scale=1.0)    # any diffusers pipeline with a `unet` or a `transformer`
    images = pipe(prompts).images
    guidance.detach(pipe)               # pipe computes exactly what it computed before

    with guidance.attached(pipe, scale=0.8):   # the same, detached even when the block raises
        images = pipe(prompts).images

The guided prediction is ε̂ = ε_base(x_t, t, c) + s · Δ(x_t, t, c). A `lora` adapter is a diffusers adapter
on the denoiser, named "invgen" by default (`invgen/invdiff/lora.py`): Δ is the difference it makes and s its
weight, exact at s = 0 and s = 1, first order in between. It stacks with a user's own LoRAs, which stay
active with their weights, and its folder loads in plain diffusers with `pipe.load_lora_weights(folder)`.
`residual` and `copy` adapters are separate networks added to a UNet's output by a forward hook, so the
formula holds exactly for every s.

The scale s must be finite with |s| ≤ 10 (`MAX_SCALE`); the adapter was trained at s = 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from invgen.config import SCALE_LIMIT, check_number
from invgen.errors import InvgenConfigError, InvgenModelError
from invgen.invdiff import lora
from invgen.invdiff.adapter import (
    ADAPTER_NAME,
    AdapterConfig,
    ResidualAdapter,
    UNetCopyAdapter,
    default_target_modules,
    lora_config,
)
from invgen.invdiff.guided import GuidedDenoiser, GuidedUNet, add_delta, unet_inputs
from invgen.invdiff.saving import CONFIG_NAME, AdapterFolder, read_adapter_folder, write_adapter_folder
from invgen.models.denoisers import denoiser_family, denoiser_of, denoiser_signature, denoiser_word

MAX_SCALE = SCALE_LIMIT  # 10: far beyond any useful value, well before overflow
_REGISTRY = "_invgen_adapters"  # on the denoiser: adapter name -> what `attach` did there

__all__ = ["ADAPTER_NAME", "CONFIG_NAME", "MAX_SCALE", "GuidedDenoiser", "GuidedUNet", "InvariantGuidance",
           "attached_adapters"]


def _registry(denoiser: nn.Module) -> dict[str, dict[str, Any]]:
    return getattr(denoiser, _REGISTRY, None) or {}


def attached_adapters(pipe: Any) -> dict[str, InvariantGuidance]:
    """The invgen adapters attached to a pipeline (or denoiser), by adapter name."""
    return {name: entry["guidance"] for name, entry in _registry(denoiser_of(pipe)).items()}


def _unfold_from(denoiser: nn.Module, name: str) -> list[str]:
    """Restore the weights from before adapter `name` was folded. Adapters folded after it saved weights that
    include its fold, so they are restored first (newest first); returns their names, to fold them again."""
    registry = _registry(denoiser)
    names = list(registry)
    later = [n for n in names[names.index(name) + 1:] if registry[n]["fused"] is not None]
    for n in [*reversed(later), name]:
        lora.restore(denoiser, registry[n]["fused"])
        registry[n]["fused"] = None
    return later


def _refold(denoiser: nn.Module, names: list[str], pipe: Any) -> None:
    registry = _registry(denoiser)
    for n in names:
        entry = registry[n]
        entry["fused"] = entry["guidance"]._add_lora(denoiser, n, entry["scale"], True, pipe)


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
        family: str | None = None,
        source: str | None = None,
    ):
        self.adapter = adapter
        self.signature = signature
        self.module = module
        self.lora_weights = lora_weights  # peft's key names, no "unet."/"transformer." prefix
        self.base_model = base_model
        self.info = info or {}
        self.family = family  # None: an adapter of the previous format, for any UNet family
        self.source = source  # the weights file it was read from, for messages

    def __repr__(self) -> str:
        where = f" from {self.source}" if self.source else ""
        return f"InvariantGuidance({self.adapter.kind}, family={self.family}{where})"

    # ------------------------------------------------------------------ construction and training
    @classmethod
    def for_denoiser(cls, denoiser: Any, adapter: AdapterConfig, base_model: str | None = None) -> InvariantGuidance:
        """A fresh (untrained, Δ = 0) adapter shaped for `denoiser` (a pipeline's `unet`/`transformer`)."""
        denoiser = denoiser_of(denoiser)
        adapter.validate()
        family = denoiser_family(denoiser)
        word = denoiser_word(denoiser)
        adapter = dataclasses.replace(adapter)
        module = None
        if adapter.kind == "lora":
            if adapter.target_modules is None:
                defaults = default_target_modules(family)
                missing = set(lora.unmatched_targets(denoiser, defaults))
                adapter.target_modules = [t for t in defaults if t not in missing]
            else:
                unknown = lora.unmatched_targets(denoiser, adapter.target_modules)
                if unknown:
                    raise InvgenConfigError(f"adapter.target_modules: '{unknown[0]}' names no layer of this {word} "
                                            f"({type(denoiser).__name__})")
            if not adapter.target_modules:
                raise InvgenConfigError(f"adapter.target_modules: no default target exists in this {word}; list some")
        elif family not in ("sd", "sdxl"):
            raise InvgenConfigError(f"adapter.kind: a {adapter.kind} adapter works on UNet pipelines only; "
                                    f"use lora for {family}")
        elif adapter.kind == "residual":
            cross = getattr(denoiser.config, "cross_attention_dim", None) or 32
            # Keyword arguments: diffusers' register_to_config records positional ones as "defaults", which
            # from_config would then replace by the defaults on load.
            module = ResidualAdapter(in_channels=denoiser.config.in_channels, channels=adapter.residual_channels,
                                     cross_attention_dim=cross)
        else:
            module = UNetCopyAdapter(denoiser)
        return cls(adapter, denoiser_signature(denoiser), module=module, base_model=base_model, family=family)

    def training_module(self, denoiser: Any) -> tuple[nn.Module, list[nn.Parameter]]:
        """The module to optimise (called like the denoiser, base frozen) and its trainable parameters.

        LoRA: the denoiser itself with the "invgen" adapter added (from `lora_weights` when there are some, to
        resume) and only its LoRA tensors trainable. residual/copy: a `GuidedDenoiser`.
        """
        denoiser = denoiser_of(denoiser)
        self._check_fits(denoiser)
        if self.adapter.kind == "lora":
            if ADAPTER_NAME in lora.loaded_adapters(denoiser):
                raise InvgenModelError(f"this {denoiser_word(denoiser)} already has an adapter named "
                                       f"'{ADAPTER_NAME}'; train on the base model")
            config = lora_config(self.adapter)
            if self.lora_weights is not None:
                lora.check_fits(denoiser, config, self.lora_weights, self._where())
            lora.add_lora(denoiser, ADAPTER_NAME, config, self.lora_weights)
            return denoiser, lora.trainable_parameters(denoiser, ADAPTER_NAME)
        denoiser.requires_grad_(False)
        self.module.requires_grad_(True)
        return GuidedDenoiser(denoiser, self.module), list(self.module.parameters())

    def collect(self, trained: nn.Module, release: bool = True) -> None:
        """Take the trained weights back from a `training_module` (after unwrapping); with `release`, the
        training adapter is then removed, leaving the base denoiser as it was."""
        if self.adapter.kind == "lora":
            denoiser = denoiser_of(trained)
            self.lora_weights = lora.lora_state_dict(denoiser, ADAPTER_NAME)
            if release:
                lora.remove_lora(denoiser, ADAPTER_NAME)
        else:
            self.module = trained.delta

    def num_parameters(self) -> int:
        if self.adapter.kind == "lora":
            return sum(v.numel() for v in self._lora_weights().values())
        return sum(p.numel() for p in self.module.parameters())

    def _lora_weights(self) -> dict[str, torch.Tensor]:
        if self.lora_weights is None:
            raise InvgenModelError("this LoRA adapter has no weights yet (train it or load it with from_pretrained)")
        return self.lora_weights

    def _where(self) -> str:
        return self.source or "the adapter"

    # ------------------------------------------------------------------ attach / detach
    def _check_fits(self, denoiser: nn.Module) -> None:
        family = denoiser_family(denoiser)
        word = denoiser_word(denoiser)
        if self.family is not None and self.family != family:
            raise InvgenModelError(f"this adapter was trained for the '{self.family}' model family, but this "
                                   f"pipeline is '{family}'")
        sig = denoiser_signature(denoiser)
        if self.signature.get("class") != sig["class"]:
            raise InvgenModelError(f"this adapter was trained for a {self.signature.get('class')}, but this "
                                   f"pipeline's denoiser is a {sig['class']}")
        diff = [k for k in self.signature if self.signature.get(k) != sig.get(k)]
        if diff:
            k = diff[0]
            raise InvgenModelError(
                f"this adapter was trained for another base model: {k} is {self.signature.get(k)} "
                f"for the adapter but {sig.get(k)} for this {word}"
            )

    def attach(self, pipe: Any, scale: float = 1.0, fuse: bool = True, adapter_name: str = ADAPTER_NAME) -> Any:
        """Add the adapter to the pipeline's denoiser (in place) with guidance scale `scale`; returns `pipe`.

        A LoRA becomes the diffusers adapter `adapter_name`, on top of any LoRA the pipeline already holds
        (those stay active with their weights). `fuse=True` (default) folds it into the weights so sampling
        costs what the base model costs; `detach` then copies back a CPU copy of the weights it changed, so
        the pipeline is restored bit for bit. `fuse=False` keeps it as a live adapter (`set_scale` is free,
        each call pays the LoRA matmuls). Two invgen adapters attach under two names. `scale` must be finite
        with |scale| ≤ 10. Anything refused is refused before the pipeline changes.
        """
        scale = check_number(scale, "adapter scale", -MAX_SCALE, MAX_SCALE)
        denoiser = denoiser_of(pipe)
        if not isinstance(adapter_name, str) or not adapter_name:
            raise InvgenModelError(f"adapter_name must be a non-empty string, got {adapter_name!r}")
        if adapter_name in _registry(denoiser) or adapter_name in lora.loaded_adapters(denoiser):
            raise InvgenModelError(f"this pipeline already has an adapter named '{adapter_name}'; detach it first "
                                   "or attach under another adapter_name")
        self._check_fits(denoiser)
        if self.family is None:  # an adapter of the previous format learns its family from its pipeline
            self.family = denoiser_family(denoiser)
        entry: dict[str, Any] = {"guidance": self, "scale": scale, "fused": None, "hook": None}
        if self.adapter.kind == "lora":
            weights = self._lora_weights()
            lora.check_fits(denoiser, lora_config(self.adapter), weights, self._where())
            entry["fused"] = self._add_lora(denoiser, adapter_name, scale, fuse, pipe)
        else:  # nothing to fold: the side network runs after the denoiser
            self.module.to(device=denoiser.device, dtype=denoiser.dtype).eval()
            entry["hook"] = denoiser.register_forward_hook(self._hook(entry), with_kwargs=True)
        setattr(denoiser, _REGISTRY, {**_registry(denoiser), adapter_name: entry})
        return pipe

    def _add_lora(self, denoiser: nn.Module, name: str, scale: float, fuse: bool, pipe: Any):
        """Load the LoRA as adapter `name` at weight `scale`; folded (returns the saved weights) or live (None)."""
        active = lora.active_adapters(denoiser)
        pipeline = pipe if pipe is not denoiser else None
        try:
            lora.add_lora(denoiser, name, lora_config(self.adapter), self._lora_weights(), pipeline)
            # At scale 0 the adapter stays out of the active set: the output is the base's, bit for bit.
            lora.set_weight(denoiser, name, scale, [*active, name] if scale != 0 else active)
            if not fuse:
                return None
            if scale == 0:
                lora.remove_lora(denoiser, name)
                return {}
            return lora.fold(denoiser, name)
        except (RuntimeError, ValueError, KeyError) as e:  # checked beforehand; leave the pipeline as it was
            if name in lora.loaded_adapters(denoiser):
                lora.remove_lora(denoiser, name)
            lora.activate(denoiser, active)
            raise InvgenModelError(f"{self._where()}: could not load the adapter ({str(e).strip()[:200]})") from None

    def _hook(self, entry: dict[str, Any]):
        def hook(module, args, kwargs, output):
            s = entry["scale"]
            if s == 0:
                return None  # leave the base output untouched, bit for bit
            return add_delta(output, s * self.module(*unet_inputs(args, kwargs)))

        return hook

    def _entry(self, pipe: Any, adapter_name: str | None) -> tuple[nn.Module, str, dict[str, Any]]:
        denoiser = denoiser_of(pipe)
        mine = {n: e for n, e in _registry(denoiser).items() if e["guidance"] is self}
        if adapter_name is None:
            if len(mine) > 1:
                raise InvgenModelError(f"this adapter is attached under several names ({', '.join(mine)}); "
                                       "pass adapter_name")
            adapter_name = next(iter(mine), ADAPTER_NAME)
        if adapter_name not in mine:
            raise InvgenModelError(f"this adapter is not attached to that pipeline as '{adapter_name}'")
        return denoiser, adapter_name, mine[adapter_name]

    def _lora_only(self, what: str) -> None:
        if self.adapter.kind != "lora":
            raise InvgenModelError(f"{what} applies to LoRA adapters only; this one is a '{self.adapter.kind}' "
                                   "adapter, a separate network added to the UNet's output")

    def set_scale(self, pipe: Any, scale: float, adapter_name: str | None = None) -> None:
        """Change the guidance scale of an attached adapter (a folded LoRA is folded again from the exact
        base weights)."""
        scale = check_number(scale, "adapter scale", -MAX_SCALE, MAX_SCALE)
        denoiser, name, entry = self._entry(pipe, adapter_name)
        if self.adapter.kind == "lora":
            if entry["fused"] is not None:
                later = _unfold_from(denoiser, name)
                entry["fused"] = self._add_lora(denoiser, name, scale, True, pipe)
                _refold(denoiser, later, pipe)
            else:
                active = [a for a in lora.active_adapters(denoiser) if a != name]
                lora.set_weight(denoiser, name, scale, [*active, name] if scale != 0 else active)
        entry["scale"] = scale

    def fuse(self, pipe: Any, adapter_name: str | None = None) -> None:
        """Fold a LoRA attached with `fuse=False` into the weights at its current scale."""
        self._lora_only("fuse")
        denoiser, name, entry = self._entry(pipe, adapter_name)
        if entry["fused"] is None:
            if entry["scale"] == 0:
                lora.remove_lora(denoiser, name)
                entry["fused"] = {}
            else:
                entry["fused"] = lora.fold(denoiser, name)

    def unfuse(self, pipe: Any, adapter_name: str | None = None) -> None:
        """Turn a folded LoRA back into a live adapter (the weights are restored exactly first)."""
        self._lora_only("unfuse")
        denoiser, name, entry = self._entry(pipe, adapter_name)
        if entry["fused"] is not None:
            later = _unfold_from(denoiser, name)
            entry["fused"] = self._add_lora(denoiser, name, entry["scale"], False, pipe)
            _refold(denoiser, later, pipe)

    def detach(self, pipe: Any, adapter_name: str | None = None) -> Any:
        """Remove the adapter: the denoiser computes exactly what it computed before `attach`, and any other
        adapter on it stays loaded and active."""
        denoiser, name, entry = self._entry(pipe, adapter_name)
        later: list[str] = []
        if entry["hook"] is not None:
            entry["hook"].remove()
        elif entry["fused"] is not None:
            later = _unfold_from(denoiser, name)
        else:
            lora.remove_lora(denoiser, name)
        remaining = {n: e for n, e in _registry(denoiser).items() if n != name}
        if remaining:
            setattr(denoiser, _REGISTRY, remaining)
        elif hasattr(denoiser, _REGISTRY):
            delattr(denoiser, _REGISTRY)
        _refold(denoiser, later, pipe)
        return pipe

    @contextlib.contextmanager
    def attached(self, pipe: Any, scale: float = 1.0, fuse: bool = True,
                 adapter_name: str = ADAPTER_NAME) -> Iterator[Any]:
        """`attach` for the length of a `with` block; detached when it ends, also when it raises."""
        self.attach(pipe, scale=scale, fuse=fuse, adapter_name=adapter_name)
        try:
            yield pipe
        finally:
            self.detach(pipe, adapter_name=adapter_name)

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write the adapter into folder `path` (atomically): a LoRA as diffusers' `pytorch_lora_weights.safetensors`
        (loadable with `pipe.load_lora_weights(path)`), residual/copy as `adapter.safetensors`, and
        `invgen_guidance.json` last."""
        if self.adapter.kind == "lora":
            self._lora_weights()
        if self.family is None:
            raise InvgenModelError("this adapter of the previous format records no model family; attach it to its "
                                   "pipeline once before saving it again")
        folder = AdapterFolder(self.adapter, self.signature, self.family, self.base_model, self.info,
                               lora_weights=self.lora_weights, module=self.module)
        return write_adapter_folder(path, folder)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> InvariantGuidance:
        """Read and check an adapter folder (this format or the previous one)."""
        folder = read_adapter_folder(path)
        return cls(folder.adapter, folder.signature, folder.module, folder.lora_weights, folder.base_model,
                   folder.info, family=folder.family, source=str(folder.weights_path))
