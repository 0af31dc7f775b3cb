"""InvDiff at Stable Diffusion 1.5's true size (random weights) against a plain diffusers LoRA fine-tuning step.

    .venv/bin/python scripts/bench_scale.py --quick                  # CPU, 256 px: writes benchmarks/scale.json
    python scripts/bench_scale.py --resolution 512 --device cuda --dtype bf16 --out runs/scale_gpu.json

The UNet, the CLIP ViT-L/14 text encoder and the VAE are built from SD 1.5's published configs
(scripts/count_family_params.py) with random weights: the architecture, not the weights, sets the cost. Both
arms train a LoRA of the sd15 CelebA recipe's rank on the sd family's default targets (invgen/invdiff/adapter.py):

- `invdiff_step_s`: one InvDiff step through invgen's own path: `InvariantGuidance.for_denoiser` +
  `training_module`, balanced sampling over group weights, `DenoisingObjective.per_sample_loss`,
  `group_robust_loss`, gradient clipping, AdamW;
- `lora_step_s`: one step as diffusers' text-to-image LoRA example takes it: `unet.add_adapter(LoraConfig)` on
  the same modules, MSE on ε, gradient clipping, AdamW.
  Both read the same cached latents and prompt states (the example re-encodes them every step; not counted).
- `peak_rss_gb_*`: each arm in its own process (`ru_maxrss`), with and without gradient checkpointing;
- `groups_images_per_s`: invgen's per-sample losses (invgen/invdiff/grouper.py) against a plain no-grad UNet
  forward over the same images (`forward_images_per_s`);
- `sampling_overhead_fused` / `_unfused`: UNet calls (classifier-free guidance batch) with an adapter attached by
  `InvariantGuidance.attach(fuse=True / False)`, over the same calls without it.

With `--encode-memory`, peak memory while a synthetic image set of 5,000 and of 50,000 images is encoded with the
tiny Stable Diffusion's VAE into the on-disk latent cache (`encode_peak_rss_gb`), then while `groups` and 2
`invdiff` steps run on it (each set in its own process); the keys are merged into `--out`.

    .venv/bin/python scripts/bench_scale.py --encode-memory

Arms alternate (A B B A ...) within one process; each ratio is the median over repeats of the two back-to-back
calls' ratio, so the load of the machine cancels; absolute seconds (medians) depend on it. Ratios are the figures
to read; every timing taken is kept under `timings_s`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from count_family_params import CLIP_L, SD15_UNET, VAE_4, recipe  # noqa: E402

# SD 1.5's scheduler config (scheduler/scheduler_config.json): the training noise of both arms.
SD15_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      prediction_type="epsilon")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NUM_GROUPS = 8  # the sd15 CelebA recipe's groups.num_groups
POOL = 64  # samples the InvDiff arm draws its batches from (balanced sampling over their group weights)
PARTS = ("memory", "groups", "sampling", "steps")
TARGETS = {"step_ratio": ("<=", 1.10), "mem_ratio": ("<=", 1.05), "groups_ratio": (">=", 0.90),
           "sampling_overhead_fused": ("<=", 1.02)}


# ------------------------------------------------------------------------------------------------ models
def build_unet(device: str, dtype: torch.dtype, seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**SD15_UNET).to(device, dtype)
    unet.requires_grad_(False)
    return unet


def scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SD15_SCHEDULER)


def encode_inputs(n: int, resolution: int, device: str, dtype: torch.dtype) -> dict[str, Any]:
    """Latents of `n` random images through the SD VAE and prompt states through CLIP ViT-L/14, as invgen caches
    them before training (random weights: the values are noise, the shapes and costs are real)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    vae = AutoencoderKL(**VAE_4).to(device, dtype).eval()
    text = CLIPTextModel(CLIPTextConfig(**CLIP_L)).to(device, dtype).eval()
    images = torch.rand(n, 3, resolution, resolution, device=device, dtype=dtype) * 2 - 1
    ids = torch.randint(0, CLIP_L["vocab_size"], (n, CLIP_L["max_position_embeddings"]), device=device)
    with torch.no_grad():
        t0 = _now(device)
        latents = vae.encode(images).latent_dist.sample() * 0.18215  # SD 1.5's scaling_factor
        t1 = _now(device)
        states = text(ids).last_hidden_state
        t2 = _now(device)
    sizes = {"text_encoder_parameters": _count(text), "vae_parameters": _count(vae)}
    return {"latents": latents.float().cpu(), "states": states.float().cpu(), **sizes,
            "vae_encode_s_per_image": (t1 - t0) / n, "text_encode_s_per_prompt": (t2 - t1) / n}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _now(device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def _pool(tensor: torch.Tensor, n: int) -> torch.Tensor:
    """`n` rows made from the encoded ones (tiled, with a little noise so no two rows are equal)."""
    reps = -(-n // len(tensor))
    tiled = tensor.repeat(reps, *([1] * (tensor.ndim - 1)))[:n]
    return tiled + 0.01 * torch.randn(tiled.shape, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------------------------------ the two arms
class InvDiffArm:
    """One InvDiff min step as invgen/invdiff/train.py takes it (without accelerate's wrapper)."""

    name = "invdiff"

    def __init__(self, unet, inputs: dict[str, Any], rank: int, alpha: float, device: str, checkpointing: bool):
        from invgen.invdiff.adapter import AdapterConfig
        from invgen.invdiff.guidance import InvariantGuidance
        from invgen.train.diffusion import DenoisingObjective

        if checkpointing:
            unet.enable_gradient_checkpointing()
        self.guidance = InvariantGuidance.for_denoiser(unet, AdapterConfig(rank=rank, alpha=alpha))
        self.model, self.params = self.guidance.training_module(unet)
        for p in self.params:
            p.data = p.data.float()  # trainable LoRA tensors in fp32 under a low-precision base, as accelerate does
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-4)
        self.objective = DenoisingObjective("sd", scheduler())
        self.x0 = _pool(inputs["latents"], POOL)
        self.states = _pool(inputs["states"], POOL)
        gen = torch.Generator().manual_seed(2)
        self.weights = torch.softmax(torch.randn(POOL, NUM_GROUPS, generator=gen) * 3, dim=1)
        probs = (self.weights / self.weights.sum(0, keepdim=True)).sum(1)
        self.probs = probs / probs.sum()
        self.gen = torch.Generator().manual_seed(0)
        self.device = device

    def step(self, batch: int) -> float:
        from invgen.invdiff.objective import group_robust_loss
        from invgen.train.conditioning import PROMPT_EMBEDS
        from invgen.train.diffusion import draw_noise

        idx = torch.multinomial(self.probs, batch, replacement=True, generator=self.gen)
        x0 = self.x0[idx].to(self.device)
        levels = self.objective.draw_levels(batch, self.gen, tuple(x0.shape))
        noise = draw_noise(x0.shape, self.gen)
        cond = {PROMPT_EMBEDS: self.states[idx].to(self.device)}
        with _autocast(self.device, self.model.dtype):
            losses = self.objective.per_sample_loss(self.model, x0, cond, levels, noise)
            loss = group_robust_loss(losses, self.weights[idx].to(self.device), lam=1.0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())


class LoraArm:
    """One step of diffusers' examples/text_to_image/train_text_to_image_lora.py on cached latents and states."""

    name = "lora"

    def __init__(self, unet, inputs: dict[str, Any], rank: int, alpha: float, device: str, checkpointing: bool,
                 targets: list[str]):
        from peft import LoraConfig

        self.unet = unet
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=targets))
        if checkpointing:
            unet.enable_gradient_checkpointing()
        self.params = [p for p in unet.parameters() if p.requires_grad]
        for p in self.params:
            p.data = p.data.float()  # the example's cast_training_params(unet, dtype=torch.float32)
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-4)
        self.scheduler = scheduler()
        self.x0 = _pool(inputs["latents"], POOL)
        self.states = _pool(inputs["states"], POOL)
        self.gen = torch.Generator().manual_seed(0)
        self.device = device

    def step(self, batch: int) -> float:
        idx = torch.randint(0, POOL, (batch,), generator=self.gen)
        latents = self.x0[idx].to(self.device)
        noise = torch.randn_like(latents)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (batch,), device=self.device).long()
        noisy = self.scheduler.add_noise(latents, noise, t)
        with _autocast(self.device, self.unet.dtype):
            pred = self.unet(noisy, t, self.states[idx].to(self.device), return_dict=False)[0]
            loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())


