"""Attribute classifiers: images in, one attribute index per image out.

All classifiers share one interface (`AttributeClassifier`): `names` lists the attribute values and
`__call__(images)` takes uint8 arrays (N, H, W, C) and returns int64 indices (N,), or `UNREADABLE` (-1)
for an image the classifier cannot read (the color oracle: an image without color). Reports count those
apart and leave them out of every figure. `load_classifier(spec)` builds one from a CLI spec:

- `oracle:color[:PALETTE]`: the pixel rule of the synthetic sets (exact, no weights);
- `clip:PATH`: open_clip zero-shot with attribute prompts (weights from a local folder or file);
- `checkpoint:PATH`: a trained classifier saved with `save_pretrained` (its config holds `names`);
- `metadata`: the value already written in `metadata.jsonl` (the column ATTRIBUTE, or the older nested
  `attributes[ATTRIBUTE]`), for sets whose attribute is known (a training set, a hand-labelled sample).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from matplotlib.colors import rgb_to_hsv
from torch import nn

from invgen.errors import InvgenConfigError, InvgenDataError, InvgenError, InvgenModelError
from invgen.metrics.fairness import UNREADABLE

DEFAULT_TEMPLATE = "a photo of a {value}"


class AttributeClassifier(Protocol):
    names: list[str]

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# --------------------------------------------------------------------------------------------- oracle
class ColorOracle:
    """Pixel rule for synthetic sets: the circular mean hue of the bright pixels, nearest palette hue.

    Exact on the embedded benchmark (every foreground pixel has the painted hue), so a bias figure read
    with it carries no classifier error. An image whose bright pixels have (almost) no color, such as an
    all-black or gray one, has no hue: it is `UNREADABLE`, not the palette color nearest hue 0 (red).
    """

    attribute = "color"

    def __init__(self, palette_name: str = "two", bright_fraction: float = 0.5, min_chroma: float = 0.05):
        from invgen.benchmarks.digits.data import palette as get_palette

        colors = get_palette(palette_name)
        self.palette_name = palette_name
        self.names = [name for name, _ in colors]
        rgb = np.array([c for _, c in colors], dtype=np.float64) / 255.0
        self.hues = rgb_to_hsv(rgb)[:, 0] * 2 * np.pi
        self.bright_fraction = bright_fraction
        # Mean chroma (max - min channel, 0..1) the bright pixels need for their hue to mean anything;
        # 0.05 is about 13 levels of 255, far below any painted color and above 8-bit rounding noise.
        self.min_chroma = min_chroma

    def hue(self, images: np.ndarray) -> np.ndarray:
        """Mean hue angle (radians) of each image's bright pixels; NaN for an image without color."""
        x = np.asarray(images, dtype=np.float64) / 255.0
        if x.ndim != 4 or x.shape[-1] != 3:
            raise InvgenError(f"the color oracle needs RGB images (N, H, W, 3), got shape {x.shape}")
        hsv = rgb_to_hsv(x)
        value = hsv[..., 2]
        top = value.reshape(len(x), -1).max(axis=1)[:, None, None]
        bright = value >= self.bright_fraction * top
        weight = np.where(bright, value * hsv[..., 1], 0.0)  # value x saturation: the pixel's chroma
        angle = hsv[..., 0] * 2 * np.pi
        s = (weight * np.sin(angle)).sum(axis=(1, 2))
        c = (weight * np.cos(angle)).sum(axis=(1, 2))
        chroma = weight.sum(axis=(1, 2)) / np.maximum(bright.sum(axis=(1, 2)), 1)
        return np.where(chroma >= self.min_chroma, np.arctan2(s, c), np.nan)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        h = self.hue(images)[:, None]
        dist = np.abs(np.angle(np.exp(1j * (np.nan_to_num(h) - self.hues[None, :]))))
        return np.where(np.isnan(h[:, 0]), UNREADABLE, dist.argmin(axis=1)).astype(np.int64)


