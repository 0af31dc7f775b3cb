"""The file names of an invgen adapter folder (written and read by `invgen.invdiff.saving`), kept below the
pipelines so that a pipeline's `load_lora_weights` can recognise such a folder without importing InvDiff."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from invgen.errors import InvgenModelError

CONFIG_NAME = "invgen_guidance.json"
LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE
MODULE_WEIGHTS_NAME = "adapter.safetensors"


def refuse_non_lora(source: Any) -> None:
    """For `load_lora_weights`: an invgen folder whose weights are not a diffusers LoRA gets one sentence."""
    if not isinstance(source, (str, os.PathLike)) or not (Path(source) / CONFIG_NAME).is_file():
        return
    folder = Path(source)
    try:
        raw = json.loads((folder / CONFIG_NAME).read_text())
        kind = raw.get("kind") or (raw.get("adapter") or {}).get("kind")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return  # not readable as invgen's: diffusers says what it makes of the folder
    how = f"attach it with InvariantGuidance.from_pretrained('{folder}').attach(pipe)"
    if kind in ("residual", "copy"):
        raise InvgenModelError(f"{folder} holds an invgen {kind} adapter, which is not a LoRA: {how}")
    if kind == "lora" and not (folder / LORA_WEIGHTS_NAME).is_file():
        raise InvgenModelError(f"{folder} holds an invgen LoRA in the previous format ({MODULE_WEIGHTS_NAME}): {how}, "
                               "or save it again with save_pretrained for a diffusers LoRA file")
