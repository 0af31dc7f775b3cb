"""The Gradio app, served on a free port with tiny offline models and driven as a user would: through
gradio_client (the API the page itself calls) and in headless Chromium."""

import csv
import json
import shutil
import socket

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("gradio", reason="the app needs the [app] extra (gradio)")
gradio_client = pytest.importorskip("gradio_client")

PROMPTS = "a photo of the digit 3\na photo of the digit 7"
CHROMIUM = "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A runs folder with a tiny digits pipeline and a residual adapter whose Δ is not zero."""
    from invgen.invdiff.adapter import AdapterConfig
    from invgen.invdiff.guidance import InvariantGuidance
    from invgen.models.loading import save_pipeline
    from invgen.pipelines import build_pixel_pipeline

    root = tmp_path_factory.mktemp("runs")
    pipe = build_pixel_pipeline(seed=0)
    base = save_pipeline(pipe, root / "base")
    # A model the app knows nothing about, then what train_base writes: it tells the app to read colors
    # with the exact oracle.
    shutil.copytree(base, root / "plain")
    (base / "train_config.yaml").write_text("data:\n  builder: colored_digits\n  palette: two\n")
    guidance = InvariantGuidance.for_denoiser(pipe.unet, AdapterConfig(kind="residual"), base_model=str(base))
    torch.manual_seed(0)
    with torch.no_grad():  # a fresh adapter adds exactly 0 (zero-initialised output): make it act
        for p in guidance.module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    guidance.save_pretrained(root / "adapter")
    (root / "adapter" / "checkpoints").mkdir()  # trainer state is not listed
    return root


@pytest.fixture(scope="module")
def server(runs):
    from invgen.app import launch

    demo = launch(runs, port=_free_port(), block=False)
    yield demo.local_url
    demo.close()


@pytest.fixture()
def client(server, tmp_path):
    return gradio_client.Client(server, verbose=False, download_files=str(tmp_path))


def _compare(client, pipeline, adapter, prompts=PROMPTS, per_prompt=3, scale=1.0, steps=3, spec="auto"):
    return client.predict(pipeline, adapter, prompts, per_prompt, 0, scale, steps, 2.0, spec, "", "",
                          api_name="/compare")


def _images(gallery) -> np.ndarray:
    return np.stack([np.asarray(Image.open(item["image"]).convert("RGB")) for item in gallery])


def test_find_models_lists_pipelines_and_adapters_with_their_base(runs):
    from invgen.runs import default_classifier, find_models

    found = find_models(runs)
    assert found.pipelines == [str(runs / "base"), str(runs / "plain")]
    assert found.adapters == {str(runs / "adapter"): str(runs / "base")}
    assert default_classifier(runs / "base") == "oracle:color:two"
    assert default_classifier(runs / "adapter") is None
    assert find_models(runs / "missing").pipelines == []


def test_side_by_side_uses_the_same_noise_and_leaves_the_pipeline_as_it_was(runs):
    from invgen.invdiff.guidance import InvariantGuidance, attached_adapters
    from invgen.models.loading import load_pipeline
    from invgen.sampling import generate, image_seed
    from invgen.side_by_side import side_by_side

    pipe = load_pipeline(runs / "base")
    guidance = InvariantGuidance.from_pretrained(runs / "adapter")
    steps = []
    result = side_by_side(pipe, ["a photo of the digit 3"], 2, seed=4, guidance=guidance, scale=0.0,
                          classifier="oracle:color", attribute="color", progress=lambda f, d: steps.append(f),
                          num_inference_steps=3)
    direct = generate(pipe, ["a photo of the digit 3"] * 2, [image_seed(4, i) for i in range(2)], progress=False,
                      num_inference_steps=3)
    np.testing.assert_array_equal(result.images["base"], direct)
    np.testing.assert_array_equal(result.images["debiased"], direct)  # s = 0 is the base model, bit for bit
    assert attached_adapters(pipe) == {}  # detached afterwards
    assert steps == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0])
    assert result.reports["base"]["classifier"] == "oracle:color"
    assert result.comparison["ratio_to_baseline"]["debiased"]["fairness_discrepancy"] in (1.0, None)