def _autocast(device: str, dtype: torch.dtype):
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return torch.autocast(kind, dtype=dtype, enabled=dtype != torch.float32)


def make_arm(name: str, unet, inputs: dict[str, Any], plan: dict[str, Any], device: str, checkpointing: bool):
    if name == "invdiff":
        return InvDiffArm(unet, inputs, plan["rank"], plan["alpha"], device, checkpointing)
    return LoraArm(unet, inputs, plan["rank"], plan["alpha"], device, checkpointing, plan["targets"])


# ------------------------------------------------------------------------------------------------ measuring
RAW: dict[str, dict[str, list[float]]] = {}  # every timing taken, by measurement, for the report


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over repeats of num[r] / den[r]: the two calls of a repeat run back to back, so a change in the
    machine's load between repeats (common on a shared machine) cancels, where a ratio of medians would not."""
    return statistics.median(n / d for n, d in zip(num, den, strict=True))


def alternate(arms: dict[str, Callable[[], Any]], repeats: int, device: str, label: str = "") -> dict[str, float]:
    """Median seconds of each call, the calls alternating A B B A A B ... so drifts in load cancel."""
    times: dict[str, list[float]] = {name: [] for name in arms}
    names = list(arms)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            t0 = _now(device)
            arms[name]()
            times[name].append(_now(device) - t0)
    if label:
        RAW[label] = times
    return {name: statistics.median(ts) for name, ts in times.items()}


