"""Attribute classifiers behind one interface: oracle, CLIP zero-shot, trained checkpoint, metadata."""

import json

import numpy as np
import pytest
import torch
from helpers import tiny_open_clip

from invgen.benchmarks.digits.data import build_splits
from invgen.benchmarks.digits.oracle import ColorOracle
from invgen.data.imagefolder import ImageRecord
from invgen.errors import InvgenConfigError, InvgenDataError, InvgenError, InvgenModelError
from invgen.metrics.classifiers import load_classifier
from invgen.metrics.classifiers.checkpoint import AttributeCNN, train_attribute_cnn
from invgen.metrics.classifiers.clip import ClipZeroShot, read_attribute_prompts
from invgen.metrics.classifiers.metadata import MetadataAttribute
from invgen.models.clip import load_open_clip


@pytest.fixture(scope="module")
def digits16():
    return build_splits(size=16, palette_name="two")


def _truth(split, names):
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[r.attributes["color"]] for r in split.records])



@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        ("foo:bar", {}, r"unknown classifier 'foo:bar' \(use checkpoint:PATH, clip:PATH, metadata or oracle"),
        ("oracle:shape", {}, "unknown oracle attribute 'shape'"),
        ("oracle:color", {"attribute": "gender"}, "reads the attribute 'color', not 'gender'"),
        ("oracle:color:nine", {}, "unknown palette 'nine'"),
        ("clip:", {}, "the classifier 'clip:' needs its argument: clip:PATH"),
        ("checkpoint:", {}, "needs its argument: checkpoint:PATH"),
        ("metadata", {}, "needs the attribute name"),
    ],
)
def test_bad_specs_say_one_sentence(spec, kwargs, message):
    with pytest.raises(InvgenError, match=message):
        load_classifier(spec, **kwargs)


def test_metadata_classifier_reads_records():
    recs = [ImageRecord(f"{i}.png", "p", attributes={"color": c}) for i, c in enumerate(["b", "a", "b"])]
    clf = load_classifier("metadata", attribute="color")
    assert isinstance(clf, MetadataAttribute)
    assert clf.from_records(recs).tolist() == [1, 0, 1] and clf.names == ["a", "b"]
    given = MetadataAttribute("color", ["b", "a", "c"])  # names given: an unseen value keeps its slot
    assert given.from_records(recs).tolist() == [0, 1, 0]
    with pytest.raises(InvgenDataError, match=r"metadata.jsonl:2: attribute 'color' is 'a'"):
        MetadataAttribute("color", ["b", "c"]).from_records(recs)
    with pytest.raises(InvgenDataError, match=r":1: no attribute 'shape'"):
        MetadataAttribute("shape").from_records(recs)


def test_attribute_prompts_file_forms(tmp_path):
    (tmp_path / "a.yaml").write_text(
        "color:\n  red: [a red digit, a photo of a red digit]\n  green: a green digit\n"
    )
    assert read_attribute_prompts(tmp_path / "a.yaml", "color") == {
        "red": ["a red digit", "a photo of a red digit"],
        "green": ["a green digit"],
    }
    (tmp_path / "b.json").write_text(json.dumps({"red": "a red digit", "green": ["a green digit"]}))
    assert read_attribute_prompts(tmp_path / "b.json")["green"] == ["a green digit"]
    (tmp_path / "c.yaml").write_text("shape:\n  round: a round thing\n  square: a square thing\n")
    with pytest.raises(InvgenConfigError, match="attribute 'color' is not a key"):
        read_attribute_prompts(tmp_path / "c.yaml", "color")
    (tmp_path / "d.yaml").write_text("red: a red digit\n")
    with pytest.raises(InvgenConfigError, match="at least two attribute values"):
        read_attribute_prompts(tmp_path / "d.yaml")
    (tmp_path / "e.json").write_text("{oops")
    with pytest.raises(InvgenConfigError, match="not valid json"):
        read_attribute_prompts(tmp_path / "e.json")


class FakeClip:
    """Image feature = (mean R, mean G) of the pixels; text feature = (#'red' words, #'green' words)."""

    logit_scale = torch.tensor(np.log(10.0))

    def encode_image(self, x):
        return x

    def encode_text(self, tokens):
        return tokens


