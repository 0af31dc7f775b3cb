"""`clip:PATH`: zero-shot attribute classification with open_clip and one prompt list per attribute value."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from invgen.errors import InvgenConfigError, first_line
from invgen.metrics.classifiers import CLASSIFIERS, DEFAULT_TEMPLATE
from invgen.models.clip import ClipBundle, load_open_clip


def _parse(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - JSON and YAML errors share nothing but a message
        raise InvgenConfigError(
            f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'} ({first_line(e)})"
        ) from None


def read_attribute_prompts(path: str | os.PathLike, attribute: str | None = None) -> dict[str, list[str]]:
    """Attribute values and their prompts from YAML or JSON.

    Either keyed by attribute (`color: {red: [a red digit, ...], green: a green digit}`) or the value
    mapping alone (`{red: [...], green: ...}`). Prompts of one value are averaged (prompt ensembling).
    """
    path = Path(path)
    if not path.is_file():
        raise InvgenConfigError(f"no attribute prompts file at {path}")
    data = _parse(path)
    if isinstance(data, Mapping) and attribute is not None and isinstance(data.get(attribute), Mapping):
        data = data[attribute]
    if not isinstance(data, Mapping) or not data:
        raise InvgenConfigError(f"{path}: expected a mapping from attribute values to prompts")
    out: dict[str, list[str]] = {}
    for value, prompts in data.items():
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            known = f" (attribute '{attribute}' is not a key of the file)" if attribute else ""
            raise InvgenConfigError(f"{path}: value '{value}' needs a prompt or a list of prompts{known}")
        out[str(value)] = prompts
    if len(out) < 2:
        raise InvgenConfigError(f"{path}: a classifier needs at least two attribute values, got {list(out)}")
    return out


class ClipZeroShot:
    """Zero-shot attribute classifier: the value whose (averaged) prompt embedding is nearest the image."""

    def __init__(
        self,
        bundle: ClipBundle,
        prompts: Mapping[str, Sequence[str]],
        attribute: str = "",
        batch_size: int = 64,
    ):
        if len(prompts) < 2:
            raise InvgenConfigError("a zero-shot classifier needs at least two attribute values")
        self.bundle = bundle
        self.attribute = attribute
        self.names = [str(n) for n in prompts]
        self.prompts = {str(k): list(v) for k, v in prompts.items()}
        self.batch_size = batch_size
        rows = []
        for name in self.names:
            f = bundle.encode_texts(self.prompts[name]).mean(dim=0)
            rows.append(torch.nn.functional.normalize(f, dim=-1))
        self.text_features = torch.stack(rows)  # (K, D)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        f = self.bundle.encode_images(images, self.batch_size)
        logits = self.bundle.logit_scale * f @ self.text_features.T
        return logits.softmax(dim=-1).numpy()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        f = self.bundle.encode_images(images, self.batch_size)
        return (f @ self.text_features.T).argmax(dim=-1).numpy().astype(np.int64)


def _clip(
    arg: str, *, attribute: str | None = None, names: Sequence[str] | None = None,
    prompts: Mapping[str, Sequence[str]] | None = None, prompts_file: str | os.PathLike | None = None,
    template: str = DEFAULT_TEMPLATE, model_name: str | None = None, device: str | None = None, **_: Any,
) -> ClipZeroShot:
    if prompts is None and prompts_file is not None:
        prompts = read_attribute_prompts(prompts_file, attribute)
    if prompts is None:
        if not names:
            raise InvgenConfigError(
                "a CLIP classifier needs the attribute values: give a prompts file (--prompts-file) "
                "or the values (--labels red,green)"
            )
        prompts = {n: [template.format(value=n, attribute=attribute or "")] for n in names}
    bundle = load_open_clip(arg, model_name=model_name, device=device)
    return ClipZeroShot(bundle, prompts, attribute=attribute or "")


CLASSIFIERS.register("clip", _clip, arg="PATH", help="open_clip zero-shot from local weights")
