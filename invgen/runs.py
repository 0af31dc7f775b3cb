"""What a runs folder holds: the pipelines and InvDiff adapters that training wrote there.

A folder with `model_index.json` is a diffusers pipeline (`save_pretrained` writes that file last, so it
marks a complete one); a folder with `invgen_guidance.json` is an InvDiff adapter, whose config records
the base model it was trained on. The app and the CLI list these instead of asking for paths.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from invgen.invdiff.guidance import CONFIG_NAME as ADAPTER_CONFIG

if TYPE_CHECKING:
    from invgen.data.builders import SetDefaults

PIPELINE_INDEX = "model_index.json"
_SKIP_DIRS = {"checkpoints", "cache", "__pycache__"}  # trainer state and caches, never a user's model


@dataclass
class FoundModels:
    """Pipelines and adapters under a runs folder, as paths (strings, sorted); `adapters` maps each adapter
    to the base model its config records (None when it records none)."""

    pipelines: list[str] = field(default_factory=list)
    adapters: dict[str, str | None] = field(default_factory=dict)


def _adapter_base(folder: Path, runs_dir: Path) -> str | None:
    try:
        base = json.loads((folder / ADAPTER_CONFIG).read_text()).get("base_model")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    if not base:
        return None
    # Trainers record the base as given on their command line, usually relative to the directory they ran
    # in; when that is not where we run, the same path relative to the runs folder's parent is tried.
    if not Path(base).expanduser().exists() and (runs_dir.parent / base).is_dir():
        return str(runs_dir.parent / base)
    return str(base)


def find_models(runs_dir: str | os.PathLike, max_depth: int = 4) -> FoundModels:
    """Every pipeline and adapter folder under `runs_dir` (a missing folder holds none)."""
    root = Path(runs_dir).expanduser()
    found = FoundModels()
    if not root.is_dir():
        return found
    pipelines, adapters = [], {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        depth = len(here.relative_to(root).parts)
        if PIPELINE_INDEX in filenames:
            pipelines.append(str(here))
            dirnames[:] = []  # its subfolders are the pipeline's components
        elif ADAPTER_CONFIG in filenames:
            adapters[str(here)] = _adapter_base(here, root)
            dirnames[:] = []
        else:
            dirnames[:] = sorted(
                d for d in dirnames
                if d not in _SKIP_DIRS and not d.startswith(".") and not d.endswith(".tmp") and depth < max_depth
            )
    found.pipelines = sorted(pipelines)
    found.adapters = dict(sorted(adapters.items()))
    return found


def dataset_defaults(pipeline: str | os.PathLike) -> SetDefaults | None:
    """How to look at a pipeline trained on a built set (its classifier, prompts, classes, audit suite), as
    the set's builder says, read from the pipeline's `train_config.yaml`; None for any other pipeline."""
    config = Path(str(pipeline)).expanduser() / "train_config.yaml"
    if not config.is_file():
        return None
    import yaml

    try:
        data = (yaml.safe_load(config.read_text()) or {}).get("data") or {}
    except (yaml.YAMLError, AttributeError):
        return None
    name = data.get("builder") if isinstance(data, dict) else None
    if not isinstance(name, str):
        return None
    from invgen.data.builders import DATASETS
    from invgen.errors import InvgenError

    # Runs recorded before builders took `options` kept them beside `builder`.
    options = data["options"] if isinstance(data.get("options"), dict) else data
    try:
        return DATASETS.resolve(name).defaults(options)
    except InvgenError:  # a builder this installation does not know
        return None


def samples_defaults(samples: str | os.PathLike) -> SetDefaults | None:
    """`dataset_defaults` of the pipeline that sampled an image folder (named in its sampling manifest by
    `invgen sample`, the `evaluate` job, the audit); None when unknown."""
    from invgen.sampling import MANIFEST

    try:
        manifest = json.loads((Path(samples) / MANIFEST).read_text(encoding="utf-8"))
        pipeline = manifest["info"]["pipeline"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return dataset_defaults(pipeline) if isinstance(pipeline, str) and pipeline else None


def default_classifier(pipeline: str | os.PathLike) -> str | None:
    """The attribute classifier spec that fits a pipeline (the exact color oracle for a colored-digits model),
    or None: the caller decides."""
    found = dataset_defaults(pipeline)
    return found.classifier if found else None
