"""Stable Diffusion 1.5's UNet at its published size (random weights) takes one InvDiff step through invgen's own
code path on the CPU, at 64 px (8x8 latents: the architecture is full size, only the image is small)."""

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel

from invgen.invdiff.adapter import DEFAULT_LORA_TARGETS, AdapterConfig
from invgen.invdiff.guidance import InvariantGuidance
from invgen.invdiff.objective import group_robust_loss
from invgen.train.conditioning import PROMPT_EMBEDS
from invgen.train.diffusion import DenoisingObjective, draw_noise

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from count_family_params import SD15_UNET  # noqa: E402

SD15_UNET_PARAMETERS = 859_520_964  # stable-diffusion-v1-5's unet/diffusion_pytorch_model.safetensors
# Rank 8 (configs/sd15/invdiff_celeba.yaml) on the sd defaults: 204 layers, 499,136 parameters per unit of rank
# (benchmarks/family_params.json, counted by peft's matching rule on the meta model).
SD15_LORA_R8_PARAMETERS = 3_993_088


def test_sd15_unet_at_true_size_takes_one_invdiff_step():
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET)
    unet.requires_grad_(False)
    assert sum(p.numel() for p in unet.parameters()) == SD15_UNET_PARAMETERS
    untouched = unet.conv_in.weight.clone()
    to_q = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    wrapped_before = to_q.weight.clone()

    guidance = InvariantGuidance.for_denoiser(unet, AdapterConfig(rank=8, alpha=8.0))
    assert guidance.adapter.target_modules == DEFAULT_LORA_TARGETS["sd"]
    model, params = guidance.training_module(unet)
    assert sum(p.numel() for p in params) == SD15_LORA_R8_PARAMETERS
    b_weights = [p for n, p in model.named_parameters() if ".lora_B." in n]
    assert b_weights and all(not p.any() for p in b_weights)  # Δ = 0 before training

    objective = DenoisingObjective("sd", DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                                       beta_end=0.012))
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 8, 8, generator=gen)
    states = torch.randn(2, 77, 768, generator=gen)
    weights = torch.tensor([[0.9, 0.1] + [0.0] * 6, [0.2, 0.8] + [0.0] * 6])  # 8 soft groups, as the recipe
    levels = objective.draw_levels(2, gen, tuple(x0.shape))
    losses = objective.per_sample_loss(model, x0, {PROMPT_EMBEDS: states}, levels, draw_noise(x0.shape, gen))
    loss = group_robust_loss(losses, weights, lam=1.0)
    loss.backward()
    optimizer.step()

    assert losses.shape == (2,) and torch.isfinite(loss)
    assert sum(bool(p.any()) for p in b_weights) > len(b_weights) // 2  # the step moved the adapter
    guidance.collect(model, release=True)
    assert len(guidance.lora_weights) == 2 * 204
    assert sum(v.numel() for v in guidance.lora_weights.values()) == SD15_LORA_R8_PARAMETERS
    # The base is frozen and given back as it was: plain layers, weights bit for bit.
    assert not any("lora_" in n for n, _ in unet.named_parameters())
    assert sum(p.numel() for p in unet.parameters()) == SD15_UNET_PARAMETERS
    assert torch.equal(unet.conv_in.weight, untouched)
    assert torch.equal(unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight, wrapped_before)


# ------------------------------------------------------------------------------------------------ latent cache
def _set_and_vae(tmp_path):
    from helpers import write_set

    from invgen.data.imagefolder import read_imagefolder
    from invgen.models.tiny import tiny_vae

    root = write_set(tmp_path / "set", {"a red thing": ["red"] * 5, "a green thing": ["green"] * 4}, size=8)
    return read_imagefolder(root, load_images=False), tiny_vae(seed=0)


