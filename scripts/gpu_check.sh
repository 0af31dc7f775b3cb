#!/usr/bin/env bash
# Two checks on a CUDA machine, offline, in under 8 minutes:
#
# 1. Real scale: scripts/bench_scale.py at 512 px in bf16 (PyTorch's SDPA attention, diffusers' default): SD 1.5's
#    UNet at its true size (random weights), one InvDiff step against one plain diffusers LoRA step, with peak
#    GPU memory of each; prints it/s and GiB for both and writes $OUT/scale_gpu.json.
# 2. The sd15 InvDiff recipe end to end on a tiny Stable Diffusion (with VAE) saved to a local folder and a
#    generated colored-digits set: base fine-tune -> groups -> adapter -> sampling -> metrics through
#    configs/sd15/invdiff_waterbirds.yaml (fp16, gradient checkpointing); steps/s and peak GPU memory of each
#    trainer and the sampling overhead of the attached adapter, in $OUT/gpu_check.json.
#
#   scripts/gpu_check.sh                 # CUDA: both checks, 300 steps per trainer
#   scripts/gpu_check.sh --cpu           # smoke check without a GPU: 64 px, one repeat, 5 steps, fp32
#   scripts/gpu_check.sh --steps 100     # other step counts for check 2
#   scripts/gpu_check.sh --skip-scale    # check 2 only
#
# Writes into $OUT when set (else runs/gpu_check/).
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda
STEPS=300
SCALE=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cpu) DEVICE=cpu; STEPS=5; shift ;;
    --steps) STEPS="$2"; shift 2 ;;
    --skip-scale) SCALE=0; shift ;;
    *) echo "usage: $0 [--cpu] [--steps N] [--skip-scale]" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-.venv/bin/python}
[[ -x "$PY" ]] || PY=python
WORK=${WORK:-runs/gpu_check}
REPORT_DIR=${OUT:-$WORK}
REPORT=$REPORT_DIR/gpu_check.json
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
[[ $DEVICE == cpu ]] && export CUDA_VISIBLE_DEVICES=""
rm -rf "$WORK"
mkdir -p "$WORK" "$REPORT_DIR"

if [[ $SCALE == 1 ]]; then
  if [[ $DEVICE == cuda ]]; then
    "$PY" scripts/bench_scale.py --resolution 512 --device cuda --dtype bf16 --out "$REPORT_DIR/scale_gpu.json"
  else
    "$PY" scripts/bench_scale.py --resolution 64 --quick --parts memory steps --batch-sizes 1 --repeats 1 \
      --out "$REPORT_DIR/scale_gpu.json"
  fi
  "$PY" - "$REPORT_DIR/scale_gpu.json" <<'EOF'
import json
import sys

r = json.load(open(sys.argv[1]))
print(f"SD 1.5 UNet at {r['resolution']} px, {r['dtype']} on {r['device']}")
for b, s in r["invdiff_step_s"].items():
    lora = r["lora_step_s"][b]
    print(f"  batch {b}: invdiff {1 / s:.2f} it/s, plain LoRA {1 / lora:.2f} it/s (ratio {r['step_ratio_by_batch'][b]})")
for arm in ("invdiff", "lora"):
    gpu = r.get(f"peak_gpu_gb_{arm}")
    if gpu:
        print(f"  peak GPU memory {arm}: " + ", ".join(f"{mode} {gb:.2f} GiB" for mode, gb in gpu.items()))
EOF
fi

exec "$PY" - "$DEVICE" "$STEPS" "$WORK" "$REPORT" <<'EOF'
import json
import sys
import time
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from invgen.atomic import write_json
from invgen.config import load_config
from invgen.invdiff.evaluate import evaluate_invdiff
from invgen.invdiff.guidance import InvariantGuidance
from invgen.invdiff.train import InvDiffConfig, infer_groups, train_invdiff
from invgen.models import tiny_stable_diffusion_components
from invgen.models.loading import load_pipeline, save_pipeline
from invgen.sampling import generate
from invgen.train.base import BaseConfig, train_base

