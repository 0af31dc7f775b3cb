"""InvDiff on colored digits: base vs inferred groups vs oracle groups, adapter size and sampling cost.

    python scripts/bench_invdiff.py [--quick] [--base runs/demo/base] [--out benchmarks/invdiff.json]

The base model is `--base`, else the demo's (runs/demo/base) when `make demo` has made it, else one trained
here (2,000 steps; 1,200 with --quick). `--quick` trains the adapters for 200 steps and samples 20 images per
prompt: 7.9 min here on the demo's base model.

Writes {"base"|"invdiff"|"oracle": {"bias_score", "fidelity"}, "adapter_param_fraction",
"sampling_overhead" (default attach, LoRA folded), "sampling_overhead_unfused", "group_agreement", ...}.
Timings are ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from invgen.atomic import write_json
from invgen.config import load_config
from invgen.data.digits import digit_prompt
from invgen.invdiff.guidance import InvariantGuidance
from invgen.invdiff.train import GROUPS_REPORT, GROUPS_WEIGHTS, InvDiffConfig, infer_groups, train_invdiff
from invgen.metrics.digits import digit_figures
from invgen.models.digit_cnn import load_or_train_digit_cnn
from invgen.models.loading import load_pipeline
from invgen.sampling import generate, image_seed
from invgen.train.base import BaseConfig, pipeline_complete, train_base


def _timed(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer steps and samples (under 10 minutes here)")
    ap.add_argument("--work", default="runs/bench_invdiff", help="run folder")
    ap.add_argument("--base", default=None,
                    help="reuse a trained base pipeline (default: runs/demo/base when `make demo` has made it)")
    ap.add_argument("--per-prompt", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/invdiff.json")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (1 is faster on a loaded machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    per_prompt = args.per_prompt or (20 if args.quick else 50)
    data = [f"data.root={work / 'data'}"]
    demo_base = Path("runs/demo/base")
    base_dir = Path(args.base) if args.base else demo_base if pipeline_complete(demo_base) else work / "base"
    t_start = time.time()
    if not pipeline_complete(base_dir):
        base_cfg = load_config(BaseConfig, "configs/digits/base.yaml",
                               data + [f"output_dir={base_dir}"] + (["train.steps=1200"] if args.quick else []))
        train_base(base_cfg, resume=True)

    steps = ["train.steps=200"] if args.quick else []
    runs = {"invdiff": ["groups.source=inferred"], "oracle": ["groups.source=oracle"]}
    dirs = {}
    for name, over in runs.items():
        cfg = load_config(InvDiffConfig, "configs/digits/invdiff.yaml",
                          data + steps + over + [f"base_model={base_dir}", f"output_dir={work / name}"])
        dirs[name] = Path(cfg.output_dir)
        if not (dirs[name] / GROUPS_WEIGHTS).is_file():
            infer_groups(cfg)
        if not (dirs[name] / "invgen_guidance.json").is_file():
            train_invdiff(cfg, resume=True)

    cnn = load_or_train_digit_cnn(work / "cache" / "digit_cnn")
    pipe = load_pipeline(base_dir)
    labels = [d for d in range(10) for _ in range(per_prompt)]
    prompts = [digit_prompt(d) for d in labels]
    seeds = [image_seed(0, i) for i in range(len(prompts))]
    result: dict = {"per_prompt": per_prompt, "quick": args.quick}
    result["base"] = {k: digit_figures(generate(pipe, prompts, seeds), prompts, labels, cnn)[k]
                      for k in ("bias_score", "fidelity")}
    for name, d in dirs.items():
        g = InvariantGuidance.from_pretrained(d)
        g.attach(pipe, scale=1.0)
        figs = digit_figures(generate(pipe, prompts, seeds), prompts, labels, cnn)
        g.detach(pipe)
        result[name] = {k: figs[k] for k in ("bias_score", "fidelity")}

    g = InvariantGuidance.from_pretrained(dirs["invdiff"])
    unet_params = sum(p.numel() for p in pipe.unet.parameters())
    result["adapter_kind"] = g.adapter.kind
    result["adapter_parameters"] = g.num_parameters()
    result["unet_parameters"] = unet_params
    result["adapter_param_fraction"] = g.num_parameters() / unet_params

    # Sampling cost: same prompts and seeds, best of 3, base vs attached vs fused, in one run.
    tp, ts = prompts[:: max(1, len(prompts) // 100)][:100], seeds[:100]

    def sample():
        generate(pipe, tp, ts, progress=False)

    t_base = _timed(sample)
    g.attach(pipe, scale=1.0)  # the default: a LoRA is folded into the weights
    t_attached = _timed(sample)
    g.detach(pipe)
    result["sampling_overhead"] = t_attached / t_base
    if g.adapter.kind == "lora":
        g.attach(pipe, scale=1.0, fuse=False)  # peft's LoRA layers left in place
        result["sampling_overhead_unfused"] = _timed(sample) / t_base
        g.detach(pipe)

    groups = json.loads((dirs["invdiff"] / GROUPS_REPORT).read_text())
    result["group_agreement"] = groups.get("group_agreement")
    result["group_loss_auc"] = groups.get("loss_auc")
    result["group_sizes"] = groups.get("group_sizes")
    red_inv = result["base"]["bias_score"] - result["invdiff"]["bias_score"]
    red_orc = result["base"]["bias_score"] - result["oracle"]["bias_score"]
    result["inferred_vs_oracle_reduction"] = red_inv / red_orc if red_orc > 0 else None
    result["seconds"] = round(time.time() - t_start, 1)
    result["machine"] = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
