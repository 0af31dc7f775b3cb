"""GenView on colored digits: linear-probe accuracy of a self-supervised encoder trained with standard
augmentations vs with GenView views (NT-Xent, then the quality-driven loss), 3 seeds each.

    python scripts/bench_views.py [--quick] [--base runs/demo/base] [--out benchmarks/views.json]

The generative model is the trained 16-px digits base model (trained here briefly if absent). Views are
generated once (K per training image) and cached under WORK/cache, so reruns skip generation. The probe
is a logistic regression on frozen features, trained on the (biased) training split and tested on the
test split where every digit appears in every color; "conflicting" is the accuracy on test images whose
color is not their digit's majority color.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from invgen.atomic import write_json
from invgen.benchmarks.digits.data import make_colored_digits
from invgen.config import load_config
from invgen.data.imagefolder import read_imagefolder
from invgen.models.loading import load_pipeline
from invgen.train.base import BaseConfig, pipeline_complete, train_base
from invgen.views.genview import GenViewGenerator
from invgen.views.train import SSLConfig, linear_probe, train_ssl

ARMS = {
    "augment + NT-Xent": {"views": "augment", "loss": "ntxent"},
    "GenView + NT-Xent": {"views": "genview", "loss": "ntxent"},
    "GenView + quality-driven": {"views": "genview", "loss": "quality_driven"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer images, views and steps (a few minutes)")
    ap.add_argument("--work", default="runs/bench_views", help="run folder (data, view cache, encoders)")
    ap.add_argument("--base", default="runs/demo/base", help="trained digits base pipeline")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=None, help="SSL steps per run (default 250, quick 40)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 is fastest for these tiny models, above all on a shared machine)")
    ap.add_argument("--noise-levels", default="0.2:1.0", help="GenView strength range LO:HI")
    ap.add_argument("--out", default="benchmarks/views.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.time()
    work = Path(args.work)
    data = make_colored_digits(work / "data", p_align=0.95, size=16)
    train, test = read_imagefolder(data / "train"), read_imagefolder(data / "test")
    train_x, train_y = train.tensor(), torch.as_tensor(train.labels)
    test_x, test_y = test.tensor(), torch.as_tensor(test.labels)
    conflicting = torch.tensor([not a for a in test.attribute("bias_aligned")])
    n_views = 1 if args.quick else 2
    if args.quick:
        train_x, train_y = train_x[:512], train_y[:512]
    steps = args.steps or (40 if args.quick else 250)

    base_dir = Path(args.base)
    if not pipeline_complete(base_dir):
        base_dir = work / "base"
        overrides = [f"data.root={work / 'data'}", f"output_dir={base_dir}"]
        base_cfg = load_config(BaseConfig, "configs/digits/base.yaml",
                               overrides + (["train.steps=600"] if args.quick else ["train.steps=1500"]))
        train_base(base_cfg, resume=True)
    pipe = load_pipeline(base_dir)

    from invgen.views.cli import parse_noise_levels

    levels = parse_noise_levels(args.noise_levels)
    gen = GenViewGenerator(pipe, noise_levels=levels, num_inference_steps=10, batch_size=256,
                           cache_dir=work / "cache", progress=True)
    t0 = time.time()
    views, used_levels = [], []
    for k in range(n_views):
        res = gen.generate(train_x, generator=torch.Generator().manual_seed(1000 + k))
        views.append(res.views)
        used_levels += res.noise_levels
    generated = torch.stack(views, dim=1)  # (N, K, 3, H, W)
    t_views = time.time() - t0

    results: dict[str, dict] = {}
    for name, arm in ARMS.items():
        runs = []
        for seed in range(args.seeds):
            cfg = SSLConfig(output_dir=str(work / "ssl" / f"{arm['views']}_{arm['loss']}_s{seed}"), **arm)
            cfg.train.steps, cfg.train.seed = steps, seed
            t0 = time.time()
            # resume: a rerun into the same --work folder continues (or reuses) each arm's run
            model = train_ssl(cfg, train_x, generated if arm["views"] == "genview" else None, resume=True)
            acc, correct = linear_probe(model.encoder, train_x, train_y, test_x, test_y, seed=seed)
            runs.append({"seed": seed, "accuracy": acc,
                         "conflicting_accuracy": float(correct[conflicting].float().mean()),
                         "train_seconds": round(time.time() - t0, 1)})
            print(f"{name} seed {seed}: probe accuracy {acc:.3f}")
        results[name] = {**arm, "runs": runs, **_summary(runs)}

    from invgen.models.encoders import build_encoder

    torch.manual_seed(0)
    acc, correct = linear_probe(build_encoder("small_resnet"), train_x, train_y, test_x, test_y)
    reference = {"accuracy": acc, "conflicting_accuracy": float(correct[conflicting].float().mean())}
    report = {
        "setting": {
            "data": "colored digits, 16 px, two colors, p_align 0.95", "train_images": len(train_x),
            "test_images": len(test_x), "views_per_image": n_views, "noise_levels": args.noise_levels,
            "mean_noise_level": round(statistics.mean(used_levels), 4), "ssl_steps": steps,
            "batch_size": SSLConfig().train.batch_size, "seeds": args.seeds, "encoder": "small_resnet",
            "base": str(base_dir), "quick": args.quick,
        },
        "results": results,
        "random_init_encoder": reference,
        "view_generation_seconds": round(t_views, 1),
        "view_cache": {"hits": gen.hits, "misses": gen.misses},
        "total_seconds": round(time.time() - t_start, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s)",
    }
    write_json(args.out, report)
    print("\n| arm | probe accuracy | bias-conflicting accuracy |\n|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f} | "
              f"{r['conflicting_mean']:.3f} ± {r['conflicting_std']:.3f} |")
    print(f"| random-init encoder | {reference['accuracy']:.3f} | {reference['conflicting_accuracy']:.3f} |")
    print(f"wrote {args.out} in {report['total_seconds']:.0f} s")


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _summary(runs: list[dict]) -> dict:
    acc = [r["accuracy"] for r in runs]
    con = [r["conflicting_accuracy"] for r in runs]
    return {"accuracy_mean": statistics.mean(acc), "accuracy_std": _sd(acc),
            "conflicting_mean": statistics.mean(con), "conflicting_std": _sd(con)}


if __name__ == "__main__":
    main()
