"""Attributes as top-level metadata columns (the `datasets` imagefolder layout), and the older nested form."""

import json

import numpy as np
import pytest
from PIL import Image

from invgen.cli import main
from invgen.data.imagefolder import ImageRecord, read_imagefolder, read_metadata, write_imagefolder
from invgen.errors import InvgenDataError
from invgen.metrics.classifiers.metadata import MetadataAttribute

NURSE, DOCTOR = "a photo of the face of a nurse", "a photo of the face of a doctor"
# nurse: 4 women, 0 men (bias 1.0); doctor: 1 woman, 3 men (bias 0.5); mean over prompts 0.75
GENDERS = [(NURSE, "woman")] * 4 + [(DOCTOR, "woman")] + [(DOCTOR, "man")] * 3


def export(root, lines):
    """An image set as another tool exports it: 8x8 gray PNGs and metadata.jsonl lines written as given."""
    root.mkdir(parents=True)
    for line in lines:
        Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(root / line["file_name"])
    (root / "metadata.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return root


def gender_lines(form):
    """GENDERS as metadata lines: `gender` a top-level column, nested under `attributes`, or alternating."""
    lines = []
    for i, (prompt, gender) in enumerate(GENDERS):
        nested = form == "nested" or (form == "mixed" and i % 2)
        line = {"file_name": f"{i}.png", "prompt": prompt, "seed": i}
        line.update({"attributes": {"gender": gender}} if nested else {"gender": gender})
        lines.append(line)
    return lines


def metrics(root, tmp_path, capsys):
    out = tmp_path / "report" / "report.json"
    code = main(["metrics", str(root), "--classifier", "metadata", "--attribute", "gender", "--out", str(out),
                 "--bootstrap", "0", "--no-plots"])
    captured = capsys.readouterr()
    return code, (json.loads(out.read_text()) if code == 0 else None), captured.err.strip()


# ------------------------------------------------------------------------------------------- reading
@pytest.mark.parametrize("form", ["top-level", "nested", "mixed"])
def test_metrics_cli_reads_the_attribute_in_either_form(tmp_path, capsys, form):
    root = export(tmp_path / "set", gender_lines(form))
    code, report, err = metrics(root, tmp_path, capsys)
    assert code == 0, err
    assert report["values"] == ["man", "woman"] and report["n_images"] == 8
    assert report["per_prompt"][NURSE]["counts"] == {"man": 0, "woman": 4}
    assert report["per_prompt"][DOCTOR]["counts"] == {"man": 3, "woman": 1}
    assert report["bias_score"] == pytest.approx(0.75)


def test_same_value_in_both_places_reads(tmp_path, capsys):
    lines = gender_lines("top-level")
    lines[2]["attributes"] = {"gender": lines[2]["gender"]}
    code, report, err = metrics(export(tmp_path / "set", lines), tmp_path, capsys)
    assert code == 0, err
    assert report["per_prompt"][NURSE]["counts"] == {"man": 0, "woman": 4}


def test_conflicting_places_are_one_sentence_naming_line_and_column(tmp_path, capsys):
    lines = gender_lines("top-level")
    lines[1]["attributes"] = {"gender": "man"}
    root = export(tmp_path / "set", lines)
    code, _, err = metrics(root, tmp_path, capsys)
    assert code == 2
    assert err == (f"error: {root}/metadata.jsonl:2: column 'gender' is 'woman' at the top level "
                   "but 'man' under 'attributes'")
    # 1 and true are different JSON values, so they conflict too
    lines[1]["attributes"] = {"flag": True}
    lines[1]["flag"] = 1
    export(tmp_path / "other", lines)
    with pytest.raises(InvgenDataError, match=r"metadata.jsonl:2: column 'flag' is 1 at the top level but True"):
        read_metadata(tmp_path / "other")


def test_missing_attribute_names_both_places(tmp_path, capsys):
    lines = gender_lines("mixed")
    del lines[2]["gender"]
    root = export(tmp_path / "set", lines)
    code, _, err = metrics(root, tmp_path, capsys)
    assert code == 2
    assert err == (f"error: {root}/metadata.jsonl:3: no attribute 'gender' "
                   "(neither a top-level column nor under 'attributes')")
    with pytest.raises(InvgenDataError) as e:
        read_imagefolder(root, load_images=False).attribute("gender")
    assert str(e.value) == (f"{root}/metadata.jsonl:3: no attribute 'gender' "
                            "(neither a top-level column nor under 'attributes')")


def test_line_numbers_count_blank_lines_and_records_made_in_memory_name_their_file(tmp_path):
    root = export(tmp_path / "set", gender_lines("top-level")[:2])
    text = (root / "metadata.jsonl").read_text()
    (root / "metadata.jsonl").write_text("\n" + text.replace('"gender": "woman"}\n', '"age": 3}\n', 1))
    with pytest.raises(InvgenDataError, match=r"metadata.jsonl:2: no attribute 'gender'"):
        read_imagefolder(root, load_images=False).attribute("gender")
    with pytest.raises(InvgenDataError, match=r"^metadata.jsonl \(x.png\): no attribute 'gender'"):
        ImageRecord("x.png", "p").attribute("gender")
    recs = [ImageRecord(f"{i}.png", "p", attributes={"g": g}) for i, g in enumerate("ab")] + [ImageRecord("2.png", "p")]
    with pytest.raises(InvgenDataError, match=r"^set/metadata.jsonl:3: no attribute 'g'"):
        MetadataAttribute("g").from_records(recs, where="set/metadata.jsonl")


def test_metadata_agreement_reads_a_top_level_column(tmp_path, capsys):
    from helpers import RGB

    lines, images = [], []
    for i, color in enumerate(["red", "red", "green", "red"]):
        lines.append({"file_name": f"{i}.png", "prompt": "p", "color": "green" if i == 0 else color})
        images.append(np.full((8, 8, 3), RGB[color], np.uint8))
    root = export(tmp_path / "set", lines)
    for line, image in zip(lines, images, strict=True):
        Image.fromarray(image).save(root / line["file_name"])
    out = tmp_path / "r.json"
    assert main(["metrics", str(root), "--attribute", "color", "--classifier", "oracle:color", "--out", str(out),
                 "--bootstrap", "0", "--no-plots"]) == 0
    assert json.loads(out.read_text())["metadata_agreement"] == pytest.approx(0.75)


# ------------------------------------------------------------------------------------------- oracle groups
def test_oracle_groups_read_a_top_level_column(tmp_path):
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open

    from invgen.config import load_config
    from invgen.invdiff.config import InvDiffConfig
    from invgen.invdiff.train import infer_groups
    from invgen.models import tiny_stable_diffusion_components
    from invgen.models.loading import save_pipeline

    sd = save_pipeline(StableDiffusionPipeline(**tiny_stable_diffusion_components(seed=0)), tmp_path / "sd")
    lines = [{"file_name": f"{i:02d}.png", "prompt": "a photo of a bird", "bias_aligned": i % 4 != 0}
             for i in range(12)]
    export(tmp_path / "birds" / "train", lines)
    cfg = load_config(InvDiffConfig, "configs/sd15/invdiff_waterbirds.yaml", [
        f"base_model={sd}", f"output_dir={tmp_path / 'invdiff'}", f"data.root={tmp_path / 'birds'}", "data.size=16",
        f"data.latent_cache={tmp_path / 'cache'}", "data.encode_batch_size=12", "groups.source=oracle",
        "groups.num_groups=2", "train.mixed_precision='no'",
    ])
    out = infer_groups(cfg)
    with safe_open(str(out / "groups.safetensors"), "pt") as f:
        weights = f.get_tensor("weights").numpy()
    # group 1 = bias-conflicting: lines 0, 4 and 8
    assert weights.argmax(1).tolist() == [0 if line["bias_aligned"] else 1 for line in lines]
    assert json.loads((out / "groups.json").read_text())["group_sizes"] == [9.0, 3.0]


# ------------------------------------------------------------------------------------------- writing
def _records():
    return [
        ImageRecord("a.png", "a photo of the digit 3", 3, {"color": "red", "bias_aligned": True}, {"seed": 7}),
        ImageRecord("sub/b.png", "a photo of the digit 5", None, {"color": "green", "bias_aligned": False},
                    {"seed": 8}),
    ]


def test_writer_puts_attributes_in_top_level_columns_and_round_trips(tmp_path):
    images = [np.zeros((8, 8, 3), np.uint8)] * 2
    root = write_imagefolder(tmp_path / "set", images, _records())
    raw = (root / "metadata.jsonl").read_bytes()
    assert [json.loads(line) for line in raw.splitlines()] == [
        {"file_name": "a.png", "prompt": "a photo of the digit 3", "label": 3, "color": "red", "bias_aligned": True,
         "seed": 7},
        {"file_name": "sub/b.png", "prompt": "a photo of the digit 5", "color": "green", "bias_aligned": False,
         "seed": 8},
    ]
    back = read_imagefolder(root)
    assert back.attribute("color") == ["red", "green"] and back.attribute("bias_aligned") == [True, False]
    assert back.attribute("seed") == [7, 8] and back.records[1].label is None
    assert [r.to_json() for r in back.records] == [r.to_json() for r in _records()]
    again = write_imagefolder(tmp_path / "again", images, back.records)
    assert (again / "metadata.jsonl").read_bytes() == raw


def test_an_old_nested_set_is_rewritten_with_top_level_columns(tmp_path):
    root = export(tmp_path / "old", gender_lines("nested"))
    old = read_imagefolder(root)
    out = write_imagefolder(tmp_path / "new", list(old.images), old.records)
    first = json.loads((out / "metadata.jsonl").read_text().splitlines()[0])
    assert first == {"file_name": "0.png", "prompt": NURSE, "gender": "woman", "seed": 0}
    assert read_imagefolder(out, load_images=False).attribute("gender") == [g for _, g in GENDERS]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (ImageRecord("x.png", "p", attributes={"prompt": "q"}),
         "attributes column 'prompt' clashes with the reserved key 'prompt' of metadata.jsonl "
         "(file_name, prompt, label, attributes); rename it"),
        (ImageRecord("x.png", "p", extra={"label": 1}),
         "extra column 'label' clashes with the reserved key 'label' of metadata.jsonl "
         "(file_name, prompt, label, attributes); rename it"),
        (ImageRecord("x.png", "p", attributes={"file_name": "y.png"}),
         "attributes column 'file_name' clashes with the reserved key 'file_name'"),
        (ImageRecord("x.png", "p", attributes={"seed": 1}, extra={"seed": 2}),
         "column 'seed' is 1 in attributes but 2 in extra"),
        (ImageRecord("x.png", "p", attributes={3: "a"}), "column name 3 in attributes is not a string"),
    ],
)
def test_writer_refuses_reserved_and_clashing_columns_before_writing(tmp_path, record, message):
    with pytest.raises(InvgenDataError) as e:
        write_imagefolder(tmp_path / "set", [np.zeros((8, 8, 3), np.uint8)], [record])
    assert str(e.value).startswith(f"{tmp_path / 'set'}") and message in str(e.value)
    assert ":1: " in str(e.value)
    assert not (tmp_path / "set").exists()


