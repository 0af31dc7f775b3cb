import numpy as np
import pytest
import torch
from helpers import launch_two_cpu

from invgen.cli import main
from invgen.data.imagefolder import read_imagefolder
from invgen.models.loading import save_pipeline


@pytest.fixture(scope="module")
def saved_pipe(tmp_path_factory):
    from invgen.pipelines import build_pixel_pipeline

    pipe = build_pixel_pipeline(seed=0)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in pipe.unet.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    path = tmp_path_factory.mktemp("pipe") / "p"
    save_pipeline(pipe, path)
    prompts = path.parent / "prompts.txt"
    prompts.write_text("a photo of the digit 1\na photo of the digit 2\n\n")
    return path, prompts


def _args(path, prompts, out):
    return ["sample", "--pipeline", str(path), "--prompts", str(prompts), "--out", str(out),
            "--per-prompt", "3", "--steps", "3", "--batch-size", "2", "--seed", "7"]


def test_sample_writes_a_set_and_resumes_without_duplicates(saved_pipe, tmp_path):
    path, prompts = saved_pipe
    out = tmp_path / "s"
    assert main(_args(path, prompts, out)) == 0
    first = read_imagefolder(out)
    assert len(first) == 6 and first.prompts[:3] == ["a photo of the digit 1"] * 3
    assert first.records[4].extra["seed"] != first.records[5].extra["seed"]
    assert first.records[0].extra["num_inference_steps"] == 3
    # A half-finished set: metadata missing and two images gone; the rerun fills only the gaps.
    (out / "metadata.jsonl").unlink()
    (out / "000001.png").unlink()
    (out / "000004.png").unlink()
    keep = (out / "000000.png").stat().st_mtime_ns
    assert main(_args(path, prompts, out)) == 0
    again = read_imagefolder(out)
    assert len(again) == 6 and sorted(p.name for p in out.glob("*.png")) == [f"{i:06d}.png" for i in range(6)]
    assert (out / "000000.png").stat().st_mtime_ns == keep
    np.testing.assert_array_equal(first.images, again.images)


def test_sample_bad_input_is_one_sentence(saved_pipe, tmp_path, capsys):
    path, _ = saved_pipe
    assert main(_args(path, tmp_path / "none.txt", tmp_path / "o")) == 2
    assert "prompts file" in capsys.readouterr().err
    assert main(_args(tmp_path / "no" / "pipe", saved_pipe[1], tmp_path / "o")) == 2
    assert "no pipeline folder" in capsys.readouterr().err


def test_two_processes_write_the_same_set_as_one(saved_pipe, tmp_path):
    path, prompts = saved_pipe
    assert main(_args(path, prompts, tmp_path / "one")) == 0
    done = launch_two_cpu(["-m", "invgen.cli", *_args(path, prompts, tmp_path / "two")], timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    one, two = read_imagefolder(tmp_path / "one"), read_imagefolder(tmp_path / "two")
    assert [r.file_name for r in one.records] == [r.file_name for r in two.records]
    np.testing.assert_array_equal(one.images, two.images)
