"""bias_report on small image sets whose figures are computed by hand; writers; comparison."""

import json
import math

import numpy as np
import pytest
from helpers import P3, P5, RGB, write_set
from PIL import Image

from invgen.errors import InvgenConfigError, InvgenDataError
from invgen.metrics.compare import compare_reports
from invgen.metrics.render import json_safe, report_markdown, write_comparison, write_report
from invgen.metrics.report import attribute_figures, bias_report, images_report, parse_target


@pytest.fixture()
def base(tmp_path):
    # prompt 3: 3 red, 1 green → bias ½; prompt 5: 2 and 2 → 0
    return write_set(
        tmp_path / "base", {P3: ["red", "red", "green", "red"], P5: ["red", "green", "red", "green"]}
    )


def test_two_values_by_hand(base):
    r = bias_report(base, "color", "oracle:color", n_boot=500)
    assert r["n_images"] == 8 and r["n_prompts"] == 2 and r["values"] == ["red", "green"]
    assert r["target"] == [0.5, 0.5]
    # overall = mean over prompts of the per-prompt figures
    assert r["bias_score"] == pytest.approx((0.5 + 0.0) / 2)
    assert r["fairness_discrepancy"] == pytest.approx((math.sqrt(2 * 0.25**2) + 0) / 2)
    assert r["kl_uniform"] == pytest.approx((0.75 * math.log(1.5) + 0.25 * math.log(0.5)) / 2)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)
    assert r["entropy"] == pytest.approx((h + 1.0) / 2)
    p3 = r["per_prompt"][P3]
    assert p3["counts"] == {"red": 3, "green": 1} and p3["n"] == 4 and p3["bias_score"] == pytest.approx(0.5)
    assert p3["ci"]["bias_score"][0] <= 0.5 <= p3["ci"]["bias_score"][1]
    # pooled: 5 red, 3 green → |5 − 3| / 8
    assert r["pooled"]["counts"] == {"red": 5, "green": 3}
    assert r["pooled"]["bias_score"] == pytest.approx(0.25)
    assert r["metadata_agreement"] == 1.0
    assert set(r["ci"]) >= {"bias_score", "fairness_discrepancy", "kl_uniform", "entropy"}


@pytest.mark.parametrize(
    "target", ["0.75,0.25", "red=0.75,green=0.25", "75/25", [0.75, 0.25], {"red": 0.75, "green": 0.25}]
)
def test_target_75_25(base, target):
    r = bias_report(base, "color", "oracle:color", target=target, n_boot=0)
    assert r["target"] == pytest.approx([0.75, 0.25])
    # prompt 3 is exactly 75/25 → 0; prompt 5 (50/50) against 75/25 → ½ (see test_metrics_fairness)
    assert r["per_prompt"][P3]["bias_score"] == pytest.approx(0.0)
    assert r["per_prompt"][P5]["bias_score"] == pytest.approx(0.5)
    assert r["bias_score"] == pytest.approx(0.25)
    assert r["kl_uniform"] != r["kl_target"]


def test_single_prompt(tmp_path):
    d = write_set(tmp_path / "one", {P3: ["green", "green", "green", "red"]})
    r = bias_report(d, "color", "oracle:color", n_boot=100)
    assert r["n_prompts"] == 1 and r["bias_score"] == pytest.approx(0.5)
    assert r["entropy"] == r["per_prompt"][P3]["entropy"]


def test_four_values_with_an_empty_group_from_metadata(tmp_path):
    # classifier "metadata": the values written in metadata.jsonl, four names given so "d" is an empty group
    d = write_set(tmp_path / "k4", {P3: ["a", "a", "b", "b"], P5: ["a"] * 4 + ["b"] * 2 + ["c", "d"]})
    r = bias_report(d, attribute="color", classifier="metadata", names=["a", "b", "c", "d"], n_boot=0)
    assert r["per_prompt"][P3]["counts"] == {"a": 2, "b": 2, "c": 0, "d": 0}
    # prompt 3: [2, 2, 0, 0] → 8/4/6 = ⅓; prompt 5: [4, 2, 1, 1] → 10/8/6
    assert r["per_prompt"][P3]["bias_score"] == pytest.approx(1 / 3)
    assert r["bias_score"] == pytest.approx((1 / 3 + 10 / 48) / 2)
    assert r["entropy"] == pytest.approx((0.5 + 0.875) / 2)
    assert "metadata_agreement" not in r


def test_a_classifier_object(base):
    class AllGreen:
        names = ["red", "green"]

        def __call__(self, images):
            return np.ones(len(images), dtype=np.int64)

    r = bias_report(base, attribute="color", classifier=AllGreen(), n_boot=0)
    assert r["classifier"] == "AllGreen" and r["bias_score"] == 1.0
    assert r["metadata_agreement"] == pytest.approx(3 / 8)  # three green images in the set