def peak_rss_gb() -> float:
    """This process's peak resident memory. Linux keeps `ru_maxrss` across fork and exec, so a child would report
    at least its parent's size; the kernel's high-water mark of the process's own memory (VmHWM) does not."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def memory_arm(args: argparse.Namespace) -> None:
    """(Subprocess) Build the UNet, take `--memory-steps` steps of one arm and print its peak memory as JSON."""
    device, dtype = args.device, DTYPES[args.dtype]
    inputs = torch.load(args.inputs)
    unet = build_unet(device, dtype)
    built = peak_rss_gb()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    arm = make_arm(args.memory_arm, unet, inputs, json.loads(args.plan), device, bool(args.checkpointing))
    for _ in range(args.memory_steps):
        arm.step(args.batch)
    report = {"peak_rss_gb": peak_rss_gb(), "rss_after_build_gb": built}
    if device.startswith("cuda"):
        report["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(report))


def measure_memory(args: argparse.Namespace, inputs_path: str, plan: dict[str, Any], batch: int,
                   steps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for checkpointing in (False, True):
        mode = "checkpointing" if checkpointing else "no_checkpointing"
        for arm in ("lora", "invdiff"):
            cmd = [sys.executable, __file__, "--memory-arm", arm, "--inputs", inputs_path, "--plan", json.dumps(plan),
                   "--batch", str(batch), "--checkpointing", str(int(checkpointing)), "--memory-steps", str(steps),
                   "--device", args.device, "--dtype", args.dtype]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"memory run {arm}/{mode} failed:\n{done.stderr[-2000:]}")
            out.setdefault(mode, {})[arm] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"  memory {mode:16s} {arm:8s} {out[mode][arm]}", flush=True)
    return out


def groups_throughput(unet, inputs: dict[str, Any], n: int, batch: int, repeats: int, device: str) -> dict[str, float]:
    """invgen's per-sample losses (one timestep, one noise draw) against a plain no-grad forward of the same images."""
    from invgen.invdiff.grouper import per_sample_losses
    from invgen.train.diffusion import DenoisingObjective

    objective = DenoisingObjective("sd", scheduler())
    x0, states = _pool(inputs["latents"], n), _pool(inputs["states"], n)
    dtype = unet.dtype

    def groups():
        per_sample_losses(unet, objective, x0.to(dtype), states.to(dtype), [500], 1, batch_size=batch, device=device,
                          progress=False)

    @torch.no_grad()
    def forward():
        for s in range(0, n, batch):
            x = x0[s:s + batch].to(device, dtype)
            t = torch.full((len(x),), 500, device=device, dtype=torch.long)
            unet(objective.scheduler.add_noise(x, torch.randn_like(x), t), t,
                 encoder_hidden_states=states[s:s + batch].to(device, dtype))

    forward()  # warm-up: the first call of a process pays for its kernels' set-up
    seconds = alternate({"groups": groups, "forward": forward}, repeats, device, "groups")
    return {"groups_images_per_s": n / seconds["groups"], "forward_images_per_s": n / seconds["forward"],
            "groups_ratio": paired_ratio(RAW["groups"]["forward"], RAW["groups"]["groups"])}


