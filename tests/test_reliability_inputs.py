"""Numbers and messages (issue 13, round 2), each example through the real entry point.

A refused input exits 2 with exactly one `error: ...` line naming the option, field or file, prints no
traceback, and leaves every user file as it was (checked by a hash of the folder). The color oracle
counts images without color as unreadable instead of calling them red.
"""

import json
import math

import numpy as np
import pytest
from helpers import P3, P5, tree_hash, write_set

from invgen.cli import main as cli_main
from invgen.errors import InvgenDataError
from invgen.train.__main__ import main as train_main

ORACLE = ("--attribute", "color", "--classifier", "oracle:color")  # general code has no default classifier


def error_line(capsys) -> str:
    """The only `error:` line on stderr, which must also be its last line; no traceback anywhere."""
    captured = capsys.readouterr()
    err = captured.err
    assert "Traceback" not in err + captured.out
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and err.strip().splitlines()[-1] == lines[0], err
    return lines[0]


def refused(capsys, tmp_path, run, *args) -> str:
    """Run `run(args)`, check exit 2, one line and an unchanged tmp_path; return the error line."""
    before = tree_hash(tmp_path)
    assert run(list(args)) == 2
    line = error_line(capsys)
    assert tree_hash(tmp_path) == before, "a refused command changed the user's files"
    return line


@pytest.fixture()
def colored(tmp_path):
    return write_set(tmp_path / "set", {P3: ["red", "red", "green", "red"], P5: ["red", "green", "red", "green"]})


# ------------------------------------------------------------------------------------------ numbers: sample
@pytest.mark.parametrize(("option", "value", "message"), [
    ("--scale", "nan", "error: --scale must be a finite number, got nan"),
    ("--scale", "1e30", "error: --scale must be between -10 and 10, got 1e+30"),
    ("--scale", "-inf", "error: --scale must be a finite number, got -inf"),
    ("--guidance-scale", "nan", "error: --guidance-scale must be a finite number, got nan"),
    ("--guidance-scale", "-1", "error: --guidance-scale must be between 0 and 100, got -1.0"),
    ("--seed", "-1", "error: --seed must be an integer from 0 to 4294967295, got -1"),
])
def test_sample_refuses_numbers_out_of_range(tmp_path, capsys, option, value, message):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(P3 + "\n")
    line = refused(capsys, tmp_path, cli_main, "sample", "--pipeline", str(tmp_path / "pipe"), "--prompts",
                   str(prompts), "--out", str(tmp_path / "out"), option, value)
    assert line == message


# ------------------------------------------------------------------------------------------ numbers: configs
def test_non_finite_config_values_name_the_field(tmp_path, capsys):
    config = tmp_path / "inv.yaml"
    config.write_text("objective:\n  lam: .nan\n")
    common = [f"output_dir={tmp_path / 'run'}", f"data.root={tmp_path / 'data'}"]
    line = refused(capsys, tmp_path, train_main, "invdiff", *common, "objective.lam=.inf")
    assert line == "error: objective.lam: must be a finite number, got inf"
    line = refused(capsys, tmp_path, train_main, "invdiff", "--config", str(config), *common)
    assert line == "error: objective.lam: must be a finite number, got nan"
    line = refused(capsys, tmp_path, train_main, "base", *common, "train.learning_rate=1e999")
    assert line == "error: train.learning_rate: must be a finite number, got 1e999"
    line = refused(capsys, tmp_path, train_main, "cdvg", *common, "translator.guidance_scale=-2")
    assert line == "error: config: translator.guidance_scale: must be between 0 and 100, got -2.0"
    assert not (tmp_path / "run").exists()


def test_a_config_that_is_not_utf8_is_one_sentence(tmp_path, capsys):
    config = tmp_path / "latin1.yaml"
    config.write_bytes(b"train:\n  learning_rate: 1e-3 # caf\xe9\n")
    line = refused(capsys, tmp_path, train_main, "base", "--config", str(config), f"output_dir={tmp_path / 'run'}")
    assert line == f"error: {config}: not UTF-8 text (byte 35)"


# ------------------------------------------------------------------------------------ numbers: other commands
def test_data_digits_refuses_a_nan_share(tmp_path, capsys):
    line = refused(capsys, tmp_path, cli_main, "data", "digits", "--out", str(tmp_path / "d"), "--p-align", "nan")
    assert line == "error: --p-align must be a finite number, got nan"


@pytest.mark.parametrize(("args", "message"), [
    (["--confidence", "nan"], "error: --confidence must lie between 0 and 1, got nan"),
    (["--seed", "-3"], "error: --seed must be an integer from 0 to 4294967295, got -3"),
    (["--bootstrap", "1000000000"], "error: --bootstrap must be 100000 or less, got 1000000000"),
    (["--target", "nan,1"], "error: the target shares must be positive and sum to 1, got [nan, 1.0]"),
])
def test_metrics_refuses_numbers_out_of_range(tmp_path, colored, capsys, args, message):
    assert refused(capsys, tmp_path, cli_main, "metrics", str(colored), *ORACLE, *args) == message


