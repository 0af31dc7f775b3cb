import json

import numpy as np
import pytest
from PIL import Image

from invgen.benchmarks.digits.data import build_splits, make_colored_digits
from invgen.benchmarks.digits.oracle import ColorOracle
from invgen.data.imagefolder import ImageRecord, read_imagefolder, write_imagefolder
from invgen.errors import InvgenDataError


def _write_set(root, n=3, size=8, mode="RGB"):
    images = [np.full((size, size, 3), 40 * i, dtype=np.uint8) for i in range(n)]
    records = [ImageRecord(f"img_{i}.png", f"prompt {i}", label=i, attributes={"color": "red"}) for i in range(n)]
    write_imagefolder(root, images, records)
    return root


def test_round_trip(tmp_path):
    root = _write_set(tmp_path / "set")
    s = read_imagefolder(root)
    assert len(s) == 3 and s.images.shape == (3, 8, 8, 3)
    assert s.images[2, 0, 0, 0] == 80
    assert s.records[1].prompt == "prompt 1" and s.records[1].label == 1
    assert s.attribute("color") == ["red"] * 3
    assert not list(tmp_path.glob(".set.*"))  # no temporary folder left behind


def test_missing_image_names_file_and_line(tmp_path):
    root = _write_set(tmp_path / "set")
    (root / "img_1.png").unlink()
    with pytest.raises(InvgenDataError, match=r"metadata.jsonl:2: image img_1.png does not exist"):
        read_imagefolder(root)


def test_bad_json_line(tmp_path):
    root = _write_set(tmp_path / "set")
    with open(root / "metadata.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(InvgenDataError, match=r"metadata.jsonl:4: not valid JSON"):
        read_imagefolder(root)


def test_missing_prompt_and_bad_label(tmp_path):
    root = _write_set(tmp_path / "set")
    (root / "metadata.jsonl").write_text(json.dumps({"file_name": "img_0.png"}) + "\n")
    with pytest.raises(InvgenDataError, match=r":1: missing 'prompt'"):
        read_imagefolder(root)
    (root / "metadata.jsonl").write_text(json.dumps({"file_name": "img_0.png", "prompt": "p", "label": "x"}) + "\n")
    with pytest.raises(InvgenDataError, match=r":1: 'label' must be an integer"):
        read_imagefolder(root)


def test_truncated_image(tmp_path):
    root = _write_set(tmp_path / "set", size=32)
    data = (root / "img_2.png").read_bytes()
    (root / "img_2.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InvgenDataError, match=r":3: image img_2.png is unreadable or truncated"):
        read_imagefolder(root)


def test_size_and_mode_mismatch(tmp_path):
    root = _write_set(tmp_path / "set")
    Image.new("RGB", (10, 10)).save(root / "img_1.png")
    with pytest.raises(InvgenDataError, match=r":2: image img_1.png is 10x10, expected 8x8"):
        read_imagefolder(root)
    Image.new("L", (8, 8)).save(root / "img_1.png")
    with pytest.raises(InvgenDataError, match=r":2: image img_1.png has mode L, the set has RGB"):
        read_imagefolder(root, mode=None)
    # Converting modes on read is the default and accepts grayscale.
    assert read_imagefolder(root).images.shape == (3, 8, 8, 3)


def test_empty_and_missing_metadata(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvgenDataError, match="no metadata.jsonl"):
        read_imagefolder(tmp_path / "empty")
    (tmp_path / "empty" / "metadata.jsonl").write_text("\n")
    with pytest.raises(InvgenDataError, match="the image set is empty"):
        read_imagefolder(tmp_path / "empty")
    with pytest.raises(InvgenDataError, match="no such image folder"):
        read_imagefolder(tmp_path / "nope")


def test_digits_deterministic_and_biased():
    a = build_splits(p_align=0.95, size=16, seed=3)
    b = build_splits(p_align=0.95, size=16, seed=3)
    assert np.array_equal(a["train"].images, b["train"].images)
    aligned = np.mean([r.attributes["bias_aligned"] for r in a["train"].records])
    assert 0.93 < aligned < 0.97
    # The test split shows every digit in both colors: balanced.
    test_aligned = np.mean([r.attributes["bias_aligned"] for r in a["test"].records])
    assert test_aligned == 0.5
    c = build_splits(p_align=0.95, size=16, seed=4)
    assert not np.array_equal(a["train"].images, c["train"].images)


def test_make_colored_digits_reuses_and_rebuilds(tmp_path):
    out = make_colored_digits(tmp_path / "d", p_align=0.9)
    stamp = (out / "train" / "metadata.jsonl").stat().st_mtime_ns
    make_colored_digits(tmp_path / "d", p_align=0.9)
    assert (out / "train" / "metadata.jsonl").stat().st_mtime_ns == stamp
    make_colored_digits(tmp_path / "d", p_align=0.5)
    assert json.loads((out / "dataset.json").read_text())["p_align"] == 0.5


@pytest.mark.parametrize("palette", ["two", "ten"])
def test_color_oracle_is_exact_on_the_benchmark(palette):
    split = build_splits(p_align=0.5, size=16, palette_name=palette, seed=0)["test"]
    oracle = ColorOracle(palette)
    truth = np.array([r.attributes["color_index"] for r in split.records])
    assert (oracle(split.images) == truth).all()


def test_color_oracle_reads_hue_not_brightness():
    oracle = ColorOracle("two")
    img = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    img[0, 2:6, 2:6] = (120, 20, 20)  # dark red digit
    img[1, 2:6, 2:6] = (30, 250, 40)  # bright green digit
    img[1, 0, 0] = (255, 0, 0)  # a single red pixel does not flip the majority hue
    assert oracle(img).tolist() == [0, 1]