def sampling_overhead(unet, inputs: dict[str, Any], plan: dict[str, Any], calls: int, repeats: int,
                      device: str) -> dict[str, float]:
    """UNet calls as a sampler makes them (one image, classifier-free guidance batch of 2) with no adapter, with a
    trained-looking adapter folded (`attach(fuse=True)`) and kept live (`fuse=False`)."""
    from invgen.invdiff.adapter import AdapterConfig
    from invgen.invdiff.guidance import InvariantGuidance

    guidance = InvariantGuidance.for_denoiser(unet, AdapterConfig(rank=plan["rank"], alpha=plan["alpha"]))
    model, params = guidance.training_module(unet)
    with torch.no_grad():
        for p in params:  # B starts at zero; a trained adapter's is not (the fold then changes the weights)
            p.normal_(0, 0.01)
    guidance.collect(model, release=True)
    x = inputs["latents"][:1].repeat(2, 1, 1, 1).to(device, unet.dtype)
    states = torch.cat([torch.zeros_like(inputs["states"][:1]), inputs["states"][:1]]).to(device, unet.dtype)

    @torch.no_grad()
    def run(warm: bool = False):
        for k in range(1 if warm else calls):
            t = torch.full((2,), 999 - 40 * k, device=device, dtype=torch.long)
            unet(x, t, encoder_hidden_states=states)

    def warm_then_timed() -> float:
        # The first call after the weights change pays for fresh pages (the fold's temporaries are freed just
        # before), which a sampler's 25-50 calls amortise: every arm makes one untimed call first.
        run(warm=True)
        return _timed(run, device)

    def with_adapter(fuse: bool):
        def call():
            guidance.attach(unet, scale=1.0, fuse=fuse)
            elapsed = warm_then_timed()
            guidance.detach(unet)
            return elapsed
        return call

    # attach/detach are outside the timed region: time the calls inside each arm rather than the whole arm.
    times: dict[str, list[float]] = {"base": [], "fused": [], "unfused": []}
    arms: dict[str, Callable[[], float]] = {"base": warm_then_timed, "fused": with_adapter(True),
                                            "unfused": with_adapter(False)}
    order = list(arms)
    run()  # warm-up: the first call of a process pays for its kernels' set-up
    for r in range(repeats):
        for name in order if r % 2 == 0 else order[::-1]:
            times[name].append(arms[name]())
    RAW["sampling"] = times
    base = statistics.median(times["base"])
    return {"sampling_unet_call_s": base / calls,
            "sampling_overhead_fused": paired_ratio(times["fused"], times["base"]),
            "sampling_overhead_unfused": paired_ratio(times["unfused"], times["base"])}


def _timed(fn: Callable[[], Any], device: str) -> float:
    t0 = _now(device)
    fn()
    return _now(device) - t0


# ------------------------------------------------------------------------------------------------ data set size
ENCODE_SIZE = 16  # pixels: the tiny VAE halves them


def synthetic_set(root: Path, n: int) -> Path:
    """`n` 16-px images (a square of one of two colors on a background), two prompts, a bias attribute."""
    from invgen.data.imagefolder import ImageRecord, write_imagefolder

    rng = np.random.default_rng(n)
    images, records = [], []
    for i in range(n):
        img = np.empty((ENCODE_SIZE, ENCODE_SIZE, 3), np.uint8)
        img[:] = rng.integers(0, 256, 3, dtype=np.uint8)
        y, x = rng.integers(0, ENCODE_SIZE - 6, 2)
        kind = i % 2
        img[y:y + 6, x:x + 6] = (230, 40, 40) if kind else (40, 40, 230)
        images.append(img)
        records.append(ImageRecord(f"{i // 1000:03d}/{i:06d}.png", f"a photo of a {'red' if kind else 'blue'} square",
                                   attributes={"bias_aligned": bool(i % 10)}))
    return write_imagefolder(root / "train", images, records).parent


