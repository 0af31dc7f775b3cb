"""The InvDiff matrix harness's bookkeeping (scripts/bench_invdiff.py --matrix), with training and sampling
replaced by stand-ins that write what the real steps write: skipping finished work, per-arm results written
as they finish, resuming after a kill, and the summary table."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import bench_invdiff as bench  # noqa: E402

BIAS = {"base": 0.9, "oracle": 0.3, "inferred": 0.4}
FIDELITY = {"base": 0.98, "oracle": 0.97, "inferred": 0.95}
SETTINGS = {"per_prompt": 50, "adapter_steps": None}


class Fakes:
    """Stand-ins for the heavy functions; they record what they were asked to do."""

    def __init__(self, monkeypatch, groups_report=None):
        self.calls: list[tuple] = []
        self.fail: set[tuple[str, str]] = set()  # (cell id, arm) whose evaluation raises
        self.kill: set[tuple[str, str]] = set()  # (cell id, arm) whose evaluation "kills" the process
        self.groups_report = groups_report or {
            "source": "inferred", "timesteps": "auto", "chosen_timestep": 700, "group_sizes": [1360.0, 77.0],
            "true_group_sizes": [1368, 69], "loss_auc": 0.97, "group_agreement": 0.95,
        }
        monkeypatch.setattr(bench, "base_complete", lambda p: (Path(p) / "model_index.json").is_file())
        monkeypatch.setattr(bench, "train_base_model", self.train_base_model)
        monkeypatch.setattr(bench, "train_arm", self.train_arm)
        monkeypatch.setattr(bench, "evaluate", self.evaluate)
        monkeypatch.setattr(bench, "code_fingerprint", lambda: "test")

    def train_base_model(self, out, data_root, steps, p_align, seed):
        self.calls.append(("base", Path(out).name, steps, p_align, seed, Path(data_root).name))
        Path(out).mkdir(parents=True)
        (Path(out) / "model_index.json").write_text("{}")

    def train_arm(self, out, base_dir, data_root, source, adapter_steps, p_align, seed):
        self.calls.append(("arm", Path(out).parent.name, source))
        Path(out).mkdir(parents=True, exist_ok=True)
        report = self.groups_report if source == "inferred" else {"source": "oracle", "true_group_sizes": [1368, 69]}
        (Path(out) / "groups.json").write_text(json.dumps(report))
        return {"groups_seconds": 1.0, "adapter_seconds": 2.0, "adapter_steps": 1000}

    def evaluate(self, base_dir, adapter_dir, per_prompt, cnn_dir):
        arm = "base" if adapter_dir is None else Path(adapter_dir).name
        cell = Path(base_dir).name
        self.calls.append(("eval", cell, arm))
        if (cell, arm) in self.kill:
            raise KeyboardInterrupt
        if (cell, arm) in self.fail:
            raise RuntimeError("sampling failed")
        return {"bias_score": BIAS[arm], "fidelity": FIDELITY[arm]}


C1, C2 = "steps1200-p0.95-seed0", "steps2000-p0.95-seed0"


def _run(tmp_path, **kw):
    layout = bench.Layout(tmp_path / "work")
    cells = bench.select_cells([C1, C2])
    return layout, bench.run_matrix(layout, cells, tmp_path / "out" / "m.json", SETTINGS, **kw)


def test_matrix_order_and_cell_names():
    cells = bench.matrix_cells()
    assert len(cells) == 12 and len(set(cells)) == 12
    assert [c.id for c in cells[:3]] == [C1, C2, "steps1200-p0.90-seed0"]
    assert {c.seed for c in cells[:6]} == {0} and {c.seed for c in cells[6:]} == {1}
    layout = bench.Layout(Path("w"))
    # Bases share data with every cell of the same p_align and seed; each cell has its own base.
    assert layout.data(cells[0]) == layout.data(cells[1]) == Path("w/data/p0.95-seed0")
    assert layout.base(cells[0]) == Path("w/bases/steps1200-p0.95-seed0")
    with pytest.raises(SystemExit, match="unknown cell steps999"):
        bench.select_cells(["steps999-p0.95-seed0"])


def test_full_matrix_run_then_rerun_does_nothing(tmp_path, monkeypatch):
    fakes = Fakes(monkeypatch)
    layout, summary = _run(tmp_path)
    assert [c for c in fakes.calls if c[0] == "base"] == [
        ("base", C1, 1200, 0.95, 0, "p0.95-seed0"), ("base", C2, 2000, 0.95, 0, "p0.95-seed0")]
    assert summary["complete"] == 2
    row = summary["cells"][0]
    assert row["cell"] == C1 and row["complete"]
    assert row["inferred_vs_oracle_reduction"] == pytest.approx((0.9 - 0.4) / (0.9 - 0.3))
    assert row["inferred_vs_base"] == pytest.approx(0.4 / 0.9)
    assert row["fidelity_drop_points"] == pytest.approx(3.0)
    # Oracle halves the bias (0.33 × base) and inferred reaches 0.44 × base ≤ 0.6: the cell meets the issue.
    assert row["meets"] is True
    assert row["chosen_level"] == 700 and row["timesteps"] == "auto"
    assert row["group_sizes"] == [1360.0, 77.0] and row["true_group_sizes"] == [1368, 69]
    arm = json.loads((layout.arm(bench.select_cells([C1])[0], "inferred")).read_text())
    assert arm["groups_report"]["chosen_timestep"] == 700 and arm["adapter_seconds"] == 2.0
    # The summary on disk is the returned one, and the markdown table lists both cells.
    on_disk = json.loads((tmp_path / "out" / "m.json").read_text())
    assert on_disk["complete"] == 2 and [r["cell"] for r in on_disk["cells"]] == [C1, C2]
    md = (tmp_path / "out" / "m.md").read_text()
    assert f"| {C1} | 0.900 → 0.400 / 0.300 | 0.980 → 0.950 / 0.970 | 83% | 0.950 | 0.970 | 700 |" in md
    assert "1,360 / 77 (1,368 / 69)" in md

    fakes.calls.clear()
    _, again = _run(tmp_path)
    assert fakes.calls == []
    assert again["cells"] == summary["cells"]


def test_kill_mid_matrix_keeps_finished_arms_and_resumes(tmp_path, monkeypatch):
    fakes = Fakes(monkeypatch)
    fakes.kill = {(C2, "oracle")}
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path)
    work = tmp_path / "work"
    assert sorted(p.name for p in (work / "cells" / C1).glob("*.json")) == ["base.json", "inferred.json",
                                                                          "oracle.json"]
    assert sorted(p.name for p in (work / "cells" / C2).glob("*.json")) == ["base.json"]
    assert not list(work.rglob("*.tmp"))  # atomic writes leave no half-written file behind
    partial = json.loads((tmp_path / "out" / "m.json").read_text())
    assert partial["complete"] == 1 and not partial["cells"][1]["complete"]

    fakes.kill.clear()
    fakes.calls.clear()
    _, summary = _run(tmp_path)
    # Only the killed arm and the one after it ran; no base was trained again.
    assert fakes.calls == [("arm", C2, "oracle"), ("eval", C2, "oracle"), ("arm", C2, "inferred"),
                           ("eval", C2, "inferred")]
    assert summary["complete"] == 2


def test_a_failed_arm_is_logged_and_left_for_the_next_run(tmp_path, monkeypatch):
    fakes = Fakes(monkeypatch)
    fakes.fail = {(C1, "inferred")}
    layout, summary = _run(tmp_path)
    assert summary["complete"] == 1
    assert [r["complete"] for r in summary["cells"]] == [False, True]
    assert "inferred" not in summary["cells"][0] and "meets" not in summary["cells"][0]
    assert "steps1200-p0.95-seed0 inferred: FAILED" in layout.log.read_text()
    assert "sampling failed" in layout.log.read_text()
    fakes.fail.clear()
    fakes.calls.clear()
    _, summary = _run(tmp_path, stage="arms")
    assert fakes.calls == [("arm", C1, "inferred"), ("eval", C1, "inferred")]
    assert summary["complete"] == 2


def test_arms_stage_waits_for_bases_and_runs_only_the_chosen_arms(tmp_path, monkeypatch):
    fakes = Fakes(monkeypatch)
    layout, summary = _run(tmp_path, stage="arms", arms=("base", "oracle"))
    assert fakes.calls == [] and summary["complete"] == 0  # no base yet: nothing to do
    _run(tmp_path, stage="bases")
    assert [c[0] for c in fakes.calls] == ["base", "base"]
    fakes.calls.clear()
    _, summary = _run(tmp_path, stage="arms", arms=("base", "oracle"))
    assert ("arm", C1, "inferred") not in fakes.calls and len(fakes.calls) == 6
    row = summary["cells"][0]
    assert row["oracle_vs_base"] == pytest.approx(0.3 / 0.9) and "inferred_vs_oracle_reduction" not in row
    md = (tmp_path / "out" / "m.md").read_text()
    assert f"| {C1} | 0.900 → – / 0.300 |" in md


def test_results_made_with_other_settings_are_refused(tmp_path, monkeypatch):
    Fakes(monkeypatch)
    layout, _ = _run(tmp_path)
    cell = bench.select_cells([C1])[0]
    with pytest.raises(SystemExit, match="per_prompt=50, this run asks for 20"):
        bench.arm_done(layout, cell, "base", {"per_prompt": 20, "adapter_steps": None})
    with pytest.raises(SystemExit, match="adapter_steps=None, this run asks for 400"):
        bench.arm_done(layout, cell, "oracle", {"per_prompt": 50, "adapter_steps": 400})
    # The base arm does not depend on the adapter's length.
    assert bench.arm_done(layout, cell, "base", {"per_prompt": 50, "adapter_steps": 400})


def test_chosen_level_read_defensively():
    assert bench.chosen_level({"timesteps": [900]}) == 900
    assert bench.chosen_level({"timesteps": "auto", "chosen_timesteps": [700]}) == [700]
    assert bench.chosen_level({"timesteps": "auto"}) is None
    assert bench.chosen_level({"timesteps": [600, 900]}) is None
    assert bench.chosen_level({"timesteps": [833, 876], "level_scan": {"chosen": [833, 876]}}) == [833, 876]
    assert bench.chosen_level({"timesteps": [833, 876], "chosen_level": [833, 876]}) == [833, 876]
    assert bench.group_summary({})["group_agreement"] is None


def test_acceptance_rule():
    row = {"inferred_vs_oracle_reduction": 0.75, "fidelity_drop_points": 1.0, "oracle_vs_base": 0.4,
           "inferred_vs_base": 0.65}
    assert not bench.meets(row)  # 75% of the oracle's reduction, but the oracle halves the bias and 0.65 > 0.6
    assert bench.meets({**row, "inferred_vs_base": 0.55})
    assert not bench.meets({**row, "inferred_vs_base": 0.55, "fidelity_drop_points": 6.0})
    assert bench.meets({**row, "oracle_vs_base": 0.7, "inferred_vs_base": 0.78})


def test_single_run_jobs_keep_their_order_in_one_thread_processes_of_their_own():
    import os

    import torch

    jobs = [(os.getpid, ()), (torch.get_num_threads, ()), (divmod, (7, 2))]
    pid, threads, qr = bench.run_jobs(jobs, workers=2)
    assert pid != os.getpid() and threads == 1 and qr == (3, 1)
    assert bench.run_jobs(jobs, workers=1) == [os.getpid(), torch.get_num_threads(), (3, 1)]
