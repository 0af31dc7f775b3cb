"""Image quality against a reference set: FID, k-NN precision/recall, and CLIP score.

Every measure works in the space of a pluggable feature extractor, a callable uint8 images (N, H, W, C) →
features (N, D), named by a spec in `FEATURES`: CLIP image features (`clip:PATH`, local open_clip weights),
Inception (`inception:PATH`, needs torch-fidelity and its weights file), or a plug-in's (the colored-digits
benchmark adds its digit CNN, `digit-cnn:DIR`). FID uses torchmetrics' Fréchet distance; precision/recall
follows Kynkäänniemi et al., "Improved Precision and Recall Metric for Assessing Generative Models" (2019).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from invgen.errors import InvgenModelError
from invgen.registry import Registry

FeatureExtractor = Callable[[np.ndarray], np.ndarray]


class _Precomputed(torch.nn.Module):
    """Lets torchmetrics' FID accumulate features we already have (its 'images' are the features)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _as_features(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    if t.ndim != 2:
        raise ValueError(f"{name} features must be a 2-D array (N, D), got shape {tuple(t.shape)}")
    return t


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """FID `‖μ_r − μ_f‖² + Tr(Σ_r + Σ_f − 2 (Σ_r Σ_f)^{1/2})` between two feature sets (N, D).

    Covariances are unbiased (N − 1), as in torchmetrics and the reference implementation.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    r, f = _as_features(real, "real"), _as_features(fake, "fake")
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"real features have {r.shape[1]} dimensions, fake features {f.shape[1]}")
    if len(r) < 2 or len(f) < 2:
        raise ValueError("FID needs at least two real and two generated images")
    metric = FrechetInceptionDistance(feature=_Precomputed(r.shape[1])).double()
    metric.update(r, real=True)
    metric.update(f, real=False)
    # Rounding can leave a hair below zero for identical sets; the distance itself never is.
    return max(float(metric.compute()), 0.0)


def _kth_neighbour_radius(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point of the same set."""
    radii = []
    for start in range(0, len(x), chunk):
        d = torch.cdist(x[start : start + chunk], x)
        # The point itself is among the k + 1 smallest distances (at 0), so the (k+1)-th is the k-th other.
        radii.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def _coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int) -> float:
    """Share of `points` inside at least one ball (centre, radius)."""
    inside = []
    for start in range(0, len(points), chunk):
        d = torch.cdist(points[start : start + chunk], centres)
        inside.append((d <= radii[None, :]).any(dim=1))
    return float(torch.cat(inside).double().mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, chunk: int = 1024) -> dict[str, float]:
    """k-NN manifold precision and recall (Kynkäänniemi et al.; the paper's default k = 3).

    The real manifold is the union of balls around each real feature reaching its k-th nearest real
    neighbour; precision is the share of generated features inside it. Recall swaps the roles.
    """
    r, f = _as_features(real, "real"), _as_features(fake, "fake")
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"real features have {r.shape[1]} dimensions, fake features {f.shape[1]}")
    if k < 1 or k >= min(len(r), len(f)):
        raise ValueError(
            f"k = {k} needs more than k images in each set (got {len(r)} real, {len(f)} generated)"
        )
    precision = _coverage(f, r, _kth_neighbour_radius(r, k, chunk), chunk)
    recall = _coverage(r, f, _kth_neighbour_radius(f, k, chunk), chunk)
    return {"precision": precision, "recall": recall, "k": k}


def clip_score(images: np.ndarray, texts: Sequence[str], bundle: Any, batch_size: int = 64) -> dict[str, Any]:
    """CLIP score `100 · max(cos(E_image, E_text), 0)` averaged over images (torchmetrics' scale), with
    the mean per distinct text. `bundle` is a `ClipBundle` (see `load_open_clip`) or a fake with its methods.
    """
    if len(images) != len(texts):
        raise ValueError(f"{len(images)} images but {len(texts)} texts")
    unique = list(dict.fromkeys(texts))
    row = {t: i for i, t in enumerate(unique)}
    t = bundle.encode_texts(unique)
    f = bundle.encode_images(images, batch_size)
    idx = torch.as_tensor([row[x] for x in texts], dtype=torch.long)
    scores = (100.0 * (f * t[idx]).sum(dim=-1).clamp_min(0.0)).double().numpy()
    per_text = {x: float(scores[idx.numpy() == i].mean()) for x, i in row.items()}
    return {"clip_score": float(scores.mean()) if len(scores) else float("nan"), "per_prompt": per_text}


# ------------------------------------------------------------------------------------ feature extractors
def clip_features(
    path_or_bundle: Any, model_name: str | None = None, device: str | None = None, batch_size: int = 64
) -> FeatureExtractor:
    """L2-normalised CLIP image features from local open_clip weights (or a loaded bundle)."""
    bundle = path_or_bundle
    if isinstance(path_or_bundle, (str, os.PathLike)):
        from invgen.models.clip import load_open_clip

        bundle = load_open_clip(path_or_bundle, model_name=model_name, device=device)
    return lambda images: bundle.encode_images(images, batch_size).numpy()


def inception_features(weights_path: str | os.PathLike, batch_size: int = 64) -> FeatureExtractor:
    """Inception-v3 pool features (2048-D) as in standard FID, from a local torch-fidelity weights file."""
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise InvgenModelError(f"no Inception weights file at {path}")
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3

        net = NoTrainInceptionV3(
            name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(path)
        )
    except ModuleNotFoundError:
        raise InvgenModelError("Inception features need torch-fidelity: pip install torch-fidelity") from None
    except Exception as e:  # noqa: BLE001 - a wrong file fails in many ways
        raise InvgenModelError(f"could not load Inception weights from {path}: {e}") from None

    def extract(images: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).permute(
                    0, 3, 1, 2
                )
                if x.shape[1] == 1:
                    x = x.expand(-1, 3, -1, -1)
                out.append(net(x).double())
        return torch.cat(out).numpy()

    return extract


FEATURES: Registry[FeatureExtractor] = Registry("feature extractor")
"""Feature spaces by spec; a factory is called as `factory(arg, model_name=..., device=...)`."""
FEATURES.register(
    "clip", lambda arg, model_name=None, device=None, **_: clip_features(arg, model_name=model_name, device=device),
    arg="PATH", help="CLIP image features from local open_clip weights",
)
FEATURES.register(
    "inception", lambda arg, **_: inception_features(arg), arg="PATH",
    help="Inception-v3 pool features (standard FID) from a torch-fidelity weights file",
)


def load_feature_extractor(
    spec: str | FeatureExtractor, model_name: str | None = None, device: str | None = None
) -> FeatureExtractor:
    """A spec resolved through `FEATURES` (`clip:PATH`, `inception:PATH`, plug-ins'); a callable is returned as is."""
    if callable(spec):
        return spec
    return FEATURES.resolve(spec, model_name=model_name, device=device)


def quality_report(
    images: np.ndarray,
    reference: np.ndarray,
    features: str | FeatureExtractor,
    k: int = 3,
) -> dict[str, Any]:
    """FID and precision/recall of generated `images` against `reference` images in one feature space."""
    extract = load_feature_extractor(features)
    fake = np.asarray(extract(images), dtype=np.float64)
    real = np.asarray(extract(reference), dtype=np.float64)
    out: dict[str, Any] = {
        "features": features if isinstance(features, str) else getattr(features, "__name__", "custom"),
        "n_real": len(real),
        "n_fake": len(fake),
        "fid": frechet_distance(real, fake),
    }
    out.update(precision_recall(real, fake, k=k))
    return out
