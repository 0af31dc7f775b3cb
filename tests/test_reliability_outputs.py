"""invgen replaces only what it provably wrote, labels every image with the job that made it, and says why in
one sentence when it refuses (exit 2). Every example goes through a real entry point; folders a refusal must
leave alone are hashed, whole, before and after.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import P3, P5, pixel_pipeline_with_adapter, tree_hash, write_set

from invgen.cli import main
from invgen.data.imagefolder import ImageRecord, read_imagefolder, write_imagefolder
from invgen.sampling import LOCK, MANIFEST

REPO = Path(__file__).resolve().parent.parent



def error_line(stderr: str) -> str:
    """The one `error:` line (loading progress bars may come before it); "" if there is none."""
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) <= 1, lines
    return lines[0] if lines else ""


def run(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, error_line(capsys.readouterr().err)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny saved pixel pipeline, an adapter that changes its images, and a prompts file."""
    root = pixel_pipeline_with_adapter(tmp_path_factory.mktemp("models"))
    (root / "prompts.txt").write_text(f"{P3}\n{P5}\n")
    return root


def sample_args(models: Path, out: Path, *extra) -> list:
    return ["sample", "--pipeline", models / "pipe", "--prompts", models / "prompts.txt", "--out", out,
            "--per-prompt", "2", "--steps", "2", "--batch-size", "2", "--seed", "7", *extra]


def guided(models: Path) -> list:
    return ["--guidance", models / "adapter", "--scale", "3"]


