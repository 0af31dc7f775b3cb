"""Two CPU processes (`accelerate launch`, gloo; see `helpers.launch_two_cpu`) give what one process gives.

Each trainer draws the same global batch in every process and keeps its shard, so with the same seed and
effective batch size two processes follow one process's run; only float summation order differs (DDP
averages two half-batch gradients instead of one full-batch gradient). Tolerances, stated here and checked
on these tiny runs: logged losses within 1e-4 relative (seen: 6e-7), group weights within 1e-5 (seen: 0),
weights within 1e-4 in relative norm (seen: 9e-6 for the UNet, 7e-8 for the LoRA). Single weights may differ
more: AdamW moves each weight by up to one learning rate per step whatever the gradient's size, so a
near-zero gradient whose rounding differs moves differently; the bound per weight is 1e-3 (seen: 3e-4
after 4 steps at learning rate 2e-3).
InvDiff's objective is not a mean over samples (group means, their variance): its per-group sums are summed
over processes (`Trainer.all_sum`) so that it is the whole batch's objective, with the whole batch's gradient.

The launch runs every job through the real entry points in one pair of processes (one start-up instead of
four), with tiny models; still about 100 s on two shared cores, so the file is slow (CI runs it).
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import launch_two_cpu
from safetensors.torch import load_file

from invgen.cli import main as cli_main
from invgen.data.imagefolder import read_imagefolder
from invgen.train.__main__ import main as train_main

pytestmark = pytest.mark.slow

TINY_MODEL = ["model.block_out_channels=[8,16]", "model.norm_num_groups=4", "model.attention_head_dim=4"]
TRAIN = ["train.steps=4", "train.batch_size=8", "train.warmup_steps=0", "train.log_every=1", "train.checkpoint_every=2"]

DRIVER = """
import json, sys
from invgen.cli import main as cli_main
from invgen.train.__main__ import main as train_main
for job in json.loads(sys.argv[1]):
    code = cli_main(job[1:]) if job[0] == "sample" else train_main(job)
    if code:
        sys.exit(code)
