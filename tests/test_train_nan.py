"""A NaN or infinite loss stops training with a clear message and keeps the last good checkpoint."""

import json

import pytest
import torch
from helpers import P3, P5, write_set
from safetensors.torch import load_file

import invgen.train.base as base_module
from invgen.train.__main__ import main as train_main


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys, bad):
    data = tmp_path / "data"
    write_set(data / "train", {P3: ["red", "green"], P5: ["green", "red"]}, size=16)
    out = tmp_path / "out"
    real = base_module.denoising_loss
    calls = []

    def loss_that_breaks_at_step_5(*args, **kwargs):
        calls.append(1)
        losses = real(*args, **kwargs)
        return losses * bad if len(calls) == 5 else losses

    monkeypatch.setattr(base_module, "denoising_loss", loss_that_breaks_at_step_5)
    args = ["base", f"output_dir={out}", f"data.root={data}", "data.builder=null", "model.block_out_channels=[8,16]",
            "model.norm_num_groups=4", "model.attention_head_dim=4", "train.batch_size=4", "train.steps=8",
            "train.warmup_steps=0", "train.checkpoint_every=2", "train.log_every=1"]
    assert train_main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    word = "nan" if bad != bad else "inf"
    assert err.strip().splitlines()[-1] == (
        f"error: base: the loss became {word} at step 4; the last good checkpoint is {out}/checkpoints/checkpoint-4 "
        "(try a lower learning_rate or mixed_precision=no)"
    )
    # Checkpoints 2 and 4 are whole and finite; nothing after the bad step was written.
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    weights = load_file(out / "checkpoints/checkpoint-4/model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    state = json.loads((out / "checkpoints/checkpoint-4/trainer_state.json").read_text())
    assert state["step"] == 4 and len(state["losses"]) == 4
    assert [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert not (out / "model_index.json").exists()

    # Resuming (with the loss repaired) continues from the last good checkpoint to the end.
    monkeypatch.setattr(base_module, "denoising_loss", real)
    assert train_main([*args, "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert (out / "model_index.json").is_file()
    assert [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()] == list(
        range(1, 9)
    )