LOCKER = """
import sys, time
from pathlib import Path
from invgen.sampling import acquire_lock
acquire_lock(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(600)
"""


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process that holds the folder's sampling lock, as a concurrent `invgen sample` would."""
    proc = subprocess.Popen([sys.executable, "-c", LOCKER, str(folder)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.fixture(scope="module")
def sets(models, tmp_path_factory):
    """A base and a guided set, each sampled once by an uninterrupted run; tests work on copies."""
    root = tmp_path_factory.mktemp("sets")
    assert main([str(a) for a in sample_args(models, root / "base")]) == 0
    assert main([str(a) for a in sample_args(models, root / "guided", *guided(models))]) == 0
    return root


# ------------------------------------------------------------------------------------- sampling: wrong labels
def test_base_then_guided_into_one_folder_is_refused_and_overwrite_replaces(models, sets, tmp_path, capsys):
    out = shutil.copytree(sets / "base", tmp_path / "s")
    before = tree_hash(out)
    code, err = run(capsys, *sample_args(models, out, *guided(models)))
    assert code == 2
    assert err == (f"error: {out} holds images of another sampling job (guidance None there, "
                   f"'{models / 'adapter'}' now); choose another --out, or pass --overwrite to replace them")
    assert tree_hash(out) == before and not (out / LOCK).exists()
    # --overwrite replaces that job's files with exactly what an uninterrupted guided run writes.
    assert run(capsys, *sample_args(models, out, *guided(models), "--overwrite"))[0] == 0
    assert tree_hash(out) == tree_hash(sets / "guided")
    records = read_imagefolder(out).records
    assert all(r.extra["guidance"] == str(models / "adapter") and r.extra["scale"] == 3.0 for r in records)
    # The guided images really are other images than the base ones.
    assert not np.array_equal(read_imagefolder(out).images, read_imagefolder(sets / "base").images)


@pytest.mark.parametrize("change", [["--seed", "8"], ["--steps", "3"], ["--per-prompt", "3"], ["--scale", "0.5"]])
def test_any_setting_that_changes_pixels_is_another_job(models, sets, capsys, change):
    out = sets / "guided"
    before = tree_hash(out)
    argv = sample_args(models, out, *guided(models))
    argv[argv.index(change[0]) + 1] = change[1]
    code, err = run(capsys, *argv)
    assert code == 2 and err.startswith(f"error: {out} holds images of another sampling job (")
    assert err.endswith("pass --overwrite to replace them") and tree_hash(out) == before


def test_same_job_resumes_after_a_kill_with_identical_bytes(models, sets, tmp_path, capsys):
    whole = tree_hash(sets / "guided")
    assert MANIFEST in whole and LOCK not in whole and len(whole) == 6  # 4 images, metadata, manifest
    out = shutil.copytree(sets / "guided", tmp_path / "killed")
    # What a run killed mid-way leaves: no metadata, missing images, a temporary file, and its lock.
    for name in ("metadata.jsonl", "000001.png", "000002.png"):
        (out / name).unlink()
    (out / ".000002.png.x1y2.tmp").write_bytes(b"half a png")
    proc = hold_lock(out)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((out / LOCK).read_text())["pid"] == proc.pid  # stale: its process is gone
    kept = (out / "000000.png").stat().st_mtime_ns
    assert run(capsys, *sample_args(models, out, *guided(models)))[0] == 0
    assert tree_hash(out) == whole  # same files, same bytes: lock and temporary file gone
    assert (out / "000000.png").stat().st_mtime_ns == kept  # resumed, not redone


def test_a_live_concurrent_writer_is_refused(models, sets, tmp_path, capsys):
    out = shutil.copytree(sets / "base", tmp_path / "s")
    (out / "metadata.jsonl").unlink()  # half-finished: the rerun would resume it
    proc = hold_lock(out)
    before = tree_hash(out)  # the other writer's lock file included: it is not ours to touch
    try:
        code, err = run(capsys, *sample_args(models, out))
    finally:
        proc.kill()
        proc.wait()
    assert code == 2
    assert err.startswith(f"error: {out} is being filled by another sampling run (pid {proc.pid} on ")
    assert err.endswith("wait for it to end or choose another --out")
    assert tree_hash(out) == before


# ----------------------------------------------------------------------------------------- data loss
def test_sample_into_a_users_image_set_is_refused(models, tmp_path, capsys):
    user = write_set(tmp_path / "mine", {P3: ["red"] * 8, P5: ["green"] * 8})
    before = tree_hash(user)
    code, err = run(capsys, *sample_args(models, user))
    assert code == 2
    assert err == (f"error: {user} already holds files that invgen sample did not write (000.png); "
                   "choose an empty or new --out")
    assert tree_hash(user) == before and len(read_imagefolder(user)) == 16
    code, err = run(capsys, *sample_args(models, user, "--overwrite"))  # never deletes what it did not write
    assert code == 2 and tree_hash(user) == before


def test_data_digits_keeps_a_users_train_folder_and_files_added_to_its_own(tmp_path, capsys):
    out = tmp_path / "d"
    write_set(out / "train", {P3: ["red", "green"]})
    (out / "train" / "notes.txt").write_text("mine")
    before = tree_hash(out)
    code, err = run(capsys, "data", "digits", "--out", out)
    assert code == 2
    assert err == f"error: {out / 'train'} holds files that invgen did not build; pass --overwrite to replace it"
    assert tree_hash(out) == before
    assert run(capsys, "data", "digits", "--out", out, "--overwrite")[0] == 0
    assert not (out / "train" / "notes.txt").exists() and len(read_imagefolder(out / "train", False)) > 1000
    # Its own set is rebuilt for other parameters (tests/test_data.py), but not over a file the user added.
    (out / "test" / "extra.png").write_bytes(b"the user's")
    before = tree_hash(out)
    code, err = run(capsys, "data", "digits", "--out", out, "--p-align", "0.7")
    assert code == 2 and err.startswith(f"error: {out / 'test'} holds files that invgen did not build")
    assert tree_hash(out) == before


def test_training_config_with_the_users_data_root_refuses_to_build_digits(tmp_path, capsys):
    from invgen.train.__main__ import main as train_main

    root = tmp_path / "data"
    write_set(root / "train", {P3: ["red", "green"], P5: ["red"]})
    (root / "train" / "readme.txt").write_text("unrelated")
    before = tree_hash(root)
    code = train_main(["base", "--config", str(REPO / "configs/digits/base.yaml"), f"output_dir={tmp_path / 'run'}",
                       f"data.root={root}", "train.steps=1"])
    err = error_line(capsys.readouterr().err)
    assert code == 2
    assert err == (f"error: data.root {root} holds data that invgen did not build ({root / 'train'}); set "
                   "data.builder=null to train on it, or choose an empty data.root for the colored_digits set")
    assert tree_hash(root) == before


def test_genview_never_writes_over_its_input_or_a_users_folder(tmp_path, capsys):
    images = write_set(tmp_path / "images", {P3: ["red", "green"]})
    before = tree_hash(tmp_path)
    for out in (images, tmp_path):  # the input set itself, or a folder that holds it
        code, err = run(capsys, "views", "genview", "--images", images, "--out", out, "--overwrite")
        assert code == 2
        assert err == (f"error: --out {out} holds the --images set; writing views there would replace the images "
                       "they are made from, so choose another --out")
    other = write_set(tmp_path / "other", {P5: ["red"]})
    before = tree_hash(tmp_path)
    code, err = run(capsys, "views", "genview", "--images", images, "--out", other)
    assert code == 2
    assert err == f"error: {other} holds files that invgen views genview did not write; pass --overwrite to replace it"
    assert tree_hash(tmp_path) == before


def test_write_imagefolder_without_overwrite_names_the_folder(tmp_path):
    from invgen.errors import InvgenDataError

    out = write_set(tmp_path / "s", {P3: ["red"]})
    before = tree_hash(out)
    with pytest.raises(InvgenDataError, match=f"^{out} already exists; pass overwrite=True to replace it$"):
        write_imagefolder(out, [np.zeros((8, 8, 3), np.uint8)], [ImageRecord("x.png", P3)], overwrite=False)
    assert tree_hash(out) == before


# ---------------------------------------------------------------------------------------- file modes
@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_get_the_modes_the_umask_gives(models, tmp_path, capsys, umask):
    old = os.umask(umask)
    try:
        set_dir = write_set(tmp_path / "set", {P3: ["red"]})
        one = tmp_path / "one.txt"
        one.write_text(f"{P3}\n")
        out = tmp_path / "s"
        code, _ = run(capsys, "sample", "--pipeline", models / "pipe", "--prompts", one, "--out", out,
                      "--per-prompt", "1", "--steps", "1")
    finally:
        os.umask(old)
    assert code == 0
    assert (set_dir.stat().st_mode & 0o777) == 0o777 & ~umask
    for f in [*set_dir.iterdir(), *out.iterdir()]:
        assert (f.stat().st_mode & 0o777) == 0o666 & ~umask, f.name
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, "000000.png", "metadata.jsonl"])