def fake_bundle():
    from invgen.models.clip import ClipBundle

    def preprocess(pil):
        a = np.asarray(pil, dtype=np.float32) / 255.0
        return torch.tensor([a[..., 0].mean(), a[..., 1].mean()])

    def tokenizer(texts):
        return torch.tensor([[t.split().count("red") + 1e-3, t.split().count("green") + 1e-3] for t in texts])

    return ClipBundle(FakeClip(), preprocess, tokenizer)


def test_clip_zero_shot_with_a_fake_model(digits16):
    test = digits16["test"]
    prompts = {"red": ["a red digit", "red red"], "green": ["a green digit"]}
    clf = ClipZeroShot(fake_bundle(), prompts, attribute="color")
    assert clf.names == ["red", "green"]
    assert (clf(test.images) == _truth(test, clf.names)).all()
    p = clf.probabilities(test.images[:4])
    assert p.shape == (4, 2) and np.allclose(p.sum(axis=1), 1.0)
    # logit scale 10, cos 1 vs ≈ 0 → P(right value) = 1 / (1 + e^−10)
    assert p[np.arange(4), clf(test.images[:4])] == pytest.approx(1 / (1 + np.exp(-10)), abs=1e-3)


def test_clip_spec_loads_a_tiny_random_open_clip(tmp_path, digits16):
    folder = tiny_open_clip(tmp_path / "clip")
    clf = load_classifier(f"clip:{folder}", attribute="color", names=["red", "green"])
    assert clf.prompts == {"red": ["a photo of a red"], "green": ["a photo of a green"]}
    images = digits16["test"].images[:6]
    out = clf(images)
    assert out.shape == (6,) and set(out.tolist()) <= {0, 1}
    # the zero-shot choice is the nearest text embedding of the loaded model
    bundle = load_open_clip(folder)
    sims = bundle.encode_images(images) @ bundle.encode_texts(["a photo of a red", "a photo of a green"]).T
    assert out.tolist() == sims.argmax(dim=1).tolist()
    # a bare weights file needs its architecture name
    with pytest.raises(InvgenModelError, match="name its architecture"):
        load_open_clip(tmp_path / "weights.pt")


def test_clip_spec_errors(tmp_path):
    with pytest.raises(InvgenModelError, match="no CLIP weights at"):
        load_classifier(f"clip:{tmp_path / 'none'}", names=["a", "b"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvgenModelError, match="no open_clip_config.json"):
        load_classifier(f"clip:{tmp_path / 'empty'}", names=["a", "b"])
    with pytest.raises(InvgenConfigError, match="needs the attribute values"):
        load_classifier(f"clip:{tmp_path / 'empty'}")


def test_checkpoint_classifier_round_trip(tmp_path, digits16):
    train, test = digits16["train"], digits16["test"]
    names = ColorOracle("two").names
    model = train_attribute_cnn(train.images, _truth(train, names), names, attribute="color", steps=60, seed=0)
    model.save_pretrained(tmp_path / "clf")
    clf = load_classifier(f"checkpoint:{tmp_path / 'clf'}", attribute="color")
    assert clf.names == names and clf.attribute == "color"
    pred = clf(test.images)
    assert (pred == model.predict(test.images)).all()  # the saved model is the trained one
    assert (pred == _truth(test, names)).mean() >= 0.95  # color is an easy attribute: it has learned it
    with pytest.raises(InvgenConfigError, match="reads the attribute 'color', not 'shape'"):
        load_classifier(f"checkpoint:{tmp_path / 'clf'}", attribute="shape")
    with pytest.raises(InvgenModelError, match="2 outputs but 3 names"):
        load_classifier(f"checkpoint:{tmp_path / 'clf'}", names=["a", "b", "c"])


def test_checkpoint_errors(tmp_path):
    with pytest.raises(InvgenModelError, match="no classifier checkpoint folder"):
        load_classifier(f"checkpoint:{tmp_path / 'none'}")
    (tmp_path / "noconf").mkdir()
    with pytest.raises(InvgenModelError, match="has no config.json"):
        load_classifier(f"checkpoint:{tmp_path / 'noconf'}")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(InvgenModelError, match="'UNet2DModel' model, which invgen cannot load"):
        load_classifier(f"checkpoint:{tmp_path / 'other'}")



def test_attribute_cnn_needs_names():
    with pytest.raises(ValueError, match="at least two"):
        AttributeCNN(names=["only"])