def test_app_generates_both_grids_and_their_metrics(client, runs):
    from invgen.benchmarks.digits.oracle import ColorOracle
    from invgen.metrics.fairness import bias_score

    base_gallery, debiased_gallery, base_hist, debiased_hist, bars, metrics, table, status = _compare(
        client, str(runs / "base"), str(runs / "adapter"))
    base, debiased = _images(base_gallery), _images(debiased_gallery)
    assert len(base) == len(debiased) == 6
    assert base.shape[1] >= 96  # 16-px images are shown scaled up
    assert np.abs(base.astype(int) - debiased.astype(int)).mean() > 1  # the adapter acts
    for path in (base_hist, debiased_hist, bars):
        assert Image.open(path).size[0] > 200  # plots, not only numbers

    # The figures the app reports are those of its images, read again here with the same oracle.
    oracle = ColorOracle("two")
    for label, images in (("base", base), ("debiased", debiased)):
        m = metrics[label]
        assert m["classifier"] == "oracle:color:two" and m["n_images"] == 6
        values = oracle(images)
        for i, prompt in enumerate(PROMPTS.splitlines()):
            counts = np.bincount(values[3 * i : 3 * i + 3], minlength=2)
            assert list(m["per_prompt"][prompt]["counts"].values()) == counts.tolist()
            assert m["per_prompt"][prompt]["bias_score"] == pytest.approx(bias_score(counts))
    assert "| bias score ↓ |" in table
    assert f"adapter `{runs / 'adapter'}` at scale 1" in status

    # Scale 0 is the base model: the two grids are the same pixels.
    again = _compare(client, str(runs / "base"), str(runs / "adapter"), scale=0.0)
    np.testing.assert_array_equal(_images(again[0]), _images(again[1]))
    np.testing.assert_array_equal(_images(again[0]), base)  # and the same seeds give the same base grid

    # Without an adapter only the base grid is drawn.
    alone = _compare(client, str(runs / "base"), "(none)")
    assert len(alone[0]) == 6 and alone[1] == [] and "no adapter chosen" in alone[-1]


def test_app_without_a_classifier_says_so_and_takes_one_by_spec(client, runs):
    base, debiased, base_hist, _, bars, metrics, table, status = _compare(client, str(runs / "plain"), "(none)")
    assert len(base) == 6 and debiased == [] and base_hist is None and bars is None and metrics == {}
    assert "No attribute classifier" in status
    *_, metrics, table, status = _compare(client, str(runs / "plain"), "(none)", spec="oracle:color")
    assert metrics["base"]["classifier"] == "oracle:color" and metrics["base"]["n_images"] == 6
    assert "# Bias report: base" in table and "read by `oracle:color`" in status


@pytest.mark.parametrize(
    ("pipeline", "adapter", "prompts", "message"),
    [
        ("base", "adapter", "  \n ", "the prompt is empty"),
        ("missing", "(none)", PROMPTS, "no pipeline folder at"),
        ("", "(none)", PROMPTS, "choose a pipeline"),
        ("base", "nothing", PROMPTS, "no invgen adapter in"),
    ],
)
def test_app_shows_one_clear_sentence_for_bad_input(client, runs, pipeline, adapter, prompts, message):
    name = str(runs / pipeline) if pipeline else ""
    adapter = adapter if adapter == "(none)" else str(runs / adapter)
    with pytest.raises(gradio_client.exceptions.AppError, match=message) as info:
        _compare(client, name, adapter, prompts=prompts)
    assert "Traceback" not in str(info.value)


def test_views_tab_translates_a_sampled_image_to_every_other_class(client, runs):
    source = client.predict(str(runs / "base"), "", 3, 0, 3, api_name="/sample_source")
    assert np.asarray(Image.open(source)).shape[:2] == (16, 16)
    views = client.predict(str(runs / "base"), gradio_client.handle_file(source), "", 3, "CDvG", 0.5, 0, 3,
                           api_name="/views")
    assert len(views) == 9
    assert [v["caption"] for v in views][:2] == ["→ a photo of the digit 0", "→ a photo of the digit 1"]
    with pytest.raises(gradio_client.exceptions.AppError, match="source class must lie in 0..9"):
        client.predict(str(runs / "base"), gradio_client.handle_file(source), "", 12, "CDvG", 0.5, 0, 3,
                       api_name="/views")


def test_views_tab_draws_genview_views(client, runs):
    source = client.predict(str(runs / "base"), "", 3, 0, 3, api_name="/sample_source")
    views = client.predict(str(runs / "base"), gradio_client.handle_file(source), "", 3, "GenView", 0.5, 0, 3,
                           api_name="/views")
    assert len(views) == 8
    assert views[0]["caption"].startswith("view 1: noise level ")
    pixels = _images(views)
    assert len({p.tobytes() for p in pixels}) == 8  # every view from its own seed


def _audit(client, runs, name="tiny", per_prompt=3, limit=2, adapter="(none)", scale=1.0):
    """A digits audit through the Audit tab: pipeline, adapter, scale, suite, attribute, classifier, detector,
    images per prompt, seed, steps, prompts limit, folder name."""
    return client.predict(str(runs / "base"), adapter, scale, "digits", "color", "oracle:color", "none", per_prompt,
                          0, 2, limit, name, api_name="/audit")