# ------------------------------------------------------------------------------- one sentence, not a traceback
def test_bad_sample_inputs_are_one_sentence(models, tmp_path, capsys):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"a photo of the digit 3\ncaf\xe9\n")
    assert run(capsys, *sample_args(models, tmp_path / "o")[:4], bad, *sample_args(models, tmp_path / "o")[5:]) == (
        2, f"error: prompts file {bad} is not UTF-8 text (line 2, byte 27)")
    a_file = tmp_path / "file.png"
    a_file.write_bytes(b"not a folder")
    assert run(capsys, *sample_args(models, a_file)) == (
        2, f"error: {a_file} is a file, not a folder for the image set; choose another --out")
    code, err = run(capsys, *sample_args(models, tmp_path / "o"), "--steps", "5000")
    assert (code, err) == (2, "error: --steps 5000 is more than the 1000 steps the scheduler was trained with")
    assert a_file.read_bytes() == b"not a folder" and not (tmp_path / "o").exists()


def test_data_digits_out_that_is_a_file(tmp_path, capsys):
    a_file = tmp_path / "d"
    a_file.write_text("mine")
    assert run(capsys, "data", "digits", "--out", a_file) == (
        2, f"error: {a_file} is a file, not a folder to build the digits set in")
    assert a_file.read_text() == "mine"


def _fail_with(code: int):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return fail


def test_full_or_read_only_disk_is_one_sentence(models, tmp_path, capsys, monkeypatch):
    import tempfile

    from PIL import Image

    with monkeypatch.context() as m:
        m.setattr(Image.Image, "save", _fail_with(errno.ENOSPC))  # the disk fills up while a PNG is written
        out = tmp_path / "s"
        code, err = run(capsys, *sample_args(models, out))
        assert code == 2 and err.startswith(f"error: cannot write {out}") and "no space is left" in err
        assert not (out / LOCK).exists()  # the lock went with the run
        code, err = run(capsys, "data", "digits", "--out", tmp_path / "d")
        assert code == 2 and err.startswith(f"error: cannot write {tmp_path / 'd'}") and "no space is left" in err
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == []  # no half-written split left behind
    with monkeypatch.context() as m:
        m.setattr(tempfile, "mkstemp", _fail_with(errno.EROFS))
        code, err = run(capsys, *sample_args(models, tmp_path / "r"))
        assert code == 2 and err.startswith(f"error: cannot write {tmp_path / 'r'}") and "read-only" in err
