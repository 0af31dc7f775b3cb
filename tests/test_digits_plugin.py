"""The colored-digits plug-in in the general registries: its color oracle (a classifier and the T2I
measures' exact 'caption'), its digit CNN as a classifier checkpoint and as a feature space."""

import numpy as np
import pytest
import torch

from invgen.benchmarks.digits.data import build_splits
from invgen.benchmarks.digits.oracle import DigitsOracleExtractor
from invgen.metrics.classifiers import load_classifier
from invgen.metrics.quality import load_feature_extractor
from invgen.metrics.t2i import TokenFilter, t2i_bias

STOP = {"a", "an", "the", "of", "on", "and", "in", "with", "is"}


def tf(**kw):
    return TokenFilter(stop_words=STOP, use_wordnet=False, **kw)


def _truth(split, names):
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[r.attributes["color"]] for r in split.records])


def test_digit_cnn_features_from_a_saved_folder(tmp_path):
    from invgen.benchmarks.digits.cnn import DigitCNN

    torch.manual_seed(0)
    cnn = DigitCNN(size=16)
    cnn.save_pretrained(tmp_path / "cnn")
    images = np.random.default_rng(0).integers(0, 255, (5, 16, 16, 3), dtype=np.uint8)
    loaded = load_feature_extractor(f"digit-cnn:{tmp_path / 'cnn'}")
    assert np.allclose(loaded(images), cnn.features_of(images), atol=1e-6)


def test_digits_oracle_extractor_reads_the_painted_color():
    from invgen.benchmarks.digits.data import build_splits

    test = build_splits(size=16, palette_name="two")["test"]
    ext = DigitsOracleExtractor("two")
    sets = ext.batch(test.images[:40])
    assert sets == [{"digit", r.attributes["color"]} for r in test.records[:40]]
    assert ext(test.images[0]) == sets[0]
    # On the digits, H_J is exact: X = {photo, digit}, Y = {digit, <color>} → 1 − 1/3 for every image
    out = t2i_bias(test.images[:40], [r.prompt for r in test.records[:40]], ext, token_filter=tf())
    assert out["H_J"] == pytest.approx(2 / 3) and out["H_plus"] == pytest.approx(0.5)


@pytest.mark.parametrize("palette", ["two", "ten"])
def test_oracle_is_exact_on_the_digits(palette):
    test = build_splits(size=16, palette_name=palette)["test"]
    clf = load_classifier(f"oracle:color:{palette}", attribute="color")
    assert clf.names == [r.attributes["color"] for r in test.records[: len(clf.names)]]
    assert (clf(test.images) == _truth(test, clf.names)).all()


def test_digit_cnn_checkpoint_gets_digit_names(tmp_path):
    from invgen.benchmarks.digits.cnn import DigitCNN

    DigitCNN(size=16).save_pretrained(tmp_path / "cnn")
    clf = load_classifier(f"checkpoint:{tmp_path / 'cnn'}")
    assert clf.names == [str(d) for d in range(10)]
    assert clf(np.zeros((2, 16, 16, 3), dtype=np.uint8)).shape == (2,)


def test_the_plug_in_registers_what_general_code_resolves():
    from invgen.audit.suites import SUITE_FILES
    from invgen.data.builders import DATASETS
    from invgen.metrics.classifiers import CLASSIFIERS
    from invgen.metrics.classifiers.checkpoint import CHECKPOINT_CLASSES
    from invgen.metrics.quality import FEATURES

    assert "colored_digits" in DATASETS and "oracle" in CLASSIFIERS and "digit-cnn" in FEATURES
    assert "digits" in SUITE_FILES and "DigitCNN" in CHECKPOINT_CLASSES
    defaults = DATASETS.resolve("colored_digits").defaults({"palette": "ten"})
    assert defaults.classifier == "oracle:color:ten" and defaults.attribute == "color"
    assert defaults.class_prompts[7] == "a photo of the digit 7" and defaults.suite == "digits"
    assert load_classifier(defaults.classifier).names[:2] == ["red", "green"]
