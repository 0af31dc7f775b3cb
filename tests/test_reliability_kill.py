"""Crash safety: a trainer killed with SIGKILL at random moments resumes to exactly the uninterrupted result.

A tiny `python -m invgen.train base` run checkpoints after every step. Each run is killed up to KILLS_PER_RUN
times at seeded random moments (half of them as soon as a checkpoint's temporary folder appears, so that
they land inside a checkpoint write), restarted with `--resume` each time, and finally left to finish;
KILLS kills in all. After
every kill the folder must show only complete things (each checkpoint loads, every log line parses, a
pipeline folder is whole or absent), and every finished run must equal the uninterrupted run bit for bit:
UNet weights, logged losses and the losses kept in the last checkpoint.

Slow (about 5 minutes on two shared cores): `make test` skips it, CI runs it on its own line.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import P3, P5, write_set
from safetensors.torch import load_file

KILLS = 20
KILLS_PER_RUN = 5
STEPS = 10
UNET = "unet/diffusion_pytorch_model.safetensors"
ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def overrides(data: Path, out: Path) -> list[str]:
    return [f"output_dir={out}", f"data.root={data}", "data.builder=null",
            "model.block_out_channels=[8,16]", "model.norm_num_groups=4", "model.attention_head_dim=4",
            f"train.steps={STEPS}", "train.batch_size=8", "train.warmup_steps=0", "train.log_every=1",
            "train.checkpoint_every=1", "train.keep_checkpoints=2"]


def start(data: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "invgen.train", "base", "--config", "configs/digits/base.yaml", "--resume",
           *overrides(data, out)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]


def log(out: Path) -> list[tuple[int, float]]:
    return [(e["step"], e["loss"]) for e in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())]


def assert_only_complete_things_visible(out: Path) -> bool:
    """Everything a user or a resume can see is whole; returns whether a checkpoint was being written."""
    if (out / "train_config.yaml").exists():
        assert isinstance(yaml.safe_load((out / "train_config.yaml").read_text()), dict)
    if (out / "train_log.jsonl").exists():
        log(out)  # every line parses (a line is one write(), so a kill cannot cut it)
    for ckpt in (out / "checkpoints").glob("checkpoint-*"):
        state = json.loads((ckpt / "trainer_state.json").read_text())
        assert ckpt.name == f"checkpoint-{state['step']}" and len(state["losses"]) == state["step"]
        load_file(ckpt / "model.safetensors")
        load_file(ckpt / "optimizer.safetensors")
        json.loads((ckpt / "scheduler.json").read_text())
    if (out / "model_index.json").exists():
        load_file(out / UNET)
    return any((out / "checkpoints").glob(".checkpoint-*.tmp"))


def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path):
    data = tmp_path / "data"
    write_set(data / "train", {P3: ["red"] * 6 + ["green"] * 2, P5: ["green"] * 6 + ["red"] * 2}, size=16)
    ref = tmp_path / "ref"
    t0 = time.monotonic()
    proc = start(data, ref)
    while not (ref / "train_config.yaml").exists() and proc.poll() is None:
        time.sleep(0.05)
    t_train = time.monotonic()
    finish(proc)
    train_time = time.monotonic() - t_train  # data, training and saving, after start-up
    assert train_time < time.monotonic() - t0
    want_unet, want_log = load_file(ref / UNET), log(ref)
    assert [s for s, _ in want_log] == list(range(1, STEPS + 1))

    rng = random.Random(0)
    kills, during_checkpoint, runs = 0, 0, 0
    while kills < KILLS:
        runs += 1
        assert runs <= 3 * KILLS // KILLS_PER_RUN, f"only {kills} kills landed in {runs - 1} runs"
        out = tmp_path / f"run{runs}"
        for _ in range(KILLS_PER_RUN):
            if kills == KILLS:
                break
            done_steps = max([int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("checkpoint-*")] or [0])
            proc = start(data, out)
            while not (out / "train_config.yaml").exists() and proc.poll() is None:
                time.sleep(0.01)
            if rng.random() < 0.5:
                # Half the kills aim at a checkpoint being written: as soon as its temporary folder appears.
                while not any((out / "checkpoints").glob(".checkpoint-*.tmp")) and proc.poll() is None:
                    time.sleep(0.0005)
                time.sleep(rng.uniform(0, 0.01))
            else:
                # The others at any moment of what is left of the run (data, training steps, final save).
                time.sleep(rng.uniform(0, train_time * (STEPS - done_steps + 1) / STEPS))
            if proc.poll() is not None:  # finished before its kill: nothing was interrupted
                assert proc.returncode == 0, proc.stderr.read()[-3000:]
                break
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            during_checkpoint += assert_only_complete_things_visible(out)
        finish(start(data, out))
        assert log(out) == want_log
        final_state = f"checkpoints/checkpoint-{STEPS}/trainer_state.json"
        assert json.loads((out / final_state).read_text()) == json.loads((ref / final_state).read_text())
        got = load_file(out / UNET)
        assert got.keys() == want_unet.keys()
        for k in got:
            assert torch.equal(got[k], want_unet[k]), k
    print(f"\nkills survived: {kills}/{kills} over {runs} runs, {during_checkpoint} during a checkpoint write")
    assert during_checkpoint > 0