device, steps, work, report_path = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
cuda = device == "cuda"
if cuda and not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device visible (use --cpu for a smoke check)")
precision = "fp16" if cuda else "'no'"
size = 64  # pixels; the tiny VAE halves it: 32x32 latents
report = {"device": torch.cuda.get_device_name() if cuda else "cpu", "steps": steps, "resolution": size,
          "torch": torch.__version__}


def stage(name, fn):
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    report[name] = {"seconds": round(time.perf_counter() - t0, 2)}
    if cuda:
        report[name]["peak_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def steps_per_s(folder):
    log = [json.loads(line) for line in (Path(folder) / "train_log.jsonl").read_text().splitlines()]
    return round(log[-1]["step"] / log[-1]["time"], 2)


save_pipeline(StableDiffusionPipeline(**tiny_stable_diffusion_components(seed=0)), work / "tiny-sd")
common = [f"data.root={work / 'data'}", "data.builder=colored_digits", f"data.size={size}",
          f"data.latent_cache={work / 'cache'}", f"train.steps={steps}", "train.batch_size=64",
          "train.learning_rate=0.001", f"train.warmup_steps={min(50, steps // 5)}",
          f"train.mixed_precision={precision}", f"train.checkpoint_every={max(steps, 1)}"]
base_cfg = load_config(BaseConfig, "configs/sd15/base_waterbirds.yaml",
                       common + [f"pretrained={work / 'tiny-sd'}", f"output_dir={work / 'base'}"])
stage("base", lambda: train_base(base_cfg))
report["base"]["steps_per_s"] = steps_per_s(work / "base")

cfg = load_config(InvDiffConfig, "configs/sd15/invdiff_waterbirds.yaml", common + [
    f"base_model={work / 'base'}", f"output_dir={work / 'invdiff'}", "groups.num_groups=2",
    "groups.batch_size=256", *([] if cuda else ["groups.timesteps=[500]", "groups.noise_draws=1"]),
    "evaluation.classifier=oracle:color", "evaluation.attribute=color", "evaluation.per_prompt=8",
    "evaluation.prompts=[a photo of the digit 3, a photo of the digit 5]", f"evaluation.resolution={size}",
    "evaluation.num_inference_steps=25", "evaluation.guidance_scale=2.0", "evaluation.batch_size=16",
])
stage("groups", lambda: infer_groups(cfg))
report["groups"].update(json.loads((work / "invdiff" / "groups.json").read_text()))
stage("invdiff", lambda: train_invdiff(cfg))
report["invdiff"]["steps_per_s"] = steps_per_s(work / "invdiff")
stage("evaluate", lambda: evaluate_invdiff(cfg))
evaluation = json.loads((work / "invdiff" / "evaluation.json").read_text())
report["evaluate"].update({k: evaluation[k] for k in ("bias_score", "mean_abs_pixel_change")})

# Sampling overhead, timed after a warm-up: base, LoRA folded into the weights (the default), LoRA layers kept.
pipe = load_pipeline(work / "base").to(device)
pipe.set_progress_bar_config(disable=True)
guidance = InvariantGuidance.from_pretrained(work / "invdiff")
prompts, seeds = ["a photo of the digit 3"] * 32, list(range(32))
kw = dict(num_inference_steps=25, guidance_scale=2.0, height=size, width=size, batch_size=32, progress=False)


def timed():
    generate(pipe, prompts[:4], seeds[:4], **{**kw, "batch_size": 4})  # warm-up
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    generate(pipe, prompts, seeds, **kw)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


t_base = timed()
guidance.attach(pipe, scale=1.0)
t_fused = timed()
guidance.detach(pipe)
guidance.attach(pipe, scale=1.0, fuse=False)
t_layers = timed()
guidance.detach(pipe)
report["sampling"] = {"images": len(prompts), "base_s": round(t_base, 3),
                      "overhead_fused": round(t_fused / t_base, 3), "overhead_unfused": round(t_layers / t_base, 3)}
write_json(report_path, report)
print(json.dumps(report, indent=2))
print(f"gpu_check: wrote {report_path}")
EOF