"""


def jobs(root: Path, digits: Path, base_model: Path) -> list[list[str]]:
    """base, groups, invdiff and sample, all tiny; groups and invdiff start from `base_model`."""
    data = [f"data.root={digits}", "data.builder=null"]
    base = ["base", "--config", "configs/digits/base.yaml", f"output_dir={root / 'base'}", *data, *TINY_MODEL,
            *TRAIN]
    inv = ["--config", "configs/digits/invdiff.yaml", f"base_model={base_model}", f"output_dir={root / 'invdiff'}",
           *data, "groups.noise_draws=1", "groups.steps=50", "adapter.rank=2", *TRAIN]
    prompts = root.parent / "prompts.txt"
    sample = ["sample", "sample", "--pipeline", str(base_model), "--guidance", str(root / "invdiff"),
              "--prompts", str(prompts), "--out", str(root / "samples"), "--per-prompt", "2", "--steps", "2",
              "--batch-size", "2", "--seed", "3"]
    return [base, ["groups", *inv], ["invdiff", *inv], sample]


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def log_losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]


def assert_close_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    diff = torch.cat([(a[k] - b[k]).flatten() for k in a])
    assert diff.norm() <= 1e-4 * torch.cat([a[k].flatten() for k in a]).norm()
    assert diff.abs().max() <= 1e-3


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits_dir):
    """The same jobs run once in this process and once as two launched processes."""
    root = tmp_path_factory.mktemp("mp")
    (root / "prompts.txt").write_text("a photo of the digit 3\na photo of the digit 5\n")
    one, two = root / "one", root / "two"
    for job in jobs(one, digits_dir, one / "base"):
        main = cli_main if job[0] == "sample" else train_main
        assert main(job[1:] if job[0] == "sample" else job) == 0, job[0]
    (root / "driver.py").write_text(DRIVER)
    done = launch_two_cpu([str(root / "driver.py"), json.dumps(jobs(two, digits_dir, one / "base"))],
                          cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    return one, two, done.stderr


def test_base_two_processes_match_one(runs):
    one, two, _ = runs
    np.testing.assert_allclose(log_losses(two / "base"), log_losses(one / "base"), rtol=1e-4)
    weights = "unet/diffusion_pytorch_model.safetensors"
    assert_close_weights(load_file(one / "base" / weights), load_file(two / "base" / weights))


def test_groups_two_processes_match_one(runs):
    one, two, _ = runs
    a, b = load_file(one / "invdiff/groups.safetensors"), load_file(two / "invdiff/groups.safetensors")
    # Per-sample losses are scored on two slices and gathered in order: same numbers, same order.
    torch.testing.assert_close(a["losses"], b["losses"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a["weights"], b["weights"], rtol=0, atol=1e-5)


def test_invdiff_two_processes_match_one(runs):
    one, two, _ = runs
    np.testing.assert_allclose(log_losses(two / "invdiff"), log_losses(one / "invdiff"), rtol=1e-4)
    adapter = "pytorch_lora_weights.safetensors"
    assert_close_weights(load_file(one / "invdiff" / adapter), load_file(two / "invdiff" / adapter))


def test_guided_sampling_two_processes_match_one(runs):
    one, two, _ = runs
    a, b = read_imagefolder(one / "samples"), read_imagefolder(two / "samples")
    assert [r.file_name for r in a.records] == [r.file_name for r in b.records]
    # The adapters differ by float rounding only: at most one intensity level on 8-bit pixels.
    assert np.abs(a.images.astype(int) - b.images.astype(int)).max() <= 1


def test_only_the_main_process_writes(runs):
    one, two, stderr = runs
    # The same files: checkpoints hold no per-process RNG state (every step reseeds from seed and step).
    assert files(two) == files(one)
    assert not [f for f in files(two) if f.endswith((".tmp", ".old"))]
    # One log line per step (not two), one metadata line per image.
    assert len(log_losses(two / "base")) == 4 and len(log_losses(two / "invdiff")) == 4
    assert len((two / "samples/metadata.jsonl").read_text().splitlines()) == 4
    assert stderr.count("resumed") == 0


def cdvg_jobs(root: Path, digits: Path) -> list[list[str]]:
    """The learned translator, then CDvG with it (views) and without (cross-entropy), all tiny."""
    data = [f"data.root={digits}", "data.builder=null"]
    steps = ["train.steps=4", "train.batch_size=8", "train.warmup_steps=0", "train.log_every=1",
             "train.checkpoint_every=2"]
    translator = ["translator", f"output_dir={root / 'translator'}", *data, *steps]
    cdvg = ["cdvg", "--config", "configs/digits/cdvg.yaml", *data, *steps, "encoder.widths=[4,8]"]
    return [translator,
            [*cdvg, f"output_dir={root / 'cdvg'}", "translator.kind=learned", f"translator.model={root / 'translator'}",
             "translator.train_if_missing=false", f"translator.cache_dir={root / 'views'}"],
            [*cdvg, f"output_dir={root / 'ce'}", "translator.kind=none"]]


def test_cdvg_and_its_translator_under_two_processes(tmp_path, digits_dir):
    """The translator (no batch statistics) matches one process like the other trainers. CDvG runs and
    writes from the main process only; it matches one process only loosely: its encoder's BatchNorm
    statistics and its contrastive negatives are per process, as in single-node DDP SimCLR
    (docs/reliability.md)."""
    one, two = tmp_path / "one", tmp_path / "two"
    for job in cdvg_jobs(one, digits_dir):
        assert train_main(job) == 0, job[0]
    (tmp_path / "driver.py").write_text(DRIVER)
    done = launch_two_cpu([str(tmp_path / "driver.py"), json.dumps(cdvg_jobs(two, digits_dir))],
                          cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_allclose(log_losses(two / "translator"), log_losses(one / "translator"), rtol=1e-4)
    assert_close_weights(load_file(one / "translator/model/diffusion_pytorch_model.safetensors"),
                         load_file(two / "translator/model/diffusion_pytorch_model.safetensors"))
    # The views of the drawn images (4 steps x 8 images x 2 views): each process made its own share of every
    # batch, together the same views as one process. (The file names differ from one process's: they key the
    # translator's exact weights, which differ by float rounding.)
    assert 0 < len(files(two / "views")) == len(files(one / "views")) <= 4 * 8 * 2
    # Cross-entropy alone differs only by per-process BatchNorm statistics: within 1% (seen: 0.2%). With views
    # each process contrasts half the batch (fewer negatives, a lower loss: seen 16% lower), so only finite.
    np.testing.assert_allclose(log_losses(two / "ce"), log_losses(one / "ce"), rtol=1e-2)
    assert len(log_losses(two / "cdvg")) == 4 and all(np.isfinite(log_losses(two / "cdvg")))
    written_one, written_two = ({f for f in files(root) if not f.startswith("views/")} for root in (one, two))
    assert written_two == written_one