# ------------------------------------------------------------------------------------------- metadata
class MetadataAttribute:
    """The attribute as written in `metadata.jsonl` (`ImageRecord.attribute`: a column, or nested); reads no image."""

    needs_images = False

    def __init__(self, attribute: str, names: Sequence[str] | None = None):
        self.attribute = attribute
        self.names = [str(n) for n in names] if names else []

    def from_records(self, records: Sequence[Any], where: str = "metadata.jsonl") -> np.ndarray:
        # A record read from the file knows its line; one made in memory is placed by its position.
        at = [f"{where}:{lineno if getattr(rec, 'line', None) is None else rec.line}"
              for lineno, rec in enumerate(records, start=1)]
        raw = [str(rec.attribute(self.attribute, w)) for rec, w in zip(records, at, strict=True)]
        if not self.names:
            self.names = sorted(set(raw))
        index = {n: i for i, n in enumerate(self.names)}
        for w, value in zip(at, raw, strict=True):
            if value not in index:
                raise InvgenDataError(
                    f"{w}: attribute '{self.attribute}' is {value!r}, "
                    f"not one of the values given ({', '.join(self.names)})"
                )
        return np.fromiter((index[v] for v in raw), dtype=np.int64, count=len(raw))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        raise InvgenError("the 'metadata' classifier reads metadata.jsonl, not images")


# ----------------------------------------------------------------------------------------------- CLIP
@dataclass
class ClipBundle:
    """An open_clip model with its image transform and tokenizer (or fakes with the same methods)."""

    model: Any
    preprocess: Callable[[Any], Any]
    tokenizer: Callable[[list[str]], Any]
    device: str = "cpu"

    def encode_images(self, images: np.ndarray, batch_size: int = 64) -> torch.Tensor:
        """L2-normalised image features (N, D) as a float tensor on the CPU."""
        from PIL import Image

        feats = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                chunk = images[start : start + batch_size]
                pils = [
                    Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im).convert("RGB") for im in chunk
                ]
                x = torch.stack([self.preprocess(p) for p in pils]).to(self.device)
                f = self.model.encode_image(x).float()
                feats.append(torch.nn.functional.normalize(f, dim=-1).cpu())
        return torch.cat(feats) if feats else torch.zeros(0, 0)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text features (T, D) as a float tensor on the CPU."""
        with torch.no_grad():
            tokens = self.tokenizer(list(texts))
            tokens = tokens.to(self.device) if hasattr(tokens, "to") else tokens
            f = self.model.encode_text(tokens).float()
        return torch.nn.functional.normalize(f, dim=-1).cpu()

    @property
    def logit_scale(self) -> float:
        scale = getattr(self.model, "logit_scale", None)
        if scale is None:
            return 100.0
        value = float(scale.exp().item()) if hasattr(scale, "exp") else float(np.exp(scale))
        return min(value, 100.0)


def _default_device(device: str | None) -> str:
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_open_clip(
    path: str | os.PathLike, model_name: str | None = None, device: str | None = None
) -> ClipBundle:
    """open_clip weights from a local path, never from the network.

    A folder must hold `open_clip_config.json` and the weights (the layout of open_clip models on the
    Hugging Face Hub); a single weights file needs its architecture name (`model_name`, e.g. ViT-B-32).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InvgenModelError(f"no CLIP weights at {path} (give a local open_clip folder or weights file)")
    import open_clip

    device = _default_device(device)
    if path.is_dir():
        if not (path / "open_clip_config.json").is_file():
            raise InvgenModelError(f"{path} is not an open_clip folder (it has no open_clip_config.json)")
        name, pretrained = f"local-dir:{path}", None
    else:
        if not model_name:
            raise InvgenModelError(
                f"{path} is a single weights file: name its architecture too "
                "(model_name / --clip-model, e.g. ViT-B-32)"
            )
        name, pretrained = model_name, str(path)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=pretrained, device=device
        )
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as e:  # noqa: BLE001 - open_clip raises many types for one meaning: not loadable
        raise InvgenModelError(f"could not load CLIP weights from {path}: {_first_line(e)}") from None
    model.eval()
    return ClipBundle(model, preprocess, tokenizer, device)