def test_latent_cache_is_a_safetensors_file_read_memory_mapped(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from invgen.train.latents import cached_latents, encode_latents

    image_set, vae = _set_and_vae(tmp_path)
    want = encode_latents(image_set, vae, 8, "sample", seed=3, batch_size=4, progress=False)
    first, path, hit = cached_latents(image_set, vae, 8, tmp_path / "cache", "sample", 3, batch_size=2, progress=False)
    assert not hit and first.shape == (9, 4, 4, 4)
    assert torch.equal(first, want)  # streamed batch by batch: the same rows as encoding in memory
    # The file is plain safetensors (what earlier versions wrote and read), with its key and file list.
    assert torch.equal(load_file(path)["latents"], want)
    with safe_open(str(path), "pt") as f:
        assert json.loads(f.metadata()["file_names"]) == [r.file_name for r in image_set.records]
    second, path2, hit = cached_latents(image_set, vae, 8, tmp_path / "cache", "sample", 3, progress=False)
    assert hit and path2 == path and torch.equal(second, want)
    # Mapped, not loaded: rows are read from disk when indexed (Linux lists the mapping in /proc/self/maps).
    maps = Path("/proc/self/maps")
    assert not maps.exists() or str(path.resolve()) in maps.read_text()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    second[0] += 1.0  # copy-on-write: the cache file never changes
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert torch.equal(second[1:], want[1:]) and torch.equal(second[[8, 0]][0], want[8])


def test_killed_or_damaged_encode_leaves_no_cache_read_as_complete(tmp_path, monkeypatch):
    from invgen.train.latents import cached_latents

    image_set, vae = _set_and_vae(tmp_path)
    cache = tmp_path / "cache"
    real, calls = vae.encode, []

    def dies_on_the_third_batch(x):
        calls.append(len(x))
        if len(calls) == 3:
            raise KeyboardInterrupt  # what a killed run raises
        return real(x)

    monkeypatch.setattr(vae, "encode", dies_on_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        cached_latents(image_set, vae, 8, cache, "mean", 0, batch_size=2, progress=False)
    assert list(cache.iterdir()) == []  # no half-written file, not even a temporary one
    monkeypatch.undo()

    latents, path, hit = cached_latents(image_set, vae, 8, cache, "mean", 0, batch_size=2, progress=False)
    assert not hit and latents.shape == (9, 4, 4, 4)
    whole, want = path.read_bytes(), latents.clone()  # (`latents` maps the file that is damaged below)
    path.write_bytes(whole[:-16])  # a truncated file (a disk that filled up, a copy cut short)
    again, _, hit = cached_latents(image_set, vae, 8, cache, "mean", 0, batch_size=2, progress=False)
    assert not hit and torch.equal(again, want) and path.read_bytes() == whole


# ------------------------------------------------------------------------------------------------ latent runs
def _latent_jobs(tmp_path):
    """groups + invdiff of the sd15 recipe on a tiny saved Stable Diffusion, no `data.latent_cache` given."""
    from diffusers import StableDiffusionPipeline
    from helpers import P3, P5, write_set

    from invgen.models import tiny_stable_diffusion_components
    from invgen.models.loading import save_pipeline

    pipe = save_pipeline(StableDiffusionPipeline(**tiny_stable_diffusion_components(seed=0)), tmp_path / "sd")
    data = write_set(tmp_path / "data" / "train", {P3: ["red"] * 7 + ["green"], P5: ["green"] * 7 + ["red"]},
                     size=16).parent

    def args(job: str, out: Path) -> list[str]:
        return [job, "--config", "configs/sd15/invdiff_waterbirds.yaml", f"base_model={pipe}", f"output_dir={out}",
                f"data.root={data}", "data.builder=null", "data.size=16", "data.latent_cache=null",
                "data.encode_batch_size=4",
                "groups.num_groups=2", "groups.noise_draws=1", "groups.timesteps=[500]", "groups.batch_size=8",
                "train.steps=4", "train.batch_size=8", "train.learning_rate=0.01", "train.warmup_steps=0",
                "train.mixed_precision='no'", "train.gradient_checkpointing=false", "train.checkpoint_every=1",
                "train.log_every=1"]
    return args


def _losses(out: Path) -> list[tuple[int, float]]:
    return [(e["step"], e["loss"]) for e in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())]


def _lora(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(out / "pytorch_lora_weights.safetensors")


@pytest.mark.slow
def test_latent_runs_keep_their_cache_on_disk_resume_after_a_kill_and_match_two_processes(tmp_path):
    import os
    import signal
    import subprocess
    import time

    from helpers import launch_two_cpu

    from invgen.train.__main__ import main as train_main

    args, root = _latent_jobs(tmp_path), Path(__file__).resolve().parents[1]
    one = tmp_path / "one"
    assert train_main(args("groups", one)) == 0 and train_main(args("invdiff", one)) == 0
    cached = list((one / "latents").glob("latents-*.safetensors"))
    assert len(cached) == 1  # written once by groups, read (memory-mapped) by invdiff

    # Killed with SIGKILL as soon as the second checkpoint exists, then resumed: the same adapter bit for bit.
    killed = tmp_path / "killed"
    assert train_main(args("groups", killed)) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "invgen.train", *args("invdiff", killed), "--resume"]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (killed / "checkpoints" / "checkpoint-2").is_dir() and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "pytorch_lora_weights.safetensors").exists()
    assert train_main([*args("invdiff", killed), "--resume"]) == 0
    assert _losses(killed) == _losses(one)
    assert all(torch.equal(a, b) for a, b in zip(_lora(one).values(), _lora(killed).values(), strict=True))

    # Two processes: the main one encodes into the run folder, the other reads that file; same groups, and the
    # adapter within the tolerances of tests/test_multiprocess.py.
    two = tmp_path / "two"
    driver = tmp_path / "driver.py"
    driver.write_text("import json, sys\nfrom invgen.train.__main__ import main\n"
                      "for job in json.loads(sys.argv[1]):\n    assert main(job) == 0\n")
    done = launch_two_cpu([str(driver), json.dumps([args("groups", two), args("invdiff", two)])], cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.name for p in (two / "latents").iterdir()] == [cached[0].name]
    assert json.loads((two / "groups.json").read_text())["n"] == 16
    a, b = _lora(one), _lora(two)
    diff = torch.cat([(a[k] - b[k]).flatten() for k in a])
    assert diff.norm() <= 1e-4 * torch.cat([a[k].flatten() for k in a]).norm()