def test_t2i_section_on_the_digits(base):
    r = bias_report(base, "color", "oracle:color", t2i=True, n_boot=0)
    t = r["t2i"]
    # X = {photo, digit}; the oracle's Y = {digit, <color>}: H_J = 1 − 1/3, H⁺ = ½, H⁻ = ½ for every image
    assert t["H_J"] == pytest.approx(2 / 3) and t["H_plus"] == 0.5 and t["H_minus"] == 0.5
    # non-prompt words: red in 5 images, green in 3 → normalised [1, 0] → area ½
    assert t["B_D"] == pytest.approx(0.5) and t["M"] == 2
    assert t["M_G"] is None and "judge" in t["note"]


def test_quality_section_against_itself(base):
    def flat(images):
        return images.reshape(len(images), -1).astype(np.float64)

    r = bias_report(base, "color", "oracle:color", reference=base, features=flat, n_boot=0)
    q = r["quality"]
    assert q["fid"] == pytest.approx(0.0, abs=1e-6) and q["precision"] == 1.0 and q["recall"] == 1.0
    assert q["n_real"] == q["n_fake"] == 8 and q["k"] == 3
    with pytest.raises(InvgenConfigError, match="need a feature extractor"):
        bias_report(base, "color", "oracle:color", reference=base, n_boot=0)


def test_writers(base, tmp_path):
    r = bias_report(base, "color", "oracle:color", n_boot=200)
    paths = write_report(r, tmp_path / "out" / "report.json")
    loaded = json.loads(paths["json"].read_text())
    assert loaded["bias_score"] == pytest.approx(0.25) and loaded["per_prompt"][P3]["counts"]["red"] == 3
    md = paths["markdown"].read_text()
    assert "| bias score ↓ | 0.250 [" in md
    assert f"| {P3} | 4 | 3 | 1 | 0.500 [" in md
    with Image.open(paths["histogram"]) as im:
        assert im.format == "PNG" and im.size[0] > 300
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "report.json",
        "report.md",
        "report_attributes.png",
    ]


def test_json_safe():
    out = json_safe({"a": float("nan"), "b": np.float32(1.5), "c": np.arange(2), "d": [float("inf"), 1]})
    assert out == {"a": None, "b": 1.5, "c": [0, 1], "d": [None, 1]}
    json.dumps(out, allow_nan=False)


def test_compare(base, tmp_path):
    deb = write_set(
        tmp_path / "debiased", {P3: ["red", "green", "green", "red"], P5: ["red", "red", "red", "red"]}
    )
    # base: (½ + 0)/2 = ¼; debiased: (0 + 1)/2 = ½ → ratio 2
    cmp = compare_reports([bias_report(base, "color", "oracle:color", n_boot=100),
                           bias_report(deb, "color", "oracle:color", n_boot=100)])
    assert cmp["labels"] == ["base", "debiased"] and cmp["baseline"] == "base"
    assert cmp["ratio_to_baseline"]["debiased"]["bias_score"] == pytest.approx(2.0)
    assert cmp["per_prompt"][P5]["debiased"]["bias_score"] == 1.0
    paths = write_comparison(cmp, tmp_path / "cmp" / "comparison.json")
    assert "(×2.00)" in paths["markdown"].read_text()
    with Image.open(paths["bars"]) as im:
        assert im.format == "PNG"
    # reports can come from files too
    write_report(bias_report(deb, "color", "oracle:color", n_boot=0), deb / "report.json", plots=False)
    report = bias_report(base, "color", "oracle:color", n_boot=0)
    assert compare_reports([report, deb])["labels"] == ["base", "debiased"]


def test_compare_refuses_different_attributes(base, tmp_path):
    other = write_set(tmp_path / "ten", {P3: ["red", "red"]})
    a = bias_report(base, "color", "oracle:color", n_boot=0)
    b = bias_report(other, attribute="color", classifier="oracle:color:ten", n_boot=0)
    with pytest.raises(InvgenConfigError, match="cannot compare"):
        compare_reports([a, b])
    with pytest.raises(InvgenConfigError, match="at least two"):
        compare_reports([a])


def test_parse_target():
    names = ["red", "green"]
    assert parse_target(None, names) is None
    assert parse_target("75,25", names).tolist() == [0.75, 0.25]
    with pytest.raises(InvgenConfigError, match="2 values"):
        parse_target("0.2,0.3,0.5", names)
    with pytest.raises(InvgenConfigError, match="sum to 1"):
        parse_target("0.5,0.2", names)
    with pytest.raises(InvgenConfigError, match="blue"):
        parse_target("blue=1", names)
    with pytest.raises(InvgenConfigError, match="must be numbers"):
        parse_target("half,half", names)


def test_bad_sets(tmp_path, base):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvgenDataError, match="is an empty folder"):
        bias_report(tmp_path / "empty", "color", "oracle:color")
    (tmp_path / "nometa").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "nometa" / "a.png")
    with pytest.raises(InvgenDataError, match="no metadata.jsonl"):
        bias_report(tmp_path / "nometa", "color", "oracle:color")
    (base / "001.png").write_bytes(b"not a png")
    with pytest.raises(InvgenDataError, match=r"metadata.jsonl:2: image 001.png is unreadable"):
        bias_report(base, "color", "oracle:color")
    with pytest.raises(InvgenConfigError, match="not 'shape'"):
        bias_report(base, classifier="oracle:color", attribute="shape")