def test_audit_tab_runs_a_digits_audit_and_shows_its_report(client, runs):
    status, summary, report_md, plot, grids, table, folder = _audit(client, runs)
    out = runs / "audits" / "tiny"
    assert folder["value"] == str(out) and str(out) in [c[0] for c in folder["choices"]]  # listed to open
    report = json.loads((out / "report.json").read_text())
    assert report["n_images"] == 6 and report["n_measured"] > 0  # 2 prompts x 3 images, colors read
    # The figure shown is report.json's, to the digit.
    assert summary["bias_score"] == report["bias_score"] and summary["ci"] == report["ci"]["bias_score"]
    assert summary["counts"] == report["pooled"]["counts"] and summary["n_images"] == 6
    assert f"bias score {report['bias_score']:.3f} [{report['ci']['bias_score'][0]:.3f}," in status
    assert "without a face" not in status  # no detector: no face count to show
    # report.md, without its picture links (the page shows the pictures themselves).
    assert report_md.startswith("# Audit: color on digits") and "![" not in report_md
    assert "(`grids/000.png`)" in report_md
    assert Image.open(plot).size[0] > 200
    assert [g["caption"] for g in grids] == ["a photo of the digit 0", "a photo of the digit 1"]
    assert Image.open(grids[0]["image"]).size == (3 * 128, 128 + 16)  # 3 labelled cells
    rows = list(csv.DictReader((out / "per_prompt.csv").open()))
    assert table["headers"][:3] == ["prompt", "images", "no_face"]
    assert [r[0] for r in table["data"]] == [r["prompt"] for r in rows]
    assert [str(r[table["headers"].index("count:red")]) for r in table["data"]] == [r["count:red"] for r in rows]

    # The same settings again resume the folder (nothing is sampled twice) and show the same report.
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.png")}
    again = _audit(client, runs)
    assert again[1] == summary
    assert {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.png")} == stamps

    # Opening the folder (by path, or by the name the tab gave it) shows what the run showed.
    for typed in (str(out), "tiny"):
        opened = client.predict(typed, api_name="/open_audit")
        assert opened[0] == status and opened[1] == summary and opened[2] == report_md


def test_audit_tab_with_an_adapter_shows_the_base_figure_too(client, runs):
    status, summary, *_ = _audit(client, runs, name="", per_prompt=2, limit=1, adapter=str(runs / "adapter"))
    out = runs / "audits" / "base-adapter-s1-digits-n2-seed0-steps2-first1"  # made from the settings
    report = json.loads((out / "report.json").read_text())
    assert summary["folder"] == str(out) and (out / "base_images").is_dir()
    assert summary["bias_score"] == report["bias_score"]
    assert summary["base_bias_score"] == report["base"]["bias_score"]
    assert "without the adapter" in status


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("base", "holds no audit report"),
        ("nowhere", "no audit folder at"),
        ("", "choose or type an audit folder"),
    ],
)
def test_opening_a_folder_that_holds_no_audit_is_one_sentence(client, runs, typed, message):
    folder = str(runs / typed) if typed else ""
    with pytest.raises(gradio_client.exceptions.AppError, match=message) as info:
        client.predict(folder, api_name="/open_audit")
    assert "Traceback" not in str(info.value)


def test_audit_tab_refuses_bad_input_in_one_sentence(client, runs):
    with pytest.raises(gradio_client.exceptions.AppError, match="may hold only letters"):
        _audit(client, runs, name="../outside")
    with pytest.raises(gradio_client.exceptions.AppError, match="has no attribute 'colour'"):
        client.predict(str(runs / "base"), "(none)", 1.0, "digits", "colour", "auto", "auto", 2, 0, 2, 1, "bad",
                       api_name="/audit")
    assert not (runs / "audits" / "bad").exists()  # a bad audit leaves no folder behind


def _chromium_or_skip():
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright's Python package is not installed (pip install 'invgen[dev]')")
    return sync_playwright


def test_app_in_headless_chromium(server, tmp_path):
    sync_playwright = _chromium_or_skip()
    shot = tmp_path / "app.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(server, wait_until="networkidle")
            # The page starts with two digit prompts (a digits model); fewer images and steps keep it quick.
            for field, value in (("Images per prompt", 4), ("Denoising steps", 4)):
                page.locator(f"input[aria-label='number input for {field}']").fill(str(value))
                page.keyboard.press("Tab")
            page.click("#generate")
            for gallery in ("#base-gallery", "#debiased-gallery"):
                page.wait_for_function(f"document.querySelectorAll('{gallery} img').length >= 8", timeout=120_000)
            page.wait_for_function("document.querySelector('#status').innerText.includes('read by')",
                                   timeout=10_000)
            page.screenshot(path=str(shot), full_page=True)
            counts = [page.locator(f"{g} img").count() for g in ("#base-gallery", "#debiased-gallery")]
        finally:
            browser.close()
    assert counts == [8, 8]
    assert Image.open(shot).size[0] >= 1000


def test_cli_app_passes_its_options_and_rejects_a_bad_share(monkeypatch, runs, capsys):
    import invgen.app
    from invgen.cli import main

    calls = []
    monkeypatch.setattr(invgen.app, "launch", lambda *a, **kw: calls.append((a, kw)))
    assert main(["app", "--runs", str(runs), "--port", "7999", "--share", "false"]) == 0
    (args, kwargs), = calls
    assert args == (runs,) and kwargs["port"] == 7999 and kwargs["share"] is False and kwargs["host"] == "127.0.0.1"
    assert main(["app", "--share", "maybe"]) == 2
    assert "error: --share must be true or false, got 'maybe'" in capsys.readouterr().err