def read_attribute_prompts(path: str | os.PathLike, attribute: str | None = None) -> dict[str, list[str]]:
    """Attribute values and their prompts from YAML or JSON.

    Either keyed by attribute (`color: {red: [a red digit, ...], green: a green digit}`) or the value
    mapping alone (`{red: [...], green: ...}`). Prompts of one value are averaged (prompt ensembling).
    """
    path = Path(path)
    if not path.is_file():
        raise InvgenConfigError(f"no attribute prompts file at {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - JSON and YAML errors share nothing but a message
        raise InvgenConfigError(
            f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'} ({_first_line(e)})"
        ) from None
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


# ----------------------------------------------------------------------------------------- checkpoint
class AttributeCNN(ModelMixin, ConfigMixin):
    """A small CNN that reads one attribute; `names` (and `attribute`) live in its saved config."""

    @register_to_config
    def __init__(
        self,
        names: list[str] | None = None,
        attribute: str = "",
        size: int = 32,
        in_channels: int = 3,
        width: int = 16,
    ):
        super().__init__()
        if not names or len(names) < 2:
            raise ValueError("AttributeCNN needs at least two attribute names")
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, len(names))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def to_input(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, C) → float (N, C, size, size) in [0, 1]."""
        x = torch.from_numpy(np.ascontiguousarray(images)).float().div(255.0).permute(0, 3, 1, 2)
        if x.shape[1] != self.config.in_channels:
            if x.shape[1] != 1:
                raise InvgenDataError(
                    f"the classifier reads {self.config.in_channels}-channel images, "
                    f"got {x.shape[1]} channels"
                )
            x = x.expand(-1, self.config.in_channels, -1, -1)
        if x.shape[-2:] != (self.config.size, self.config.size):
            x = F.interpolate(
                x,
                size=(self.config.size, self.config.size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        return x

    @torch.no_grad()
    def predict(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        self.eval()
        out = [
            self(self.to_input(images[i : i + batch_size]).to(self.device)).argmax(1).cpu()
            for i in range(0, len(images), batch_size)
        ]
        return torch.cat(out).numpy().astype(np.int64) if out else np.zeros(0, dtype=np.int64)


def train_attribute_cnn(
    images: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    names: Sequence[str],
    attribute: str = "",
    steps: int = 200,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    size: int | None = None,
):
    """Fit an `AttributeCNN` on labelled images (uint8 (N, H, W, C)); save it with `save_pretrained`."""
    images = np.asarray(images)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    torch.manual_seed(seed)
    model = AttributeCNN(
        names=list(names), attribute=attribute, size=size or images.shape[1], in_channels=images.shape[-1]
    )
    x = model.to_input(images)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (min(batch_size, len(x)),), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _digit_cnn() -> type:
    from invgen.benchmarks.digits.cnn import DigitCNN

    return DigitCNN


CHECKPOINT_CLASSES: dict[str, Callable[[], type]] = {
    "AttributeCNN": lambda: AttributeCNN,
    "DigitCNN": _digit_cnn,
}
"""Classes `checkpoint:PATH` can load, by the `_class_name` that `save_pretrained` writes."""


class CheckpointClassifier:
    """A trained classifier loaded from a `save_pretrained` folder; predicts with `model.predict`."""

    def __init__(self, model: Any, names: Sequence[str], attribute: str = ""):
        self.model = model
        self.names = [str(n) for n in names]
        self.attribute = attribute

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(images), dtype=np.int64)


def load_checkpoint_classifier(
    path: str | os.PathLike, names: Sequence[str] | None = None, device: str | None = None
) -> CheckpointClassifier:
    path = Path(path).expanduser()
    config_file = path / "config.json"
    if not path.is_dir():
        raise InvgenModelError(f"no classifier checkpoint folder at {path}")
    if not config_file.is_file():
        raise InvgenModelError(f"{path} has no config.json (save the classifier with save_pretrained)")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise InvgenModelError(f"{config_file}: not valid JSON ({e.msg})") from None
    class_name = config.get("_class_name", "")
    if class_name not in CHECKPOINT_CLASSES:
        raise InvgenModelError(
            f"{path} holds a '{class_name or 'unnamed'}' model, which invgen cannot load as a classifier "
            f"(known: {', '.join(CHECKPOINT_CLASSES)})"
        )
    names = list(names) if names else config.get("names")
    if class_name == "DigitCNN" and not names:
        names = [str(d) for d in range(int(config.get("num_classes", 10)))]
    if not names:
        raise InvgenModelError(f"{config_file} has no 'names': give the attribute values (names= / --labels)")
    try:
        model = CHECKPOINT_CLASSES[class_name]().from_pretrained(path)
    except Exception as e:  # noqa: BLE001 - diffusers raises OSError/ValueError/KeyError alike
        raise InvgenModelError(f"could not load the classifier in {path}: {_first_line(e)}") from None
    model = model.to(_default_device(device)).eval()
    outputs = getattr(getattr(model, "head", None), "out_features", len(names))
    if outputs != len(names):
        raise InvgenModelError(
            f"{path}: the classifier has {outputs} outputs but {len(names)} names were given"
        )
    return CheckpointClassifier(model, names, config.get("attribute", ""))


# ------------------------------------------------------------------------------------------- dispatch
def _check_attribute(spec: str, reads: str, attribute: str | None) -> None:
    if attribute and reads and attribute != reads:
        raise InvgenConfigError(f"the classifier '{spec}' reads the attribute '{reads}', not '{attribute}'")


def load_classifier(
    spec: str,
    attribute: str | None = None,
    names: Sequence[str] | None = None,
    prompts: Mapping[str, Sequence[str]] | None = None,
    prompts_file: str | os.PathLike | None = None,
    template: str = DEFAULT_TEMPLATE,
    palette: str = "two",
    model_name: str | None = None,
    device: str | None = None,
) -> AttributeClassifier:
    """Build a classifier from its spec; an unknown spec or a mismatched attribute raises `InvgenError`.

    `oracle:color[:PALETTE]`, `clip:PATH` (prompts from `prompts`, `prompts_file`, or `names` through
    `template`), `checkpoint:PATH` (names from its config or `names`), `metadata` (needs `attribute`).
    """
    kind, _, arg = str(spec).partition(":")
    if kind == "oracle":
        what, _, pal = arg.partition(":")
        if what != "color":
            raise InvgenConfigError(f"unknown oracle attribute '{what}' in '{spec}' (known: color)")
        _check_attribute(spec, "color", attribute)
        try:
            return ColorOracle(pal or palette)
        except InvgenError as e:
            raise InvgenConfigError(f"{e} in '{spec}'") from None
    if kind == "metadata":
        if not attribute:
            raise InvgenConfigError("the 'metadata' classifier needs the attribute name to read")
        return MetadataAttribute(attribute, names)
    if kind == "clip":
        if not arg:
            raise InvgenConfigError(
                "'clip:' needs the path of local open_clip weights, e.g. clip:/models/vit-b-32"
            )
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
    if kind == "checkpoint":
        if not arg:
            raise InvgenConfigError(
                "'checkpoint:' needs the folder of a saved classifier, e.g. checkpoint:runs/clf"
            )
        clf = load_checkpoint_classifier(arg, names, device)
        _check_attribute(spec, clf.attribute, attribute)
        return clf
    raise InvgenConfigError(
        f"unknown classifier spec '{spec}' (use oracle:color, clip:PATH, checkpoint:PATH or metadata)"
    )
