"""An adapter folder on disk, written atomically and validated in full when read.

A folder holds `invgen_guidance.json` (the adapter config, the denoiser family and signature it was trained
for, its base model and training info) and one weights file:

- LoRA: `pytorch_lora_weights.safetensors`, written by the family's diffusers loader mixin
  (`StableDiffusionLoraLoaderMixin.save_lora_weights` and its SDXL/SD3/Flux siblings) with the LoRA config in
  the file's metadata, so a plain `pipe.load_lora_weights(folder)` loads it with its alpha.
- residual and copy: `adapter.safetensors`, the module's state dict (invgen's own format: they are not LoRAs).

Folders of the previous format (`format_version` absent: LoRA tensors in `adapter.safetensors` under peft's
key names) still load. Reading refuses, in one sentence naming the file and field, anything that would
otherwise load as something else: a config field out of range, a missing, extra, misshapen or non-finite
tensor, LoRA metadata that disagrees with the config.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from invgen.errors import InvgenConfigError, InvgenModelError
from invgen.invdiff.adapter import AdapterConfig, ResidualAdapter, UNetCopyAdapter, lora_config
from invgen.models.adapter_files import CONFIG_NAME, LORA_WEIGHTS_NAME, MODULE_WEIGHTS_NAME
from invgen.models.denoisers import DENOISER_CLASSES, FAMILIES, denoiser_attr

FORMAT_VERSION = 2
_COPY_CLASSES = ("UNet2DConditionModel",)


@dataclass
class AdapterFolder:
    """What a folder holds, checked: LoRA tensors under peft's key names (no `unet.` prefix) or the module."""

    adapter: AdapterConfig
    signature: dict[str, Any]
    family: str | None
    base_model: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    lora_weights: dict[str, torch.Tensor] | None = None
    module: nn.Module | None = None
    weights_path: Path | None = None


# ------------------------------------------------------------------------------------------------ writing
def write_adapter_folder(path: str | os.PathLike, folder: AdapterFolder) -> Path:
    """Write the weights, then the config (a folder with a config holds a complete adapter)."""
    from safetensors.torch import save

    from invgen.atomic import atomic_file, write_json

    path = Path(path)
    kind = folder.adapter.kind
    config: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "family": folder.family,
        "weights": LORA_WEIGHTS_NAME if kind == "lora" else MODULE_WEIGHTS_NAME,
        "adapter": asdict(folder.adapter),
        "signature": folder.signature,
        "base_model": folder.base_model,
        "info": folder.info,
    }
    if kind == "residual":
        config["module_config"] = {k: v for k, v in folder.module.config.items() if not k.startswith("_")}
    elif kind == "copy":
        config["module_config"] = {"_class_name": type(folder.module.unet).__name__, **dict(folder.module.unet.config)}
    config = json.loads(json.dumps(config, default=_json_default))
    path.mkdir(parents=True, exist_ok=True)
    # An older adapter's config goes first, so a save killed halfway never pairs it with new weights; so does
    # an older invgen adapter's weights file of the other format, which `load_lora_weights` could pick up.
    if (path / CONFIG_NAME).is_file():
        (path / CONFIG_NAME).unlink()
        (path / (MODULE_WEIGHTS_NAME if kind == "lora" else LORA_WEIGHTS_NAME)).unlink(missing_ok=True)
    if kind == "lora":
        _write_lora_file(path, folder)
    else:
        state = {k: v.detach().cpu().contiguous() for k, v in folder.module.state_dict().items()}
        with atomic_file(path / MODULE_WEIGHTS_NAME, "wb") as f:
            f.write(save(state))
    write_json(path / CONFIG_NAME, config)
    return path


def _write_lora_file(path: Path, folder: AdapterFolder) -> None:
    """`save_lora_weights` of the family's pipelines, into a temporary name moved into place when complete."""
    from invgen.invdiff.lora import loader_mixin, lora_metadata

    attr = denoiser_attr(folder.family)
    tmp = f".{LORA_WEIGHTS_NAME}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        loader_mixin(folder.family).save_lora_weights(
            path,
            weight_name=tmp,
            **{f"{attr}_lora_layers": folder.lora_weights,
               f"{attr}_lora_adapter_metadata": lora_metadata(lora_config(folder.adapter))},
        )
        with open(path / tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(path / tmp, path / LORA_WEIGHTS_NAME)
    finally:
        (path / tmp).unlink(missing_ok=True)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (tuple, set)):
        return list(obj)
    return str(obj)