def test_digits_builder_writes_columns_and_still_reuses_a_set_it_wrote_nested(tmp_path):
    from invgen.benchmarks.digits.data import make_colored_digits

    out = make_colored_digits(tmp_path / "d", p_align=0.9, size=8)
    meta = out / "test" / "metadata.jsonl"
    first = json.loads(meta.read_text().splitlines()[0])
    assert "attributes" not in first and {"color", "color_index", "bias_aligned", "source_index"} <= set(first)
    colors = read_imagefolder(out / "test", load_images=False).attribute("color")
    # The same set in the form invgen wrote before this change: still recognised (not rebuilt) and read alike.
    keys = ("color", "color_index", "bias_aligned", "source_index")
    nested = []
    for line in meta.read_text().splitlines():
        rec = json.loads(line)
        rec["attributes"] = {k: rec.pop(k) for k in keys}
        nested.append(json.dumps(rec) + "\n")
    meta.write_text("".join(nested))
    stamp = meta.stat().st_mtime_ns
    make_colored_digits(tmp_path / "d", p_align=0.9, size=8)
    assert meta.stat().st_mtime_ns == stamp
    assert read_imagefolder(out / "test", load_images=False).attribute("color") == colors


def test_datasets_loads_an_invgen_set_with_the_attributes_as_columns(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    from datasets import load_dataset

    images = [np.full((8, 8, 3), v, np.uint8) for v in (10, 200)]
    records = [ImageRecord(r.file_name.replace("sub/", ""), r.prompt, 3, r.attributes, r.extra) for r in _records()]
    root = write_imagefolder(tmp_path / "set", images, records)
    ds = load_dataset("imagefolder", data_dir=str(root), split="train")
    assert {"image", "prompt", "label", "color", "bias_aligned", "seed"} <= set(ds.column_names)
    rows = sorted(ds, key=lambda row: row["seed"])
    assert [row["color"] for row in rows] == ["red", "green"]
    assert [row["bias_aligned"] for row in rows] == [True, False]
    assert [np.asarray(row["image"])[0, 0, 0] for row in rows] == [10, 200]


def test_oracle_truth_helper_tells_apart_bool_and_categorical_columns(tmp_path):
    from invgen.invdiff.train import true_groups

    lines = [{"file_name": f"{i}.png", "prompt": "p", "bias_aligned": i != 1, "background": "wl"[i % 2]}
             for i in range(3)]
    lines[2]["attributes"] = {"background": lines[2].pop("background")}  # one line in the older form
    s = read_imagefolder(export(tmp_path / "s", lines), load_images=False)
    assert true_groups(s, "bias_aligned").tolist() == [0, 1, 0]
    assert true_groups(s, "background").tolist() == [1, 0, 1]
    assert true_groups(s, "gender") is None
