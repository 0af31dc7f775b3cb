"""invgen's LoRA adapters as diffusers adapters on the denoiser (`pipe.unet` or `pipe.transformer`).

Everything goes through diffusers' `PeftAdapterMixin` (`load_lora_adapter`, `add_adapter`, `set_adapters`,
`set_adapter`, `fuse_lora`, `delete_adapters`, `unload_lora`), so an invgen adapter sits beside a user's own
LoRAs like any other named adapter. Three things diffusers leaves to the caller are done here:

- Loading or `set_adapters` makes the named adapters the only active ones; invgen keeps the user's active
  adapters active (with their per-layer weights untouched) by re-activating them with `set_adapter`.
- Folding (`fuse_lora`) at a scale is not exactly undone by `unfuse_lora`'s subtraction, so the weights a fold
  changes are copied to the CPU first and copied back to detach.
- A fold leaves the layer "merged", and a merged peft layer skips its unmerged adapters; after folding, the
  adapter is deleted and its name dropped from the layers' merged list so a user's unfused LoRA still applies.

When the last adapter goes, `unload_lora` puts the plain layers back, so the denoiser is the module it was;
while others stay, only the layers no adapter wraps any more are unwrapped.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from invgen.errors import InvgenModelError
from invgen.models.denoisers import denoiser_word


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # peft warns about a second adapter and about layers merged before; both are intended here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def loaded_adapters(denoiser: nn.Module) -> list[str]:
    """The adapters diffusers holds on the denoiser (`peft_config`), in load order."""
    if not getattr(denoiser, "_hf_peft_config_loaded", False):
        return []
    return list(getattr(denoiser, "peft_config", {}) or {})


def active_adapters(denoiser: nn.Module) -> list[str]:
    if not loaded_adapters(denoiser):
        return []
    active = denoiser.active_adapters() or []
    return [active] if isinstance(active, str) else list(active)


def _tuner_layers(denoiser: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in denoiser.named_modules():
        if isinstance(module, BaseTunerLayer):
            yield name, module


def lora_metadata(config) -> dict[str, Any]:
    """A `LoraConfig` as the JSON-ready dict diffusers stores in a LoRA file (sets as lists, enums as names)."""
    return json.loads(json.dumps(config.to_dict(), default=lambda v: sorted(v) if isinstance(v, set) else str(v)))


# ------------------------------------------------------------------------------------------------ validation
def target_names(denoiser: nn.Module, config) -> list[str]:
    """The modules of `denoiser` a `LoraConfig` targets, by peft's own matching rule."""
    from peft.tuners.tuners_utils import check_target_module_exists

    return [name for name, _ in denoiser.named_modules()
            if name and ".lora_" not in f".{name}" and not name.endswith("base_layer")
            and check_target_module_exists(config, name)]


def unmatched_targets(denoiser: nn.Module, targets: list[str]) -> list[str]:
    """Entries of `target_modules` that name no module of `denoiser`."""
    from peft import LoraConfig

    return [t for t in targets if not target_names(denoiser, LoraConfig(target_modules=[t]))]


def expected_shapes(denoiser: nn.Module, config) -> dict[str, tuple[int, ...]]:
    """Every tensor a LoRA with `config` has on `denoiser` (peft's key names) and its shape."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    r, shapes = config.r, {}
    for name in target_names(denoiser, config):
        module = denoiser.get_submodule(name)
        base = module.get_base_layer() if isinstance(module, BaseTunerLayer) else module
        if isinstance(base, nn.Linear):
            a, b = (r, base.in_features), (base.out_features, r)
        elif isinstance(base, nn.Conv2d) and base.groups == 1:
            a, b = (r, base.in_channels, *base.kernel_size), (base.out_channels, r, 1, 1)
        else:
            raise InvgenModelError(
                f"the adapter targets {name}, a {type(base).__name__} layer a LoRA cannot wrap"
            )
        shapes[f"{name}.lora_A.weight"], shapes[f"{name}.lora_B.weight"] = a, b
    return shapes


def check_fits(denoiser: nn.Module, config, weights: dict[str, torch.Tensor], where: str) -> None:
    """Refuse, in one sentence, LoRA weights that are not exactly the tensors `config` puts on `denoiser`."""
    expected = expected_shapes(denoiser, config)
    word = denoiser_word(denoiser)
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise InvgenModelError(f"{where}: the adapter does not fit this {word}: it has no tensor {missing[0]} "
                               f"({len(missing)} of {len(expected)} expected tensors missing)")
    extra = sorted(set(weights) - set(expected))
    if extra:
        raise InvgenModelError(f"{where}: the adapter does not fit this {word}: it has a tensor {extra[0]} "
                               f"for a layer this {word} does not have")
    for key, shape in expected.items():
        if tuple(weights[key].shape) != shape:
            raise InvgenModelError(
                f"{where}: the adapter does not fit this {word}: size mismatch for {key}: "
                f"{list(weights[key].shape)} in the file, {list(shape)} in this {word}"
            )


# ------------------------------------------------------------------------------------------------ add / remove
def add_lora(denoiser: nn.Module, name: str, config, weights: dict[str, torch.Tensor] | None = None,
             pipe: Any = None) -> None:
    """Add adapter `name` (fresh when `weights` is None) as diffusers would load it; leaves the active set as
    `load_lora_adapter`/`add_adapter` leave it (only `name` active): callers activate with `activate`."""
    with _quiet():
        if weights is None:
            denoiser.add_adapter(config, adapter_name=name)
        else:
            denoiser.load_lora_adapter(dict(weights), prefix=None, adapter_name=name,
                                       metadata=lora_metadata(config), _pipeline=pipe)


def activate(denoiser: nn.Module, names: list[str]) -> None:
    """Make exactly `names` active without touching any adapter's weight."""
    if loaded_adapters(denoiser):
        with _quiet():
            denoiser.set_adapter(list(names))