def test_markdown_marks_undefined_values():
    r = {
        "samples": "s",
        "n_images": 0,
        "n_prompts": 1,
        "attribute": "color",
        "classifier": "x",
        "values": ["a", "b"],
        "target": [0.5, 0.5],
        "pooled": {},
        "ci": {},
        "per_prompt": {"p": {"n": 0, "counts": {"a": 0, "b": 0}, "bias_score": float("nan")}},
    }
    assert "| p | 0 | 0 | 0 | – | – |" in report_markdown(r)


def test_attribute_figures_from_indices():
    # the same counts as the `base` set, given as attribute indices: prompt 3 → [3, 1], prompt 5 → [2, 2]
    r = attribute_figures([0, 0, 1, 0, 0, 1, 0, 1], [P3] * 4 + [P5] * 4, ["red", "green"], n_boot=0)
    assert r["bias_score"] == pytest.approx(0.25) and r["pooled"]["counts"] == {"red": 5, "green": 3}
    with pytest.raises(InvgenDataError, match="no images"):
        attribute_figures([], [], ["red", "green"])
    with pytest.raises(InvgenConfigError, match="at least two values"):
        attribute_figures([0], [P3], ["red"])


def test_images_report_in_memory():
    images = np.stack([np.full((8, 8, 3), RGB[c], dtype=np.uint8) for c in ["red", "red", "green", "red"]])
    r = images_report(images, [P3] * 4, "color", "oracle:color", n_boot=0, reference=images,
                      features=lambda x: x.reshape(len(x), -1))
    assert r["samples"] == "images" and r["classifier"] == "oracle:color"
    assert r["bias_score"] == pytest.approx(0.5) and r["quality"]["fid"] == pytest.approx(0.0, abs=1e-6)
    assert r["quality"]["reference"] == "4 images in memory"
    with pytest.raises(InvgenDataError, match="4 images but 3 prompts"):
        images_report(images, [P3] * 3, "color", "oracle:color")


class FakeClip:
    """CLIP stand-in: image feature = normalised mean RGB; text with "digit" → (1, 0, 0), else (0, 1, 0)."""

    logit_scale = 10.0

    def encode_images(self, images, batch_size=64):
        import torch

        f = torch.tensor(np.asarray(images, dtype=np.float32).mean(axis=(1, 2)))
        return torch.nn.functional.normalize(f, dim=-1)

    def encode_texts(self, texts):
        import torch

        return torch.tensor([[1.0, 0.0, 0.0] if "digit" in t else [0.0, 1.0, 0.0] for t in texts])


def test_clip_score_and_miss_rate_in_the_report(base):
    r = bias_report(base, "color", "oracle:color", t2i=True, clip=FakeClip(), n_boot=0)
    red, green = np.array(RGB["red"], float), np.array(RGB["green"], float)
    cos_red, cos_green = red[0] / np.linalg.norm(red), green[0] / np.linalg.norm(green)
    # 5 red and 3 green images: CLIP score = 100 · mean cos with the prompt's (1, 0, 0)
    assert r["quality"]["clip_score"] == pytest.approx(100 * (5 * cos_red + 3 * cos_green) / 8, rel=1e-5)
    # judge: the prompt's cos against the blank's (0, 1, 0): red images 0.95 vs 0.18 (hits),
    # green images 0.20 vs 0.94 (misses) → M_G = 3/8
    assert r["t2i"]["M_G"] == pytest.approx(3 / 8)
    assert "note" not in r["t2i"]


def test_reports_are_typed_objects_that_read_and_write_as_the_json_they_always_were(base, tmp_path):
    from invgen.metrics import BiasReport, Comparison, load_report

    report = bias_report(base, "color", "oracle:color", n_boot=0)
    assert isinstance(report, BiasReport) and report.bias_score == report["bias_score"] == pytest.approx(0.25)
    assert "t2i" not in report and report.t2i is None and list(report)[:3] == ["samples", "attribute", "classifier"]
    write_report(report, tmp_path / "r.json", plots=False)
    on_disk = json.loads((tmp_path / "r.json").read_text())
    assert list(on_disk) == list(report) and on_disk["per_prompt"] == report.per_prompt
    # A key another version wrote survives a read and a write.
    (tmp_path / "old.json").write_text(json.dumps({**on_disk, "made_by": "invgen 0.0"}))
    old = load_report(tmp_path / "old.json")
    assert old.extra == {"made_by": "invgen 0.0"} and old["made_by"] == "invgen 0.0"
    assert old == {**on_disk, "made_by": "invgen 0.0"}
    cmp = compare_reports([report, old], ["a", "b"])
    assert isinstance(cmp, Comparison) and cmp.ratio("b") == 1.0 == cmp["ratio_to_baseline"]["b"]["bias_score"]
    with pytest.raises(KeyError):
        report["nothing"]
