"""Load any diffusers pipeline from a local folder or a hub id, with one clear sentence on failure."""

from __future__ import annotations

import json
import os
from pathlib import Path

from invgen.errors import InvgenModelError, first_line


def looks_local(name: str) -> bool:
    # A hub id is "name" or "owner/name"; anything else can only be a folder. "runs/x" where runs/ is a
    # local folder is taken as a missing folder too: that is what a user typing it means.
    return (name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith("/")
            or (name.count("/") == 1 and Path(name).parent.is_dir()))


def load_pipeline(name_or_path: str | os.PathLike, torch_dtype=None, **kwargs):
    """Load a pipeline saved with `save_pretrained` (folder with `model_index.json`) or from the hub.

    invgen's own pipelines are resolved by class name, so `DiffusionPipeline` needs no custom-code hook.
    Offline, a hub id that is not in the local cache fails with one sentence instead of a stack of hub
    errors.
    """
    from diffusers import DiffusionPipeline

    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        index = path / "model_index.json"
        if not index.is_file():
            raise InvgenModelError(f"{path} is not a diffusers pipeline folder (no model_index.json)")
        try:
            class_name = json.loads(index.read_text()).get("_class_name", "")
        except json.JSONDecodeError as e:
            raise InvgenModelError(f"{index}: not valid JSON ({e.msg})") from None
        cls = _invgen_pipeline_class(class_name) or DiffusionPipeline
        try:
            return cls.from_pretrained(path, torch_dtype=torch_dtype, **kwargs)
        except (OSError, ValueError, KeyError) as e:
            raise InvgenModelError(f"could not load the pipeline in {path}: {first_line(e, 200)}") from None
    if looks_local(name) or path.exists():
        raise InvgenModelError(f"no pipeline folder at {path} (expected a folder written by save_pretrained)")
    try:
        return DiffusionPipeline.from_pretrained(name, torch_dtype=torch_dtype, **kwargs)
    except Exception as e:  # noqa: BLE001 - the hub raises many unrelated types; all mean "not loadable"
        raise InvgenModelError(
            f"could not load '{name}' from the Hugging Face Hub or its local cache ({first_line(e, 200)}); "
            "download it while online or pass a local folder"
        ) from None


def load_frozen_pipeline(name_or_path: str | os.PathLike, field: str, hint: str = ""):
    """`load_pipeline` for a config field, every module frozen (requires_grad off).

    A local folder that is missing or holds no pipeline is a config error naming the field and the path
    (`hint` may say how to make it); a hub id goes to `load_pipeline`.
    """
    from invgen.errors import InvgenConfigError

    name = str(name_or_path)
    path = Path(name).expanduser()
    if (path.exists() or looks_local(name)) and not (path / "model_index.json").is_file():
        raise InvgenConfigError(f"{field}: no trained pipeline at {path}{hint}")
    import torch

    pipe = load_pipeline(name)
    # Every module (a transformer, a second or third text encoder too): the base model is never trained here.
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False)
    return pipe


def _invgen_pipeline_class(class_name: str):
    from invgen import pipelines

    return getattr(pipelines, class_name, None)


def save_pipeline(pipe, path: str | os.PathLike) -> Path:
    """`pipe.save_pretrained(path)` that never leaves a half-written pipeline.

    `path` may hold other things (a trainer's checkpoints), so it is not replaced whole: the pipeline is
    written to a temporary folder and its parts moved in one by one, `model_index.json` (which marks a
    complete pipeline for `load_pipeline`) removed first and moved in last.
    """
    import shutil
    import tempfile

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".pipeline.", suffix=".tmp", dir=path))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        index = path / "model_index.json"
        if index.exists():
            index.unlink()
        for item in sorted(tmp.iterdir()):
            if item.name == "model_index.json":
                continue
            target = path / item.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
        os.replace(tmp / "model_index.json", index)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