def set_weight(denoiser: nn.Module, name: str, weight: float, active: list[str]) -> None:
    """Set adapter `name`'s weight (diffusers' `set_adapters`), then make `active` the active set again."""
    with _quiet():
        denoiser.set_adapters([name], [float(weight)])
    activate(denoiser, active)


def remove_lora(denoiser: nn.Module, name: str) -> None:
    """Delete adapter `name`; the other adapters stay loaded and the active ones active. When none is left the
    peft wrappers are removed too, so the denoiser holds its plain layers again."""
    keep = [a for a in active_adapters(denoiser) if a != name]
    with _quiet():
        if name in loaded_adapters(denoiser):
            denoiser.delete_adapters(name)
        for _, layer in _tuner_layers(denoiser):
            if name in layer.merged_adapters:
                layer.merged_adapters.remove(name)  # peft keeps a deleted adapter's name there (see above)
        if loaded_adapters(denoiser):
            activate(denoiser, keep)
            _unwrap_empty(denoiser)
        elif any(True for _ in _tuner_layers(denoiser)):
            denoiser.unload_lora()


def _unwrap_empty(denoiser: nn.Module) -> None:
    """Put the plain layer back where a peft wrapper holds no adapter any more. `delete_adapters` leaves the
    wrapper (an identity around its layer, but with `base_layer` in every state-dict key) and `unload_lora`
    would unwrap the user's adapters too."""
    for name, layer in list(_tuner_layers(denoiser)):
        if not any(len(getattr(layer, attr, ())) for attr in layer.adapter_layer_names):
            parent, _, child = name.rpartition(".")
            setattr(denoiser.get_submodule(parent) if parent else denoiser, child, layer.get_base_layer())


def trainable_parameters(denoiser: nn.Module, name: str) -> list[nn.Parameter]:
    """Freeze the denoiser except adapter `name`'s LoRA tensors; return those."""
    denoiser.requires_grad_(False)
    params = []
    for key, p in denoiser.named_parameters():
        if ".lora_" in key and key.endswith(f".{name}.weight"):
            p.requires_grad_(True)
            params.append(p)
    return params


def lora_state_dict(denoiser: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """Adapter `name`'s tensors under peft's key names, as contiguous CPU copies."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(denoiser, adapter_name=name)
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


# ------------------------------------------------------------------------------------------------ fold / restore
def fold(denoiser: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """Fold adapter `name` (at its current weight) into the layers it wraps with `fuse_lora`, then remove it.

    Returns CPU copies of the weights the fold changed, for `restore`.
    """
    weights = {layer_name: layer.get_base_layer().weight.detach()
               for layer_name, layer in _tuner_layers(denoiser) if name in layer.lora_A}
    # One buffer for the copies, not one allocation per layer: hundreds of 1-60 MB blocks held while the
    # folded model samples change where the allocator puts each call's activations, and an SD 1.5 call on the
    # CPU took 1.25x as long as the same call unfolded, all of it in page faults (scripts/bench_scale.py).
    originals = {}
    for dtype in {w.dtype for w in weights.values()}:  # one per dtype: the copies stay exact
        same = {k: w for k, w in weights.items() if w.dtype == dtype}
        flat, start = torch.empty(sum(w.numel() for w in same.values()), dtype=dtype), 0
        for layer_name, w in same.items():
            originals[layer_name] = flat[start:start + w.numel()].view(w.shape)
            originals[layer_name].copy_(w)
            start += w.numel()
    with _quiet():
        denoiser.fuse_lora(adapter_names=[name])
    remove_lora(denoiser, name)
    return originals


def restore(denoiser: nn.Module, originals: dict[str, torch.Tensor]) -> None:
    """Copy the weights `fold` saved back into their layers (wrapped by a user's adapter or plain)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    with torch.no_grad():
        for layer_name, weight in originals.items():
            layer = denoiser.get_submodule(layer_name)
            layer = layer.get_base_layer() if isinstance(layer, BaseTunerLayer) else layer
            layer.weight.copy_(weight)


# ------------------------------------------------------------------------------------------------ file format
def loader_mixin(family: str):
    """The diffusers LoRA loader mixin of a family's pipelines (their `save_lora_weights`/`load_lora_weights`)."""
    from diffusers.loaders import (
        FluxLoraLoaderMixin,
        SD3LoraLoaderMixin,
        StableDiffusionLoraLoaderMixin,
        StableDiffusionXLLoraLoaderMixin,
    )

    return {"sd": StableDiffusionLoraLoaderMixin, "sdxl": StableDiffusionXLLoraLoaderMixin,
            "sd3": SD3LoraLoaderMixin, "flux": FluxLoraLoaderMixin}[family]