def encode_memory_run(args: argparse.Namespace) -> None:
    """(Subprocess) Encode `--encode-set` into its latent cache, then groups and 2 InvDiff steps; print peaks."""
    from invgen.config import load_config
    from invgen.data.imagefolder import read_imagefolder
    from invgen.invdiff.config import InvDiffConfig
    from invgen.invdiff.train import infer_groups, train_invdiff
    from invgen.models.loading import load_pipeline
    from invgen.train.latents import cached_latents

    torch.set_num_threads(1)  # tiny models: one thread is as fast, and two spin against each other on a busy machine
    root, work = Path(args.encode_set), Path(args.encode_work)
    base = peak_rss_gb()
    cfg = load_config(InvDiffConfig, "configs/sd15/invdiff_waterbirds.yaml", [
        f"base_model={work / 'tiny-sd'}", f"output_dir={work / 'invdiff'}", f"data.root={root}", "data.builder=null",
        f"data.size={ENCODE_SIZE}", f"data.latent_cache={work / 'cache'}", "data.encode_batch_size=64",
        "data.latents=sample", "groups.num_groups=2", "groups.timesteps=[500]", "groups.noise_draws=1",
        "groups.batch_size=256", "train.steps=2", "train.batch_size=16", "train.mixed_precision='no'",
        "train.gradient_checkpointing=false", "train.checkpoint_every=1000"])
    pipe = load_pipeline(cfg.base_model)
    image_set = read_imagefolder(root / "train", load_images=False)
    t0 = time.perf_counter()
    latents, _, _ = cached_latents(image_set, pipe.vae, ENCODE_SIZE, cfg.data.latent_cache, cfg.data.latents,
                                   cfg.data.seed, cfg.data.encode_batch_size, progress=False)
    encode_s = time.perf_counter() - t0
    encoded = peak_rss_gb()
    del latents, pipe
    infer_groups(cfg)
    grouped = peak_rss_gb()
    train_invdiff(cfg)
    print(json.dumps({"images": len(image_set), "rss_before_gb": base, "encode_peak_rss_gb": encoded,
                      "encode_s": encode_s, "groups_peak_rss_gb": grouped, "invdiff_peak_rss_gb": peak_rss_gb()}))


def measure_encode_memory(sizes: list[int]) -> dict[str, Any]:
    from diffusers import StableDiffusionPipeline

    from invgen.models import tiny_stable_diffusion_components
    from invgen.models.loading import save_pipeline

    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        save_pipeline(StableDiffusionPipeline(**tiny_stable_diffusion_components(seed=0)), Path(tmp) / "tiny-sd")
        for n in sizes:
            t0 = time.perf_counter()
            root = synthetic_set(Path(tmp) / f"set-{n}", n)
            print(f"  {n} images written in {time.perf_counter() - t0:.0f} s", flush=True)
            cmd = [sys.executable, __file__, "--encode-set", str(root), "--encode-work", tmp]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"encode run on {n} images failed:\n{done.stderr[-3000:]}")
            runs[str(n)] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"  {runs[str(n)]}", flush=True)
            shutil.rmtree(Path(tmp) / "cache", ignore_errors=True)
            shutil.rmtree(Path(tmp) / "invdiff", ignore_errors=True)
            shutil.rmtree(root, ignore_errors=True)
    small, large = runs[str(min(sizes))], runs[str(max(sizes))]
    return {"encode_runs": runs,
            "encode_peak_rss_gb": {n: r["encode_peak_rss_gb"] for n, r in runs.items()},
            "encode_rss_ratio": large["encode_peak_rss_gb"] / small["encode_peak_rss_gb"],
            "encode_rss_growth_gb": {n: r["encode_peak_rss_gb"] - r["rss_before_gb"] for n, r in runs.items()},
            "groups_invdiff_rss_ratio": large["invdiff_peak_rss_gb"] / small["invdiff_peak_rss_gb"]}


# ------------------------------------------------------------------------------------------------ main
# glibc hands freed memory back to the OS between two UNet calls, so each call faults in about 2 GB of fresh pages
# (SD 1.5 at 256 px: ~460,000 faults, a fifth of the call's time), and how many depends on what else the process
# holds: a folded adapter's saved weights turned 1.36 s calls into 1.70 s ones with no change to the computation.
# Fixed thresholds keep freed memory in the process, so every arm runs on the same allocator state.
MALLOC_ENV = {"MALLOC_TRIM_THRESHOLD_": str(2**36), "MALLOC_MMAP_THRESHOLD_": str(2**25), "MALLOC_TOP_PAD_": str(2**30)}