# ------------------------------------------------------------------------------------------------ reading
def read_adapter_folder(path: str | os.PathLike) -> AdapterFolder:
    path = Path(path)
    cfg_path = path / CONFIG_NAME
    if not cfg_path.is_file():
        raise InvgenModelError(f"no invgen adapter in {path} (missing {CONFIG_NAME})")
    raw = _read_config(cfg_path)
    adapter = _adapter_config(raw, cfg_path)
    version = raw.get("format_version", 1)
    family = raw.get("family")

    def bad(name: str, message: str) -> InvgenModelError:
        return InvgenModelError(f"{cfg_path}: {name}: {message}")

    if version not in (1, FORMAT_VERSION):
        raise bad("format_version", f"{version!r} is not a format this invgen reads (1 or {FORMAT_VERSION})")
    if raw.get("kind", adapter.kind) != adapter.kind:
        raise bad("kind", f"'{raw.get('kind')}' disagrees with adapter.kind '{adapter.kind}'")
    signature = raw.get("signature")
    if not isinstance(signature, dict) or not signature:
        raise bad("signature", "missing: the config must record the denoiser the adapter was trained for")
    if signature.get("class") not in DENOISER_CLASSES:
        raise bad("signature.class", f"'{signature.get('class')}' is not a denoiser class invgen supports "
                                     f"({', '.join(DENOISER_CLASSES)})")
    if version >= 2 and family not in FAMILIES:
        raise bad("family", f"must be one of {', '.join(FAMILIES)}, got {family!r}")
    if adapter.kind == "lora" and adapter.target_modules is None:
        raise bad("adapter.target_modules", "missing: a saved LoRA must list the modules it wraps")
    info = raw.get("info") or {}
    if not isinstance(info, dict):
        raise bad("info", f"must be a mapping, got {info!r}")
    base_model = raw.get("base_model")
    folder = AdapterFolder(adapter, signature, family if version >= 2 else None,
                           str(base_model) if base_model else None, info)

    if adapter.kind == "lora":
        weights_path = path / (LORA_WEIGHTS_NAME if version >= 2 else MODULE_WEIGHTS_NAME)
        tensors, metadata = _read_tensors(weights_path)
        prefix = denoiser_attr(family) if version >= 2 else None
        folder.lora_weights = _check_lora_tensors(tensors, metadata, adapter, prefix, weights_path)
    else:
        weights_path = path / MODULE_WEIGHTS_NAME
        folder.module = _build_module(raw, adapter.kind, cfg_path)
        tensors, _ = _read_tensors(weights_path)
        _load_module(folder.module, tensors, weights_path)
        folder.module.eval()
    folder.weights_path = weights_path
    return folder


