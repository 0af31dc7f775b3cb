"""FID, k-NN precision/recall and CLIP score against hand computations; feature extractors."""

import importlib.util
import math

import numpy as np
import pytest
import torch
from helpers import tiny_open_clip

from invgen.benchmarks.digits.features import digit_cnn_features
from invgen.errors import InvgenConfigError, InvgenModelError
from invgen.metrics.quality import (
    clip_score,
    frechet_distance,
    load_feature_extractor,
    precision_recall,
    quality_report,
)


def test_fid_1d_by_hand():
    # real {0, 2}: μ 1, σ² 2; fake {3, 7}: μ 5, σ² 8 (unbiased). FID = (1−5)² + (√2 − √8)² = 16 + 2
    assert frechet_distance(np.array([[0.0], [2.0]]), np.array([[3.0], [7.0]])) == pytest.approx(18.0)


def test_fid_2d_by_hand():
    real = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])  # μ (1, 1), Σ = 4/3 I
    fake = real * 2 + np.array([3.0, 0.0])  # μ (5, 2), Σ = 16/3 I
    # ‖μ_r − μ_f‖² = 16 + 1; trace term per axis (√(4/3) − √(16/3))² = 4/3
    assert frechet_distance(real, fake) == pytest.approx(17 + 2 * 4 / 3)
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-9)


def test_fid_input_errors():
    with pytest.raises(ValueError, match="dimensions"):
        frechet_distance(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="at least two"):
        frechet_distance(np.zeros((1, 2)), np.zeros((3, 2)))


def test_precision_recall_by_hand():
    real = np.array([[0.0], [1.0], [2.0], [10.0]])
    fake = np.array([[0.5], [5.0], [20.0]])
    # k = 1 radii, real: 0→1, 1→1, 2→1, 10→8. Fake inside: 0.5 (ball of 0), 5 (ball of 10: |5−10| ≤ 8); 20 not
    # k = 1 radii, fake: 0.5→4.5, 5→4.5, 20→15. Real inside: 0, 1, 2 (ball of 0.5), 10 (ball of 20)
    out = precision_recall(real, fake, k=1)
    assert out["precision"] == pytest.approx(2 / 3) and out["recall"] == 1.0 and out["k"] == 1
    # swapping the sets swaps the two figures; a small chunk gives the same answer
    swapped = precision_recall(fake, real, k=1, chunk=1)
    assert swapped["precision"] == out["recall"] and swapped["recall"] == out["precision"]


def test_precision_recall_k_too_large():
    with pytest.raises(ValueError, match="more than k images"):
        precision_recall(np.zeros((3, 2)), np.zeros((5, 2)), k=3)


class FakeBundle:
    """Image features are the mean (R, G, B) of the image; text features are given per text."""

    def __init__(self, text_features):
        self.text_features = text_features

    def encode_images(self, images, batch_size=64):
        f = torch.tensor(np.asarray(images, dtype=np.float32).mean(axis=(1, 2)))
        return torch.nn.functional.normalize(f, dim=-1)

    def encode_texts(self, texts):
        return torch.nn.functional.normalize(torch.tensor([self.text_features[t] for t in texts]), dim=-1)


def test_clip_score_by_hand():
    images = np.zeros((3, 2, 2, 3), dtype=np.uint8)
    images[:2, ..., 0] = 255  # red: feature (1, 0, 0)
    images[2, ..., 2] = 255  # blue: feature (0, 0, 1)
    bundle = FakeBundle({"red": [1.0, 1.0, 0.0], "blue": [0.0, 0.0, -1.0]})
    out = clip_score(images, ["red", "red", "blue"], bundle)
    # red images: 100 · cos((1,0,0), (1,1,0)/√2) = 100/√2; the blue image: cos −1 → clamped to 0
    assert out["per_prompt"]["red"] == pytest.approx(100 / math.sqrt(2), rel=1e-5)
    assert out["per_prompt"]["blue"] == 0.0
    assert out["clip_score"] == pytest.approx(2 * 100 / math.sqrt(2) / 3, rel=1e-5)


def test_quality_report_with_digit_cnn_features():
    from invgen.benchmarks.digits.cnn import DigitCNN
    from invgen.benchmarks.digits.data import build_splits

    torch.manual_seed(0)
    cnn = DigitCNN(size=16)  # untrained: the arithmetic does not need a good feature space
    test = build_splits(size=16)["test"]
    a, b = test.images[:60], test.images[60:120]
    feats = digit_cnn_features(cnn)
    assert feats(a).shape == (60, 128)
    same = quality_report(a, a, feats, k=3)
    # identical sets: FID 0; every point lies in its own ball, so precision = recall = 1
    assert same["fid"] == pytest.approx(0.0, abs=1e-6)
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["n_real"] == same["n_fake"] == 60
    other = quality_report(a, b, feats, k=3)
    assert other["fid"] > 0
    assert other["fid"] == pytest.approx(frechet_distance(feats(b), feats(a)))



def test_feature_spec_errors(tmp_path):
    known = r"\(use clip:PATH, digit-cnn:DIR or inception:PATH\)"
    with pytest.raises(InvgenConfigError, match=rf"unknown feature extractor 'vgg:x' {known}"):
        load_feature_extractor("vgg:x")
    with pytest.raises(InvgenConfigError, match="needs its argument: clip:PATH"):
        load_feature_extractor("clip:")
    with pytest.raises(InvgenModelError, match="no Inception weights file"):
        load_feature_extractor(f"inception:{tmp_path / 'missing.pth'}")
    if importlib.util.find_spec("torch_fidelity") is None:
        (tmp_path / "w.pth").write_bytes(b"x")
        with pytest.raises(InvgenModelError, match="torch-fidelity"):
            load_feature_extractor(f"inception:{tmp_path / 'w.pth'}")


def test_clip_features_from_a_tiny_random_open_clip(tmp_path):
    folder = tiny_open_clip(tmp_path / "clip")
    extract = load_feature_extractor(f"clip:{folder}")
    images = np.random.default_rng(0).integers(0, 255, (4, 20, 20, 3), dtype=np.uint8)
    f = extract(images)
    assert f.shape == (4, 16)
    assert np.allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    assert np.allclose(extract(images), f)  # deterministic (eval mode)