@pytest.mark.parametrize(("args", "message"), [
    (["--noise-levels", "nan:1"], "error: --noise-levels must be a finite number, got nan"),
    (["--noise-levels", "0.1,inf"], "error: --noise-levels must be a finite number, got inf"),
    (["--guidance-scale", "inf"], "error: --guidance-scale must be a finite number, got inf"),
    (["--seed", "99999999999"], "error: --seed must be an integer from 0 to 4294967295, got 99999999999"),
])
def test_views_genview_refuses_numbers_out_of_range(tmp_path, colored, capsys, args, message):
    line = refused(capsys, tmp_path, cli_main, "views", "genview", "--images", str(colored), "--out",
                   str(tmp_path / "views"), "--model", str(tmp_path / "pipe"), *args)
    assert line == message


# ------------------------------------------------------------------------------------------------ JSON
def test_json_writers_refuse_nan_and_leave_the_old_file(tmp_path):
    from invgen.atomic import write_json
    from invgen.data.imagefolder import ImageRecord, read_metadata, write_metadata

    out = tmp_path / "summary.json"
    write_json(out, {"a": 1})
    with pytest.raises(InvgenDataError) as e:
        write_json(out, {"a": 1, "figures": {"bias": [0.5, float("nan")]}})
    assert str(e.value) == (f"{out}: figures.bias.1 is not a finite number, and JSON cannot hold NaN or infinity")
    assert json.loads(out.read_text()) == {"a": 1}

    write_set(tmp_path / "set", {P3: ["red"]})
    before = tree_hash(tmp_path / "set")
    with pytest.raises(InvgenDataError) as e:
        write_metadata(tmp_path / "set", [ImageRecord("000.png", P3, extra={"scale": float("inf")})])
    assert str(e.value) == (f"{tmp_path / 'set' / 'metadata.jsonl'}:1: scale is not a finite number, "
                            "and JSON cannot hold NaN or infinity")
    assert tree_hash(tmp_path / "set") == before and len(read_metadata(tmp_path / "set")) == 1


# ------------------------------------------------------------------------------------------ the color oracle
def test_colorless_images_are_unreadable_not_red():
    from invgen.benchmarks.digits.oracle import ColorOracle

    images = np.zeros((5, 8, 8, 3), np.uint8)
    images[1] = 128  # gray
    images[2, 2:6, 2:6] = (235, 45, 45)  # red digit on black
    images[3, 2:6, 2:6] = (45, 215, 60)  # green
    images[4] = (120, 122, 121)  # gray with rounding noise
    assert ColorOracle("two")(images).tolist() == [-1, -1, 0, 1, -1]


