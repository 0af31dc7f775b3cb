"""Resume and run folders under hostile or unlucky conditions, through `python -m invgen.train base`.

Each case asserts the exit code (2), the one-line `error: ...` message (the last stderr line) and that no file
the user had was changed (the run folder hashed before and after). A checkpoint is safetensors and JSON only:
a pickle planted in it must not run, and resuming reads nothing through pickle at all.
"""

import errno
import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from helpers import P3, P5, tree_hash, write_set
from safetensors.torch import load_file, save_file

from invgen.train import loop
from invgen.train.__main__ import main as train_main
from invgen.train.loop import TrainConfig, Trainer

TINY = ["model.block_out_channels=[8,16]", "model.norm_num_groups=4", "model.attention_head_dim=4"]
TRAIN = ["train.steps=2", "train.batch_size=8", "train.warmup_steps=0", "train.log_every=1",
         "train.checkpoint_every=1", "train.keep_checkpoints=2"]


def args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["base", "--config", "configs/digits/base.yaml", f"output_dir={out}", f"data.root={data}",
            "data.builder=null", *TINY, *TRAIN, *extra]



def fails(capsys, argv: list[str]) -> str:
    """Run the entry point, expect exit code 2 and return its one error line (the last line of stderr)."""
    capsys.readouterr()
    assert train_main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:], err
    return lines[-1]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A tiny finished run (checkpoints 1 and 2) and its data, trained once for the whole file."""
    root = tmp_path_factory.mktemp("resume")
    data = root / "data"
    write_set(data / "train", {P3: ["red", "green"], P5: ["green", "red"]}, size=16)
    assert train_main(args(data, root / "run")) == 0
    return data, root / "run"


@pytest.fixture()
def run(finished, tmp_path):
    """A copy of the finished run that a test may damage."""
    data, original = finished
    shutil.copytree(original, tmp_path / "run")
    return data, tmp_path / "run"


def test_a_checkpoint_holds_only_safetensors_and_json(finished):
    _, out = finished
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-1", "checkpoint-2"]
    names = sorted(p.name for p in (out / "checkpoints/checkpoint-2").iterdir())
    assert names == ["model.safetensors", "optimizer.json", "optimizer.safetensors", "scheduler.json",
                     "trainer_state.json"]
    state = json.loads((out / "checkpoints/checkpoint-2/trainer_state.json").read_text())
    assert state["format"] == "invgen.checkpoint" and state["step"] == 2 and len(state["losses"]) == 2
    assert sorted(state["files"]) == names[:-1]
    # The model part is the UNet's weights, bit for bit those of the saved pipeline after the last step.
    weights = load_file(out / "checkpoints/checkpoint-2/model.safetensors")
    unet = load_file(out / "unet/diffusion_pytorch_model.safetensors")
    assert weights.keys() == unet.keys() and all(torch.equal(weights[k], unet[k]) for k in unet)


def test_a_planted_pickle_does_not_run_and_the_checkpoint_is_refused(run, tmp_path, capsys):
    data, out = run
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return open, (str(marker), "w")  # unpickling this creates the marker file

    (out / "checkpoints/checkpoint-2/custom_checkpoint_0.pkl").write_bytes(pickle.dumps(Payload()))
    before = tree_hash(out)
    msg = fails(capsys, [*args(data, out, "train.steps=3"), "--resume"])
    assert msg == (f"error: checkpoint {out}/checkpoints/checkpoint-2 holds custom_checkpoint_0.pkl, a file invgen "
                   "did not write there, and is not loaded (a planted file could run code); remove that file to "
                   "resume")
    assert not marker.exists() and tree_hash(out) == before


def test_an_accelerate_pickle_checkpoint_is_refused_unread(run, tmp_path, capsys):
    """What invgen wrote before (accelerate's `save_state`: pickled optimizer, RNG and scheduler states)."""
    data, out = run
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return open, (str(marker), "w")

    old = out / "checkpoints/checkpoint-2"
    for name in ("optimizer.json", "optimizer.safetensors", "scheduler.json"):
        (old / name).unlink()
    for name in ("optimizer.bin", "random_states_0.pkl", "custom_checkpoint_0.pkl"):
        (old / name).write_bytes(pickle.dumps(Payload()))
    (old / "trainer_state.json").write_text(json.dumps({"step": 2, "losses": [1.0, 0.9]}))
    before = tree_hash(out)
    msg = fails(capsys, [*args(data, out, "train.steps=3"), "--resume"])
    assert msg == (f"error: checkpoint {old} is not in invgen's pickle-free format and is not loaded (its files "
                   "could run code); move the checkpoints folder away to start afresh")
    assert not marker.exists() and tree_hash(out) == before


def test_a_fresh_run_refuses_a_folder_with_another_runs_checkpoints(run, capsys):
    data, out = run
    before = tree_hash(out)
    msg = fails(capsys, args(data, out, "train.learning_rate=0.01"))
    assert msg == (f"error: {out}/checkpoints holds checkpoints of an earlier run (newest: checkpoint-2): pass "
                   "--resume to continue it, or move that folder away to start afresh")
    assert tree_hash(out) == before  # train_config.yaml and the log included


@pytest.mark.parametrize("damage", ["truncated", "truncated, manifest updated too"])
def test_a_damaged_optimizer_state_is_refused_then_the_one_before_resumes(run, capsys, monkeypatch, damage):
    data, out = run
    ckpt = out / "checkpoints/checkpoint-2"
    opt = ckpt / "optimizer.safetensors"
    opt.write_bytes(opt.read_bytes()[:1000])  # cut short, as by a full disk
    reason = "optimizer.safetensors is truncated or changed since it was written"
    if damage != "truncated":  # a manifest that agrees with the damage: the file itself is still checked
        state = json.loads((ckpt / "trainer_state.json").read_text())
        digest = hashlib.sha256(opt.read_bytes()).hexdigest()
        state["files"]["optimizer.safetensors"] = {"bytes": 1000, "sha256": digest}
        (ckpt / "trainer_state.json").write_text(json.dumps(state))
        reason = "optimizer.safetensors is unreadable: SafetensorError"
    before = tree_hash(out)
    msg = fails(capsys, [*args(data, out, "train.steps=3"), "--resume"])
    assert msg == f"error: checkpoint {ckpt} is damaged ({reason}); remove it to resume from the one before"
    assert tree_hash(out) == before

    # As the message says: without it, the run resumes from checkpoint-1, reading nothing through pickle.
    shutil.rmtree(ckpt)

    def no_unpickling(*a, **k):
        raise AssertionError("resume must not unpickle")

    monkeypatch.setattr(torch, "load", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    capsys.readouterr()
    assert train_main([*args(data, out, "train.steps=3"), "--resume"]) == 0
    assert f"resumed from {out}/checkpoints/checkpoint-1 (step 1)" in capsys.readouterr().out
    assert json.loads((out / "checkpoints/checkpoint-3/trainer_state.json").read_text())["step"] == 3


def test_a_checkpoint_of_another_model_is_refused_before_the_config_is_rewritten(run, capsys):
    data, out = run
    before = tree_hash(out)
    msg = fails(capsys, [*args(data, out, "model.block_out_channels=[8,8]"), "--resume"])
    assert msg == (f"error: checkpoint {out}/checkpoints/checkpoint-2 was written for another model (2 weights "
                   "differ, e.g. 'down_blocks.1.resnets.0.conv_shortcut.bias': only in the checkpoint); resume with "
                   f"the config it was trained with ({out}/train_config.yaml) or use another output_dir")
    assert tree_hash(out) == before

    # Same names, another shape (the manifest updated to match): the weight is named with both shapes.
    ckpt = out / "checkpoints/checkpoint-2"
    weights = load_file(ckpt / "model.safetensors")
    weights["conv_in.bias"] = torch.zeros(9)
    save_file(weights, ckpt / "model.safetensors")
    state = json.loads((ckpt / "trainer_state.json").read_text())
    blob = (ckpt / "model.safetensors").read_bytes()
    state["files"]["model.safetensors"] = {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    before = tree_hash(out)
    msg = fails(capsys, [*args(data, out), "--resume"])
    assert "'conv_in.bias' is (9,) torch.float32 in the checkpoint, (8,) torch.float32 here" in msg
    assert tree_hash(out) == before


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.norm_num_groups=3", "model.norm_num_groups: must divide every entry of model.block_out_channels "
                                    "[8, 16], got 3"),
        ("model.norm_num_groups=0", "model.norm_num_groups: must be positive, got 0"),
        ("model.block_out_channels=[8,-16]", "model.block_out_channels: must all be positive, got [8, -16]"),
        ("model.block_out_channels=[]", "model.block_out_channels: must list at least one block"),
        ("model.attention_head_dim=32", "model.attention_head_dim: must be between 1 and the channels of the "
                                        "attention blocks (16), got 32"),
        ("model.cross_attention_dim=6", "model.cross_attention_dim: must be a positive multiple of 4, got 6"),
        ("model.layers_per_block=0", "model.layers_per_block: must be positive, got 0"),
        ("model.channels=1", "model.channels: must be 3 (the training images are RGB), got 1"),
    ],
)
def test_model_shapes_the_unet_cannot_take_are_config_errors(tmp_path, capsys, override, expected):
    data = tmp_path / "data"
    msg = fails(capsys, args(data, tmp_path / "out", override))
    assert msg == f"error: configs/digits/base.yaml: {expected}"
    assert not (tmp_path / "out").exists() and not data.exists()