def _with_steady_allocator() -> None:
    """Re-run this script with `MALLOC_ENV` set (Linux/glibc), unless it already is."""
    if sys.platform.startswith("linux") and any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})


def main() -> None:
    _with_steady_allocator()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, memory at batch 1 (CPU: ~15 min)")
    parser.add_argument("--out", default="benchmarks/scale.json")
    parser.add_argument("--resolution", type=int, default=256, help="pixels; the VAE downsamples 8x")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                        help="what to measure; with fewer than all, the keys are merged into an existing --out")
    parser.add_argument("--repeats", type=int, help="timed calls per arm (default 2 with --quick, else 6)")
    parser.add_argument("--encode-memory", action="store_true",
                        help="only the data-set-size memory check (5,000 and 50,000 images), merged into --out")
    parser.add_argument("--encode-sizes", type=int, nargs=2, default=[5000, 50000], help=argparse.SUPPRESS)
    parser.add_argument("--encode-set", help=argparse.SUPPRESS)
    parser.add_argument("--encode-work", help=argparse.SUPPRESS)
    # internal: one arm's memory, in its own process
    parser.add_argument("--memory-arm", choices=["invdiff", "lora"], help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--memory-steps", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.memory_arm:
        memory_arm(args)
        return
    if args.encode_set:
        encode_memory_run(args)
        return

    from invgen.atomic import write_json

    if args.encode_memory:
        print("peak memory against the data set's size", flush=True)
        found = Path(args.out)
        report = json.loads(found.read_text()) if found.is_file() else {}
        report.update(_rounded(measure_encode_memory(sorted(args.encode_sizes))))
        report["encode_command"] = " ".join(["python", *sys.argv])
        write_json(args.out, report)
        print(f"encode_rss_ratio {report['encode_rss_ratio']}; wrote {args.out}")
        return
    from invgen.invdiff.adapter import DEFAULT_LORA_TARGETS

    start = time.perf_counter()
    device, dtype = args.device, DTYPES[args.dtype]
    if args.resolution % 64:
        raise SystemExit("--resolution must be a multiple of 64 (the UNet downsamples the 1/8 latents 8x)")
    sd15 = recipe("sd")
    alpha = _recipe_alpha(sd15["path"])
    plan = {"rank": sd15["rank"], "alpha": alpha, "targets": sd15["target_modules"] or DEFAULT_LORA_TARGETS["sd"]}
    batches = sorted(args.batch_sizes)
    repeats = args.repeats or (3 if args.quick else 6)  # per arm and batch size, after one warm-up step each
    print(f"SD 1.5 at {args.resolution} px on {device} ({args.dtype}); LoRA rank {plan['rank']} on {plan['targets']}",
          flush=True)

    inputs = encode_inputs(1 if args.quick else max(batches), args.resolution, device, dtype)
    report: dict[str, Any] = {
        "note": "SD 1.5's published architecture with random weights; seconds depend on the machine's load, "
                "ratios are measured within one run with the arms alternating (see scripts/bench_scale.py)",
        "command": " ".join(["python", *sys.argv]),
        "device": device if device == "cpu" else torch.cuda.get_device_name(),
        "platform": platform.platform(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "dtype": args.dtype, "resolution": args.resolution, "latent_size": args.resolution // 8,
        "batch_sizes": batches, "lora_rank": plan["rank"], "lora_alpha": alpha, "target_modules": plan["targets"],
        "recipe": sd15["path"],
        **{k: inputs[k] for k in ("text_encoder_parameters", "vae_parameters", "vae_encode_s_per_image",
                                  "text_encode_s_per_prompt")},
    }

    found = Path(args.out)
    if set(args.parts) != set(PARTS) and found.is_file():  # a part measured again: keep the others' figures
        report = {**json.loads(found.read_text()), **report, "command": report["command"]}
    report["parts_commands"] = {**report.get("parts_commands", {}),
                                **{part: report["command"] for part in args.parts}}
    report["repeats"] = {**report.get("repeats", {}), **{part: repeats for part in args.parts}}

    if "memory" in args.parts:
        _memory_part(args, inputs, plan, batches, report)
    if {"groups", "sampling", "steps"} & set(args.parts):
        unet = build_unet(device, dtype)
        report["unet_parameters"] = _count(unet)
    if "groups" in args.parts:
        print("groups throughput", flush=True)
        n_groups = 4 if args.quick else 16
        report.update(groups_throughput(unet, inputs, n_groups, batches[-1], repeats, device))
        report["groups_images"] = n_groups
        print(f"  {report['groups_ratio']:.3f}", flush=True)
    if "sampling" in args.parts:
        print("sampling overhead", flush=True)
        report.update(sampling_overhead(unet, inputs, plan, 1 if args.quick else 3, repeats, device))
        print(f"  fused {report['sampling_overhead_fused']:.3f} unfused {report['sampling_overhead_unfused']:.3f}",
              flush=True)
    if "steps" in args.parts:
        _steps_part(unet, inputs, plan, batches, repeats, device, dtype, report)

    report["timings_s"] = {**report.get("timings_s", {}), **RAW}
    report["targets"] = {key: {"limit": f"{op} {limit}", "value": report[key],
                               "met": report[key] <= limit if op == "<=" else report[key] >= limit}
                         for key, (op, limit) in TARGETS.items() if key in report}
    report["wall_s"] = time.perf_counter() - start
    write_json(args.out, _rounded(report))
    print(json.dumps(report["targets"], indent=1))
    print(f"wrote {args.out} in {report['wall_s'] / 60:.1f} min")


def _memory_part(args, inputs, plan, batches, report) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        inputs_path = str(Path(tmp) / "inputs.pt")
        torch.save({"latents": inputs["latents"], "states": inputs["states"]}, inputs_path)
        mem_batch = batches[0] if args.quick else batches[-1]
        print(f"peak memory, each arm in its own process (batch {mem_batch})", flush=True)
        memory = measure_memory(args, inputs_path, plan, mem_batch, 1 if args.quick else 2)
    report["memory_batch_size"] = mem_batch
    for arm in ("invdiff", "lora"):
        report[f"peak_rss_gb_{arm}"] = {mode: m[arm]["peak_rss_gb"] for mode, m in memory.items()}
    report["rss_after_unet_build_gb"] = memory["no_checkpointing"]["lora"]["rss_after_build_gb"]
    report["mem_ratio_by_mode"] = {mode: m["invdiff"]["peak_rss_gb"] / m["lora"]["peak_rss_gb"]
                                   for mode, m in memory.items()}
    report["mem_ratio"] = max(report["mem_ratio_by_mode"].values())
    if args.device.startswith("cuda"):
        for arm in ("invdiff", "lora"):
            report[f"peak_gpu_gb_{arm}"] = {mode: m[arm]["peak_gpu_gb"] for mode, m in memory.items()}


def _steps_part(unet, inputs, plan, batches, repeats, device, dtype, report) -> None:
    print("training steps (no gradient checkpointing)", flush=True)
    arms = {"invdiff": make_arm("invdiff", unet, inputs, plan, device, False),
            "lora": make_arm("lora", build_unet(device, dtype), inputs, plan, device, False)}
    report["lora_parameters"] = sum(p.numel() for p in arms["invdiff"].params)
    assert report["lora_parameters"] == sum(p.numel() for p in arms["lora"].params), "the arms train different LoRAs"
    report["invdiff_step_s"], report["lora_step_s"], report["step_ratio_by_batch"] = {}, {}, {}
    for b in batches:
        # Warm-up at each batch size: a process's first step of a new shape pays for its allocations.
        alternate({name: (lambda a=arm, b=b: a.step(b)) for name, arm in arms.items()}, 1, device)
        seconds = alternate({name: (lambda a=arm, b=b: a.step(b)) for name, arm in arms.items()}, repeats, device,
                            f"steps_batch_{b}")
        report["invdiff_step_s"][str(b)] = seconds["invdiff"]
        report["lora_step_s"][str(b)] = seconds["lora"]
        raw = RAW[f"steps_batch_{b}"]
        report["step_ratio_by_batch"][str(b)] = paired_ratio(raw["invdiff"], raw["lora"])
        print(f"  batch {b}: invdiff {seconds['invdiff']:.2f} s, lora {seconds['lora']:.2f} s", flush=True)
    report["step_ratio"] = max(report["step_ratio_by_batch"].values())


def _recipe_alpha(path: str) -> float:
    import yaml

    return float(yaml.safe_load(Path(path).read_text()).get("adapter", {}).get("alpha", 4.0))


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


if __name__ == "__main__":
    main()