def test_an_all_black_set_is_reported_unreadable_not_red(tmp_path, capsys):
    black = write_set(tmp_path / "black", {P3: ["black", "black"], P5: ["black", "black"]})
    assert cli_main(["metrics", str(black), *ORACLE, "--bootstrap", "50", "--no-plots"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((black / "report.json").read_text())
    assert report["n_images"] == 4 and report["n_unreadable"] == 4
    assert report["bias_score"] is None and report["pooled"]["counts"] == {"red": 0, "green": 0}
    assert report["per_prompt"][P3]["unreadable"] == 2 and report["per_prompt"][P3]["bias_score"] is None
    assert "**4 of 4 images are unreadable**" in printed
    assert "| bias score ↓ | – |" in printed


def test_unreadable_images_are_left_out_of_the_figures(tmp_path, capsys):
    mixed = write_set(tmp_path / "mixed", {P3: ["red", "black", "red", "black"], P5: ["red", "green"]})
    assert cli_main(["metrics", str(mixed), *ORACLE, "--bootstrap", "0", "--no-plots"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((mixed / "report.json").read_text())
    p3, p5 = report["per_prompt"][P3], report["per_prompt"][P5]
    assert p3["counts"] == {"red": 2, "green": 0} and p3["n"] == 2 and p3["unreadable"] == 2
    assert p3["bias_score"] == 1.0 and p5["bias_score"] == 0.0 and report["bias_score"] == 0.5
    assert report["n_unreadable"] == 2 and report["pooled"]["counts"] == {"red": 3, "green": 1}
    assert f"| {P3} | 2 | 2 | 0 | 2 |" in printed  # the unreadable column
    # ... and side by side, the count stays visible.
    other = write_set(tmp_path / "other", {P3: ["red", "green"], P5: ["red", "green"]})
    assert cli_main(["metrics", str(other), *ORACLE, "--compare", str(mixed), "--bootstrap", "0", "--no-plots"]) == 0
    assert "| unreadable (left out) | 0 | 2 |" in capsys.readouterr().out


def test_digit_figures_count_unreadable_images():
    from invgen.benchmarks.digits.metrics import digit_figures

    class ReadsThree:
        def predict(self, images):
            return np.full(len(images), 3)

    images = np.zeros((4, 8, 8, 3), np.uint8)
    images[0, 2:6, 2:6] = (235, 45, 45)
    figures = digit_figures(images, [P3, P3, P5, P5], [3, 3, 5, 5], ReadsThree())
    assert figures["unreadable"] == 3 and figures["per_prompt"][P3]["counts"] == {"red": 1, "green": 0}
    assert figures["bias_score"] == 1.0 and math.isnan(figures["per_prompt"][P5]["bias_score"])


# ---------------------------------------------------------------------------------------- messages
@pytest.mark.parametrize(("content", "why"), [
    ("[1, 2, 3]", "not a bias report (a JSON list, not an object)"),
    ('{"hello": "world"}', "not a bias report (no 'samples', 'attribute', 'values', 'n_images', 'per_prompt'; "),
    ('{"samples": "s", "attribute": "color", "values": [1, 2], "n_images": 4, "per_prompt": {}}',
     "not a bias report ('values' must list the attribute's values as text)"),
    ('{"samples": "s", "attribute": "color", "values": ["red"], "n_images": 4, "per_prompt": {"p": 3}}',
     "not a bias report (per_prompt entry 'p' has no counts)"),
    (b"\xff\xfe not text", "not a bias report (not UTF-8 text)"),
])
def test_compare_with_a_json_that_is_not_a_report(tmp_path, colored, capsys, content, why):
    other = tmp_path / "other.json"
    other.write_bytes(content if isinstance(content, bytes) else content.encode())
    line = refused(capsys, tmp_path, cli_main, "metrics", str(colored), *ORACLE, "--compare", str(other))
    assert line.startswith(f"error: {other}: {why}")


def test_a_newline_in_a_file_name_stays_on_one_line(tmp_path, capsys):
    folder = write_set(tmp_path / "set", {P3: ["red", "green"]})
    meta = folder / "metadata.jsonl"
    meta.write_text(meta.read_text() + json.dumps({"file_name": "evil\nname.png", "prompt": P3}) + "\n")
    line = refused(capsys, tmp_path, cli_main, "metrics", str(folder), *ORACLE)
    assert line == f"error: {meta}:3: image 'evil\\nname.png' does not exist"

    odd = tmp_path / "new\nline"
    write_set(odd, {P3: ["red"]})
    (odd / "000.png").write_bytes(b"\x89PNG cut")
    line = refused(capsys, tmp_path, cli_main, "metrics", str(odd), *ORACLE)
    assert line.startswith(f"error: {str(odd / 'metadata.jsonl')!r}:1: image 000.png is unreadable or truncated")


def test_an_error_with_a_control_character_from_anywhere_is_one_line(tmp_path, capsys):
    # The CLI's last guard: a path that reaches a message unquoted is escaped there.
    prompts = tmp_path / "bad\rprompts.txt"
    line = refused(capsys, tmp_path, cli_main, "sample", "--pipeline", str(tmp_path / "p"), "--prompts",
                   str(prompts), "--out", str(tmp_path / "o"))
    assert "bad\\rprompts.txt" in line


def test_bias_score_of_a_table_says_which_function_to_use():
    from invgen.metrics import bias_score

    with pytest.raises(ValueError) as e:
        bias_score([[3, 1], [2, 2]])
    assert str(e.value) == ("bias_score takes one row of K counts, got an array of shape (2, 2): use "
                            "bias_score_batch for a table (one value per row)")
    assert bias_score([3, 1]) == 0.5


def test_app_refuses_a_missing_runs_folder_and_warns_on_the_network(tmp_path, monkeypatch, capsys):
    import invgen.app

    calls = []
    monkeypatch.setattr(invgen.app, "launch", lambda *a, **kw: calls.append((a, kw)))
    line = refused(capsys, tmp_path, cli_main, "app", "--runs", str(tmp_path / "nowhere"))
    assert line == f"error: --runs {tmp_path / 'nowhere'} does not exist"
    monkeypatch.chdir(tmp_path)  # no runs/ here
    line = refused(capsys, tmp_path, cli_main, "app")
    assert line == "error: there is no runs folder here: give --runs FOLDER or --pipeline, or run `invgen demo` first"
    assert calls == []

    (tmp_path / "runs").mkdir()
    assert cli_main(["app"]) == 0
    assert capsys.readouterr().err == ""  # the default, 127.0.0.1, is private: no warning
    assert cli_main(["app", "--host", "0.0.0.0"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: with --host 0.0.0.0 the app is reachable from the network")
    assert len(calls) == 2 and calls[1][1]["host"] == "0.0.0.0"