@pytest.mark.parametrize("below", ["", "sub/run"])
def test_an_output_dir_that_is_a_file(finished, tmp_path, capsys, below):
    data, _ = finished
    file = tmp_path / "notes.txt"
    file.write_text("mine\n")
    out = file / below if below else file
    assert fails(capsys, args(data, out)) == f"error: output_dir: {file} is a file, not a folder"
    assert file.read_text() == "mine\n" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    ("target", "code", "reason"),
    [
        ("train_config.yaml", errno.EROFS, "the file system is read-only"),
        ("checkpoint-1", errno.ENOSPC, "no space is left on the device"),
        ("checkpoint-2", errno.EACCES, "permission is denied"),
    ],
)
def test_a_read_only_or_full_disk_is_one_sentence_naming_the_path(finished, tmp_path, capsys, monkeypatch, target,
                                                                  code, reason):
    """Tests run as root, which ignores chmod: the disk's refusal is simulated where invgen moves files into
    place (`os.replace`), with the errno a read-only or full disk gives."""
    data, _ = finished
    out = tmp_path / "out"
    real_replace = os.replace

    def refusing_replace(src, dst, *a, **k):
        if Path(dst).name == target:
            raise OSError(code, os.strerror(code), str(dst))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", refusing_replace)
    path = out / target if target == "train_config.yaml" else out / "checkpoints" / target
    assert fails(capsys, args(data, out)) == f"error: cannot write {path}: {reason}"
    # Nothing half-written is left: no temporary files or folders, and no later checkpoint.
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]
    written = sorted(p.name for p in (out / "checkpoints").iterdir()) if (out / "checkpoints").exists() else []
    assert written == {"train_config.yaml": [], "checkpoint-1": [], "checkpoint-2": ["checkpoint-1"]}[target]


