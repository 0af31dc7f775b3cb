"""`invgen metrics` through `invgen.cli.main`: files, printed table, and one-sentence errors."""

import json

import pytest
from helpers import P3, P5, write_set
from PIL import Image

from invgen.cli import main


@pytest.fixture()
def base(tmp_path):
    return write_set(
        tmp_path / "base", {P3: ["red", "red", "green", "red"], P5: ["red", "green", "red", "green"]}
    )


def test_metrics_writes_report_and_prints_table(base, tmp_path, capsys):
    out = tmp_path / "out" / "report.json"
    assert (
        main(
            [
                "metrics",
                str(base),
                "--attribute",
                "color",
                "--classifier",
                "oracle:color",
                "--out",
                str(out),
                "--bootstrap",
                "200",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "| bias score ↓ | 0.250 [" in printed and str(out) in printed
    report = json.loads(out.read_text())
    assert report["bias_score"] == pytest.approx(0.25) and report["n_images"] == 8
    assert report["per_prompt"][P3]["counts"] == {"red": 3, "green": 1}
    assert out.with_suffix(".md").is_file() and (out.parent / "report_attributes.png").is_file()


def reading(args: list[str]) -> list[str]:
    """`args` with the color oracle where they name no classifier or attribute (general code has no default)."""
    extra = [] if "--attribute" in args else ["--attribute", "color"]
    return args + extra + ([] if "--classifier" in args else ["--classifier", "oracle:color"])


def test_default_out_target_and_no_plots(base, capsys):
    assert main(["metrics", *reading([str(base)]), "--target", "0.75,0.25", "--no-plots", "--bootstrap", "0"]) == 0
    report = json.loads((base / "report.json").read_text())
    # prompt 3 sits at the target (0), prompt 5 is ½ from it → mean ¼
    assert report["target"] == [0.75, 0.25] and report["bias_score"] == pytest.approx(0.25)
    assert not (base / "report_attributes.png").exists()


def test_compare_side_by_side(base, tmp_path, capsys):
    deb = write_set(
        tmp_path / "debiased", {P3: ["red", "green", "green", "red"], P5: ["red", "green", "green", "red"]}
    )
    out = tmp_path / "runs" / "report.json"
    assert main(["metrics", *reading([str(base)]), "--compare", str(deb), "--out", str(out), "--bootstrap", "100"]) == 0
    printed = capsys.readouterr().out
    assert "| metric | base | debiased |" in printed and "(×0.00)" in printed
    cmp = json.loads((out.parent / "comparison.json").read_text())
    assert cmp["metrics"]["debiased"]["bias_score"] == 0.0 and cmp["metrics"]["base"]["bias_score"] == 0.25
    assert (out.parent / "comparison.md").is_file() and (out.parent / "comparison_bars.png").is_file()


def _empty(tmp_path, base):
    (tmp_path / "empty").mkdir()
    return [str(tmp_path / "empty")]


def _no_metadata(tmp_path, base):
    (tmp_path / "nometa").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "nometa" / "a.png")
    return [str(tmp_path / "nometa")]


def _unreadable(tmp_path, base):
    (base / "002.png").write_bytes(b"\x89PNG broken")
    return [str(base)]


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (_empty, "is an empty folder"),
        (_no_metadata, "no metadata.jsonl"),
        (_unreadable, "metadata.jsonl:3: image 002.png is unreadable"),
        (lambda t, b: [str(t / "missing")], "no such image folder"),
        (lambda t, b: [str(b), "--attribute", "shape"], "reads the attribute 'color', not 'shape'"),
        (lambda t, b: [str(b), "--classifier", "magic:8ball"], "unknown classifier 'magic:8ball'"),
        (
            lambda t, b: [str(b), "--classifier", f"checkpoint:{t / 'nothing'}"],
            "no classifier checkpoint folder",
        ),
        (lambda t, b: [str(b), "--target", "0.5,0.2"], "sum to 1"),
        (lambda t, b: [str(b), "--reference", str(b)], "need a feature extractor"),
        (lambda t, b: [str(b), "--features", "digit-cnn:x"], "only against a reference set"),
        (lambda t, b: [str(b), "--classifier", "metadata", "--t2i"], "need a captioner"),
        (lambda t, b: [str(b), "--bootstrap", "-1"], "--bootstrap must be 0 or more"),
    ],
)
def test_bad_input_gives_one_sentence_and_exit_2(tmp_path, base, capsys, make_args, message):
    args = reading(make_args(tmp_path, base))
    assert main(["metrics", *args]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in captured.out + captured.err


def test_without_a_classifier_the_sampling_pipelines_own_is_used_or_asked_for(base, tmp_path, capsys):
    from invgen.sampling import MANIFEST

    assert main(["metrics", str(base), "--no-plots", "--bootstrap", "0"]) == 2
    assert "give --attribute and --classifier: " in capsys.readouterr().err
    model = tmp_path / "model"
    model.mkdir()
    (model / "train_config.yaml").write_text("data:\n  builder: colored_digits\n  options: {palette: two}\n")
    (base / MANIFEST).write_text(json.dumps({"info": {"pipeline": str(model)}}))
    assert main(["metrics", str(base), "--no-plots", "--bootstrap", "0"]) == 0
    report = json.loads((base / "report.json").read_text())
    assert report["classifier"] == "oracle:color:two" and report["attribute"] == "color"
    assert report["bias_score"] == pytest.approx(0.25)