def _read_config(cfg_path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(cfg_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvgenModelError(f"{cfg_path}: not a valid adapter config ({e})") from None
    if not isinstance(raw, dict):
        raise InvgenModelError(f"{cfg_path}: not a valid adapter config (expected a JSON object)")
    return raw


def _adapter_config(raw: dict[str, Any], cfg_path: Path) -> AdapterConfig:
    section = raw.get("adapter")
    if not isinstance(section, dict):
        raise InvgenModelError(f"{cfg_path}: adapter: missing or not a mapping")
    known = {f.name for f in fields(AdapterConfig)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise InvgenModelError(f"{cfg_path}: adapter.{unknown[0]}: unknown field (known: {', '.join(sorted(known))})")
    adapter = AdapterConfig(**section)
    try:
        adapter.validate()
    except InvgenConfigError as e:
        raise InvgenModelError(f"{cfg_path}: {e}") from None
    return adapter


def _read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise InvgenModelError(f"{path}: missing (the adapter folder is incomplete)")
    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InvgenModelError(f"{path}: unreadable or corrupt weights ({first})") from None
    if not tensors:
        raise InvgenModelError(f"{path}: holds no tensors")
    for key, value in tensors.items():
        if not value.is_floating_point():
            raise InvgenModelError(f"{path}: {key} is {value.dtype}, expected floating-point weights")
        if not torch.isfinite(value).all():
            raise InvgenModelError(f"{path}: {key} holds non-finite values (NaN or inf)")
    return tensors, metadata


def _check_lora_tensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str], adapter: AdapterConfig,
                        prefix: str | None, path: Path) -> dict[str, torch.Tensor]:
    """Every tensor a pair of a rank-`adapter.rank` LoRA on a target module; returns them under peft's names."""
    # Messages name tensors as the file does (with the prefix); the weights returned use peft's names.
    lead = f"{prefix}." if prefix is not None else ""
    weights = {}
    for key, value in tensors.items():
        if not key.startswith(lead):
            raise InvgenModelError(f"{path}: {key} is not a tensor of the {prefix}'s LoRA")
        weights[key[len(lead):]] = value
    rank = adapter.rank
    modules = set()
    for key, value in weights.items():
        module, _, kind = key.rpartition(".lora_")
        if kind not in ("A.weight", "B.weight") or not module:
            raise InvgenModelError(f"{path}: {lead}{key} is not a LoRA tensor (lora_A.weight or lora_B.weight)")
        modules.add(module)
        r = value.shape[0] if kind == "A.weight" else (value.shape[1] if value.ndim > 1 else None)
        if value.ndim not in (2, 4) or r != rank:
            raise InvgenModelError(f"{path}: {lead}{key} has shape {list(value.shape)}, not that of a rank-{rank} "
                                   f"LoRA (adapter.rank in {CONFIG_NAME})")
    for module in sorted(modules):
        for half in ("lora_A", "lora_B"):
            if f"{module}.{half}.weight" not in weights:
                raise InvgenModelError(f"{path}: {lead}{module}.{half}.weight is missing (each LoRA layer needs "
                                       "its lora_A and lora_B)")
    targets = adapter.target_modules or []
    for module in sorted(modules):
        if not any(module == t or module.endswith(f".{t}") for t in targets):
            raise InvgenModelError(f"{path}: {lead}{module} is not one of adapter.target_modules {targets}")
    for t in targets:
        if not any(m == t or m.endswith(f".{t}") for m in modules):
            raise InvgenModelError(f"{path}: adapter.target_modules names '{t}' but the file has no tensor for it")
    if prefix is not None:
        _check_lora_metadata(metadata, adapter, prefix, path)
    return weights


def _check_lora_metadata(metadata: dict[str, str], adapter: AdapterConfig, prefix: str, path: Path) -> None:
    from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY

    raw = metadata.get(LORA_ADAPTER_METADATA_KEY)
    if not raw:
        raise InvgenModelError(f"{path}: no LoRA config in its metadata ({LORA_ADAPTER_METADATA_KEY}), so "
                               "diffusers could not know its alpha; save the adapter again")
    try:
        lora = {k[len(prefix) + 1:]: v for k, v in json.loads(raw).items() if k.startswith(f"{prefix}.")}
    except (json.JSONDecodeError, AttributeError):
        raise InvgenModelError(f"{path}: {LORA_ADAPTER_METADATA_KEY} in its metadata is not valid JSON") from None
    targets = lora.get("target_modules")
    checks = (("r", "rank", adapter.rank, lora.get("r")),
              ("lora_alpha", "alpha", adapter.alpha, lora.get("lora_alpha")),
              ("target_modules", "target_modules", sorted(adapter.target_modules),
               sorted(map(str, targets)) if isinstance(targets, list) else targets))
    for meta_key, field_name, value, found in checks:
        if found != value:
            raise InvgenModelError(f"{path}: its LoRA metadata says {meta_key} = {found!r} but "
                                   f"{CONFIG_NAME} says adapter.{field_name} = {value!r}")


def _build_module(raw: dict[str, Any], kind: str, cfg_path: Path) -> nn.Module:
    import diffusers
    from diffusers.models.modeling_utils import ModelMixin

    mc = raw.get("module_config")
    if not isinstance(mc, dict):
        raise InvgenModelError(f"{cfg_path}: module_config: missing or not a mapping (a {kind} adapter needs it)")
    mc = dict(mc)
    try:
        if kind == "residual":
            return ResidualAdapter.from_config(mc)
        name = mc.pop("_class_name", None)
        cls = getattr(diffusers, name, None) if isinstance(name, str) else None
        if name not in _COPY_CLASSES or not (isinstance(cls, type) and issubclass(cls, ModelMixin)):
            raise InvgenModelError(f"{cfg_path}: module_config._class_name: '{name}' is not a UNet class a copy "
                                   f"adapter can be ({', '.join(_COPY_CLASSES)})")
        return UNetCopyAdapter(cls.from_config(mc), zero_init=False)
    except (TypeError, ValueError, RuntimeError, KeyError) as e:
        raise InvgenModelError(f"{cfg_path}: module_config: cannot build the {kind} adapter from it ({e})") from None


def _load_module(module: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise InvgenModelError(f"{path}: {missing[0]} is missing ({len(missing)} of {len(expected)} tensors)")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise InvgenModelError(f"{path}: {extra[0]} is not a tensor of this adapter")
    for key, value in expected.items():
        if tensors[key].shape != value.shape:
            raise InvgenModelError(f"{path}: size mismatch for {key}: {list(tensors[key].shape)} in the file, "
                                   f"{list(value.shape)} expected")
        if tensors[key].dtype != value.dtype:
            raise InvgenModelError(f"{path}: {key} is {tensors[key].dtype}, expected {value.dtype}")
    module.load_state_dict(tensors, strict=True)
