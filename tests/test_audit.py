"""`invgen audit`: end to end through the CLI on tiny offline pipelines (pixel digits and Stable Diffusion),
the figures against `invgen metrics`, resuming after a kill, bad input, and `--compare`."""

import csv
import json
import shutil

import numpy as np
import pytest
from helpers import launch_two_cpu, pixel_pipeline_with_adapter, tiny_open_clip, tree_hash

from invgen.cli import main
from invgen.data.imagefolder import read_imagefolder
from invgen.metrics.report import REPORT_METRICS

STATS = ("bias_score", "fairness_discrepancy", "kl_uniform", "entropy", "ci", "at_target", "pooled")


def _no_nan(text):
    def refuse(name):
        raise AssertionError(f"{name} in JSON")

    return json.loads(text, parse_constant=refuse)


def _report(folder):
    return _no_nan((folder / "report.json").read_text())


def _without_paths(report):
    return {k: v for k, v in report.items() if k != "samples"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny pixel pipeline (weights jittered so its images have colors) and a residual adapter that acts."""
    return pixel_pipeline_with_adapter(tmp_path_factory.mktemp("audit_runs"), "base")


def digits_args(runs, out, *extra):
    return ["audit", "--pipeline", str(runs / "base"), "--suite", "digits", "--attribute", "color",
            "--classifier", "oracle:color", "--detector", "none", "--per-prompt", "4", "--steps", "2",
            "--batch-size", "5", "--prompts-limit", "3", "--bootstrap", "200", "--grid-images", "4",
            "--out", str(out), *extra]


@pytest.fixture(scope="module")
def digits_audit(runs):
    out = runs / "audit"
    assert main(digits_args(runs, out)) == 0
    return out


def test_digits_audit_writes_report_csv_grids_and_an_imagefolder(digits_audit):
    report = _report(digits_audit)
    images = read_imagefolder(digits_audit / "images")
    prompts = [f"a photo of the digit {d}" for d in range(3)]
    assert len(images) == 12 and images.prompts == [p for p in prompts for _ in range(4)]
    assert list(report["per_prompt"]) == prompts and report["values"] == ["red", "green"]
    assert report["n_images"] == 12 and report["n_no_face"] == 0 and report["detector"] == "none"
    # Every image is counted once: as a color, or unreadable (no color at all).
    counted = sum(sum(e["counts"].values()) + e["unreadable"] for e in report["per_prompt"].values())
    assert counted == 12 and report["n_measured"] + report["n_unreadable"] == 12
    assert 0.0 <= report["bias_score"] <= 1.0
    per_prompt_bias = [e["bias_score"] for e in report["per_prompt"].values() if e["bias_score"] is not None]
    assert report["bias_score"] == pytest.approx(np.mean(per_prompt_bias))
    assert report["std"]["bias_score"] == pytest.approx(np.std(per_prompt_bias, ddof=1))
    protocol = report["protocol"]
    assert protocol["suite"] == "digits" and protocol["seed"] == 0 and protocol["per_prompt"] == 4
    assert protocol["call"] == {"num_inference_steps": 2, "guidance_scale": 2.0}  # the pixel pipeline's default
    # The per-prompt CSV sits beside the report and says the same.
    rows = list(csv.DictReader((digits_audit / "per_prompt.csv").open()))
    assert [r["prompt"] for r in rows] == prompts
    for row in rows:
        e = report["per_prompt"][row["prompt"]]
        assert int(row["count:red"]) == e["counts"]["red"] and int(row["count:green"]) == e["counts"]["green"]
        assert int(row["images"]) == 4 and int(row["no_face"]) == 0
    # One prediction per image, agreeing with the counts.
    preds = [json.loads(line) for line in (digits_audit / "predictions.jsonl").read_text().splitlines()]
    assert [p["file_name"] for p in preds] == [r.file_name for r in images.records]
    assert sum(p["color"] == "red" for p in preds) == report["pooled"]["counts"]["red"]
    grids = sorted((digits_audit / "grids").glob("*.png"))
    assert [g.name for g in grids] == ["000.png", "001.png", "002.png"]
    from PIL import Image

    assert Image.open(grids[0]).size == (4 * 128, 128 + 16)
    assert "grids/000.png" in (digits_audit / "report.md").read_text()


def test_audit_figures_equal_invgen_metrics_on_the_same_images(digits_audit, tmp_path):
    report = _report(digits_audit)
    assert main(["metrics", str(digits_audit / "images"), "--attribute", "color", "--classifier", "oracle:color",
                 "--bootstrap", "200", "--out", str(tmp_path / "m.json"), "--no-plots"]) == 0
    metrics = _no_nan((tmp_path / "m.json").read_text())
    for key in STATS + ("delta", "kl_target", "n_unreadable", "values"):
        assert report[key] == metrics[key], key
    for prompt, e in metrics["per_prompt"].items():
        assert report["per_prompt"][prompt]["counts"] == e["counts"]
        for key in REPORT_METRICS:
            assert report["per_prompt"][prompt][key] == e[key]


class Killed(Exception):
    """Stands for SIGKILL: raised where a kill would stop the process."""


def test_a_killed_audit_resumes_to_the_same_report(runs, digits_audit, tmp_path, monkeypatch):
    import invgen.audit.write
    import invgen.data.imagefolder

    out = tmp_path / "a"
    save = invgen.data.imagefolder.save_image
    saved = []

    def dying_save(image, path):
        if len(saved) == 6:
            raise Killed  # halfway through sampling
        saved.append(path)
        save(image, path)

    monkeypatch.setattr(invgen.data.imagefolder, "save_image", dying_save)
    with pytest.raises(Killed):
        main(digits_args(runs, out))
    assert len(list((out / "images").glob("*.png"))) == 6 and not (out / "report.json").exists()
    monkeypatch.undo()

    def dying_json(path, data):
        raise Killed  # again, after the CSV and the markdown, before report.json

    monkeypatch.setattr(invgen.audit.write, "write_json", dying_json)
    with pytest.raises(Killed):
        main(digits_args(runs, out))
    assert (out / "per_prompt.csv").exists() and not (out / "report.json").exists()
    monkeypatch.undo()
    first = {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.png")}
    assert main(digits_args(runs, out)) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.png")} == first  # nothing resampled
    assert _without_paths(_report(out)) == _without_paths(_report(digits_audit))
    assert (out / "per_prompt.csv").read_text() == (digits_audit / "per_prompt.csv").read_text()


def test_guided_audit_samples_the_base_too_and_scores_closeness(runs, digits_audit, tmp_path):
    still = tmp_path / "still"
    assert main(digits_args(runs, still, "--guidance", str(runs / "adapter"), "--scale", "0")) == 0
    still_report = _report(still)
    quality = still_report["quality"]
    # At scale 0 the adapter adds nothing: every image is its base image, and so are the figures.
    assert quality["pixel_similarity_to_base"] == 1.0 and quality["ssim_to_base"] == pytest.approx(1.0)
    assert still_report["base"]["per_prompt"] == {p: {k: v for k, v in e.items() if k not in (
        "pixel_similarity_to_base", "ssim_to_base")} for p, e in still_report["per_prompt"].items()}
    guided = tmp_path / "guided"
    assert main(digits_args(runs, guided, "--guidance", str(runs / "adapter"), "--scale", "1")) == 0
    report = _report(guided)
    base = read_imagefolder(guided / "base_images").images
    np.testing.assert_array_equal(base, read_imagefolder(digits_audit / "images").images)  # same seeds
    reference = _report(digits_audit)
    for key in STATS:  # the figures before the adapter are those of the audit of the base model alone
        assert report["base"][key] == reference[key], key
    moved = read_imagefolder(guided / "images").images
    pixel = 1 - np.abs(moved / 255.0 - base / 255.0).mean()
    assert report["quality"]["pixel_similarity_to_base"] == pytest.approx(pixel)
    assert report["quality"]["pixel_similarity_to_base"] < 1.0
    assert report["protocol"]["guidance"] == str(runs / "adapter") and report["protocol"]["scale"] == 1.0
    rows = list(csv.DictReader((guided / "per_prompt.csv").open()))
    assert all(0.0 < float(r["ssim_to_base"]) <= 1.0 for r in rows)
    assert [r["bias_score:base"] for r in rows] == [str(e["bias_score"]) for e in reference["per_prompt"].values()]
    assert "without the adapter" in (guided / "report.md").read_text()


def test_compare_puts_two_audits_side_by_side(runs, digits_audit, tmp_path):
    other = tmp_path / "seed1"
    assert main(digits_args(runs, other, "--seed", "1")) == 0
    assert main(["audit", "--compare", str(digits_audit), str(other), "--out", str(tmp_path / "cmp")]) == 0
    comparison = _no_nan((tmp_path / "cmp" / "comparison.json").read_text())
    a, b = _report(digits_audit), _report(other)
    change = comparison["change"]["bias_score"]
    assert change["before"] == a["bias_score"] and change["after"] == b["bias_score"]
    assert change["change"] == pytest.approx(b["bias_score"] - a["bias_score"])
    assert comparison["protocol_differences"] == {"seed": [0, 1]}
    assert set(comparison["per_prompt"]) == set(a["per_prompt"])
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "differ in seed" in md and f"{change['change']:+.3f}" in md
    assert (tmp_path / "cmp" / "comparison_bars.png").stat().st_size > 1000


def test_compare_refuses_a_folder_without_an_audit(digits_audit, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["audit", "--compare", str(digits_audit), str(tmp_path / "empty")]) == 2
    assert "holds no audit report" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ bad input
def _refused(capsys, args, needle, out):
    assert main(args) == 2
    err = capsys.readouterr().err  # may hold diffusers' loading bars too
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and needle in errors[0], err
    assert not out.exists()


def test_unknown_suite_or_attribute_is_one_sentence_and_writes_nothing(runs, tmp_path, capsys):
    out = tmp_path / "o"
    args = digits_args(runs, out)
    _refused(capsys, [a if a != "digits" else "nosuch" for a in args], "unknown suite 'nosuch'", out)
    _refused(capsys, [a if a != "color" else "shape" for a in args], "no attribute 'shape'", out)
    _refused(capsys, [*args, "--attribute", "color+color"], "twice", out)


def test_a_suite_file_missing_a_field_is_named(runs, tmp_path, capsys):
    suite = tmp_path / "mine.yaml"
    suite.write_text("template: 'a photo of a {subject}'\nsubjects: [doctor, nurse]\n")
    out = tmp_path / "o"
    args = [a if a != "digits" else str(suite) for a in digits_args(runs, out)]
    _refused(capsys, args, "mine.yaml': attributes: missing", out)


def test_detector_or_clip_weights_that_cannot_load_write_nothing(runs, tmp_path, capsys):
    out = tmp_path / "o"
    _refused(capsys, [*digits_args(runs, out), "--detector", f"haar:{tmp_path / 'none.xml'}"], "no cascade file", out)
    def classifier(spec):
        return [spec if a == "oracle:color" else a for a in digits_args(runs, out)]

    _refused(capsys, classifier(f"clip:{tmp_path / 'clip'}"), "no CLIP weights", out)
    _refused(capsys, [*digits_args(runs, out), "--clip", str(tmp_path / "clip")], "no CLIP weights", out)
    _refused(capsys, classifier("metadata"), "carry no attribute", out)
    _refused(capsys, [*digits_args(runs, out), "--classifier", "oracle:color"], "2 classifiers for 1 attribute", out)
    _refused(capsys, [*digits_args(runs, out), "--per-prompt", "0"], "--per-prompt must be", out)
    _refused(capsys, [*digits_args(runs, out), "--guidance", str(tmp_path / "nope")], "no adapter folder", out)
    _refused(capsys, [*digits_args(runs, out), "--pipeline", str(tmp_path / "nope")], "no pipeline folder", out)
    _refused(capsys, [*digits_args(runs, out), "--steps", "5000"], "more than the 1000 steps", out)


def test_a_foreign_or_other_audit_folder_is_refused_unchanged(runs, digits_audit, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(digits_args(runs, mine)) == 2
    assert "did not write" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    before = tree_hash(digits_audit)
    assert main(digits_args(runs, digits_audit, "--seed", "5")) == 2
    assert "holds another audit (seed 0 there, 5 now)" in capsys.readouterr().err
    assert tree_hash(digits_audit) == before


# ---------------------------------------------------------------------------------------- Stable Diffusion
@pytest.fixture(scope="module")
def sd_runs(tmp_path_factory):
    from invgen.models.loading import save_pipeline
    from invgen.models.tiny import tiny_pipeline

    root = tmp_path_factory.mktemp("audit_sd")
    save_pipeline(tiny_pipeline("sd"), root / "sd")
    tiny_open_clip(root / "clip" / "model")
    return root


def sd_args(root, out, *extra):
    return ["audit", "--pipeline", str(root / "sd"), "--suite", "occupations-test", "--prompts-limit", "2",
            "--attribute", "gender+race", "--classifier", f"clip:{root / 'clip' / 'model'}", "--per-prompt", "3",
            "--steps", "2", "--resolution", "32", "--bootstrap", "50", "--grid-images", "3", "--out", str(out),
            *extra]


def test_sd_occupations_audit_reports_images_without_a_face_honestly(sd_runs, tmp_path):
    out = tmp_path / "sd_audit"
    assert main(sd_args(sd_runs, out)) == 0
    report = _report(out)
    assert report["detector"] == "default" and report["n_images"] == 6 and report["n_prompts"] == 2
    # Random tiny models draw no face: most (here all) images are counted apart, and the figures say so.
    assert report["n_no_face"] >= 4
    assert report["n_no_face"] == sum(e["no_face"] for e in report["per_prompt"].values())
    assert report["n_measured"] + report["n_no_face"] + report["n_unreadable"] == 6
    if report["n_measured"] == 0:
        assert report["bias_score"] is None and "No image was counted" in (out / "report.md").read_text()
    assert "have no face" in (out / "report.md").read_text()
    assert len(report["values"]) == 8 and report["values"][0] == "male|White"
    assert set(report["parts"]) == {"gender", "race"} and report["parts"]["race"]["values"][:2] == ["White", "Black"]
    assert np.isfinite(report["quality"]["clip_score"])  # CLIP-T is read on whole images, face or not
    assert "nan" not in (out / "per_prompt.csv").read_text().lower()
    labels = {json.loads(line)["face"] for line in (out / "predictions.jsonl").read_text().splitlines()}
    assert labels <= {False, True}


def test_sd_joint_attribute_counts_agree_with_each_part(sd_runs, tmp_path):
    out = tmp_path / "sd_whole"
    assert main(sd_args(sd_runs, out, "--detector", "none")) == 0
    report = _report(out)
    assert report["n_no_face"] == 0 and report["n_measured"] == 6
    for prompt, e in report["per_prompt"].items():
        gender = report["parts"]["gender"]["per_prompt"][prompt]["counts"]
        race = report["parts"]["race"]["per_prompt"][prompt]["counts"]
        for g, n in gender.items():
            assert n == sum(c for v, c in e["counts"].items() if v.split("|")[0] == g)
        for r, n in race.items():
            assert n == sum(c for v, c in e["counts"].items() if v.split("|")[1] == r)
    # The CLIP score is the one `invgen metrics --clip` gives on the same images.
    clip = sd_runs / "clip" / "model"
    assert main(["metrics", str(out / "images"), "--clip", str(clip), "--attribute", "color", "--classifier",
                 "oracle:color", "--bootstrap", "0", "--no-plots",
                 "--out", str(tmp_path / "m.json")]) == 0
    metrics = _no_nan((tmp_path / "m.json").read_text())
    assert report["quality"]["clip_score"] == pytest.approx(metrics["quality"]["clip_score"], abs=1e-9)


# ----------------------------------------------------------------------------------------------- processes
@pytest.mark.slow
def test_two_processes_give_the_report_of_one(runs, digits_audit, tmp_path):
    out = tmp_path / "two"
    done = launch_two_cpu(["-m", "invgen.cli", *digits_args(runs, out)], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _without_paths(_report(out)) == _without_paths(_report(digits_audit))
    np.testing.assert_array_equal(read_imagefolder(out / "images").images,
                                  read_imagefolder(digits_audit / "images").images)


def test_a_copied_audit_folder_resumes_without_sampling(runs, digits_audit, tmp_path, monkeypatch):
    import invgen.sampling

    copy = tmp_path / "copy"
    shutil.copytree(digits_audit, copy)
    (copy / "report.json").unlink()
    monkeypatch.setattr(invgen.sampling, "generate", lambda *a, **k: pytest.fail("resampled"))
    assert main(digits_args(runs, copy)) == 0
    assert _without_paths(_report(copy)) == _without_paths(_report(digits_audit))


def test_plan_defaults_come_from_the_suite(tmp_path):
    from invgen.audit.plan import AuditRequest, plan_audit
    from invgen.errors import InvgenConfigError

    plan = plan_audit(AuditRequest("digits", "color"))
    assert plan.classifiers == ("oracle:color",) and plan.detector == "none" and len(plan.prompts) == 10
    assert plan.clip is None and plan.call_kwargs() == {}
    plan = plan_audit(AuditRequest("occupations-test", "gender+race", classifier=f"clip:{tmp_path}",
                                   prompts_limit=3, resolution=64, steps=5))
    assert plan.detector == "default" and plan.classifiers == (f"clip:{tmp_path}",) * 2 and plan.clip == str(tmp_path)
    assert len(plan.prompts) == 3 and plan.part_names == ["gender", "race"]
    assert plan.call_kwargs() == {"num_inference_steps": 5, "height": 64, "width": 64}
    assert plan.protocol("p", {})["split"] == "test"
    with pytest.raises(InvgenConfigError, match="'gender' of suite 'occupations-test' has no default classifier"):
        plan_audit(AuditRequest("occupations-test", "gender"))
    with pytest.raises(InvgenConfigError, match="3 classifiers for 2 attribute parts"):
        plan_audit(AuditRequest("occupations", "gender+age", classifier=[f"clip:{tmp_path}"] * 3))


def test_faces_are_found_cropped_and_counted_and_the_rest_is_no_face(sd_runs, tmp_path):
    """A real photograph (scikit-image's astronaut) and a blank image under one prompt."""
    from skimage import data

    from invgen.audit.folder import claim_folder
    from invgen.audit.plan import AuditRequest, plan_audit
    from invgen.audit.run import finish_audit
    from invgen.data.imagefolder import ImageRecord, write_imagefolder

    plan = plan_audit(AuditRequest("occupations", "gender", classifier=f"clip:{sd_runs / 'clip' / 'model'}",
                                   prompts_limit=1, per_prompt=2, grid_images=2))
    out = tmp_path / "faces"
    claim_folder(out, plan.sampling("photographs"))
    photo = data.astronaut()
    prompt = plan.prompts[0]
    records = [ImageRecord(f"{i}.png", prompt, extra={"seed": i}) for i in range(2)]
    write_imagefolder(out / "images", [photo, np.zeros_like(photo)], records)
    report = finish_audit(out, plan, progress=False)
    e = report["per_prompt"][prompt]
    assert (report["n_no_face"], report["n_measured"], e["no_face"], e["n_images"]) == (1, 1, 1, 2)
    assert sum(e["counts"].values()) == 1 and e["bias_score"] == 1.0  # one counted image: one value only
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert preds[0]["face"] and preds[0]["gender"] in ("male", "female") and not preds[1]["face"]
    x, y, w, h = preds[0]["box"]
    assert 0 <= x and x + w <= 512 and 0 <= y and y + h <= 512 and w >= 40
    assert "box" not in preds[1] and preds[1]["gender"] is None
    assert (out / "grids" / "000.png").is_file() and "| no face |" in (out / "report.md").read_text()


def test_an_audit_request_is_checked_once_and_run_audit_takes_it_or_its_arguments(tmp_path):
    from invgen.audit.plan import AuditRequest
    from invgen.audit.run import run_audit
    from invgen.errors import InvgenConfigError

    with pytest.raises(InvgenConfigError, match="--per-prompt must be a positive integer, got 0"):
        AuditRequest("digits", "color", per_prompt=0)
    with pytest.raises(InvgenConfigError, match="--bootstrap must be an integer from 0 to 100000"):
        AuditRequest("digits", "color", n_boot=-1)
    request = AuditRequest("digits", "color", tmp_path / "audit")
    with pytest.raises(TypeError, match="an AuditRequest or the arguments of one, not both"):
        run_audit("no pipeline", request, per_prompt=3)
    with pytest.raises(InvgenConfigError, match="a folder to write into"):
        run_audit("no pipeline", AuditRequest("digits", "color"))
    # The earlier form is checked as the request it builds, before any pipeline is loaded.
    with pytest.raises(InvgenConfigError, match="--seed must be an integer"):
        run_audit("no pipeline", "digits", "color", tmp_path / "audit", seed=-1)
    assert not (tmp_path / "audit").exists()