class _Dropout(torch.nn.Module):
    """A model that draws from torch's global generator in every forward pass (dropout)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.5), torch.nn.Linear(16, 1))
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        self.calls += 1  # a buffer that training changes: checkpoints keep buffers too
        return self.net(x)


class _Stop(Exception):
    pass


def _fit(out: Path, stop_after: int | None = None, resume: bool = False) -> Trainer:
    cfg = TrainConfig(steps=5, batch_size=8, learning_rate=1e-2, warmup_steps=1, checkpoint_every=2, log_every=1,
                      gradient_accumulation_steps=2)
    trainer = Trainer(cfg, out, _Dropout(), desc="dropout")
    trainer.start(resume)

    def loss(model, step, micro, gen):
        x = torch.randn(8, 4, generator=gen)
        return ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()

    def stop(step, _):
        if step == stop_after:
            raise _Stop

    trainer.fit(loss, on_step=stop)
    return trainer


def test_dropout_and_accumulation_resume_bit_for_bit_without_rng_state(tmp_path):
    """Global-RNG draws (dropout) are reseeded per micro-batch, so a resume needs no pickled RNG state."""
    whole = _fit(tmp_path / "whole")
    with pytest.raises(_Stop):
        _fit(tmp_path / "cut", stop_after=3)  # one step past the checkpoint at 2: redone on resume
    torch.manual_seed(123)  # whatever the global generator holds when the resumed process starts
    resumed = _fit(tmp_path / "cut", resume=True)
    assert resumed.losses == whole.losses
    a, b = whole.unwrap().state_dict(), resumed.unwrap().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a) and float(b["calls"]) == 5 * 2  # micro-batches
    assert (tmp_path / "cut/checkpoints/checkpoint-5").is_dir()
    final = json.loads((tmp_path / "cut/checkpoints/checkpoint-5/trainer_state.json").read_text())
    assert final == json.loads((tmp_path / "whole/checkpoints/checkpoint-5/trainer_state.json").read_text())
    assert loop.list_checkpoints(tmp_path / "cut/checkpoints")[-1][0] == 5
