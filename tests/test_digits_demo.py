import json

from invgen.benchmarks.digits.demo import run_demo


def test_quick_demo_writes_a_report_and_reuses_its_models(tmp_path, capsys):
    out = tmp_path / "demo"
    report = run_demo(out, quick=True)
    assert set(report) == {"base", "invdiff"}
    for name in ("base", "invdiff"):
        assert 0.0 <= report[name]["bias_score"] <= 1.0
        assert report[name]["n_images"] == 40
    text = (out / "report.md").read_text()
    assert "| base |" in text and "| invdiff |" in text
    for png in ("grid_base.png", "grid_invdiff.png", "bias_per_prompt.png"):
        assert (out / png).stat().st_size > 0
    groups = json.loads((out / "invdiff" / "groups.json").read_text())
    assert "loss_auc" in groups and len(groups["group_sizes"]) == 2
    capsys.readouterr()
    run_demo(out, quick=True)
    second = capsys.readouterr().out
    assert second.count("reusing") == 3  # base model, groups and adapter are not trained again
