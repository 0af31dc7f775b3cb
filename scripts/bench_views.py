"""GenView on colored digits: linear-probe accuracy of a self-supervised encoder trained with standard
augmentations vs with GenView views (GenView's own noise-level rule), under NT-Xent, GenView's
quality-driven loss and CustomContrast's multilevel (multiscale appearance) loss, 3 seeds each.

    python scripts/bench_views.py [--quick] [--base runs/demo/base] [--out benchmarks/views.json]

The generative model is the trained 16-px digits base model (trained here briefly if absent). GenView's rule
as its paper runs it: the foreground proportion p picks level 0/100/200/300/400 for p in [0, .2], (.2, .4],
..., (.8, 1]; read here as SDEdit strengths level / 1000 (0 = the image itself), 20 sampling steps,
guidance 10 (under the empty prompt it changes nothing: checked and recorded), one view per image. Views
are generated once and cached under WORK/cache, so reruns skip generation.

Per noise level the generated views are read back: the share whose digit the digit CNN still reads as the
source's label, and the share whose color (the exact pixel oracle) differs from the source's. The probe is
a logistic regression on frozen features, trained on the (biased) training split and tested on the test
split where every digit appears in every color; "conflicting" is the accuracy on test images whose color
is not their digit's majority color.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from invgen.atomic import write_json
from invgen.benchmarks.digits.cnn import load_or_train_digit_cnn
from invgen.benchmarks.digits.data import make_colored_digits
from invgen.benchmarks.digits.oracle import ColorOracle
from invgen.config import load_config
from invgen.data.imagefolder import read_imagefolder
from invgen.models.loading import load_pipeline
from invgen.pixels import to_uint8
from invgen.train.base import BaseConfig, pipeline_complete, train_base
from invgen.views.cli import parse_noise_levels
from invgen.views.genview import GenViewGenerator
from invgen.views.train import SSLConfig, linear_probe, train_ssl

ARMS = {
    "augment + NT-Xent": {"views": "augment", "loss": "ntxent"},
    "GenView (faithful rule) + NT-Xent": {"views": "genview", "loss": "ntxent"},
    "GenView (faithful rule) + quality-driven": {"views": "genview", "loss": "quality_driven"},
    "augment + multilevel": {"views": "augment", "loss": "multilevel"},
    "GenView (faithful rule) + multilevel": {"views": "genview", "loss": "multilevel"},
}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer images and steps, one seed (a few minutes)")
    ap.add_argument("--work", default="runs/bench_views", help="run folder (data, view cache, encoders)")
    ap.add_argument("--base", default="runs/demo/base", help="trained digits base pipeline")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per arm (default 3, quick 1)")
    ap.add_argument("--steps", type=int, default=None, help="SSL steps per run (default 250, quick 40)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 is fastest for these tiny models, above all on a shared machine)")
    ap.add_argument("--noise-levels", default="0,0.1,0.2,0.3,0.4",
                    help="GenView strengths, one per right-closed proportion bin (or a LO:HI range)")
    ap.add_argument("--gen-steps", type=int, default=20, help="sampling steps per view (GenView: 20)")
    ap.add_argument("--guidance", type=float, default=10.0, help="guidance scale (GenView: 10)")
    ap.add_argument("--views-per-image", type=int, default=1, help="generated views per image (GenView: 1)")
    ap.add_argument("--out", default="benchmarks/views.json")
    return ap.parse_args()


def base_pipeline(base: str, work: Path, quick: bool):
    base_dir = Path(base)
    if not pipeline_complete(base_dir):
        base_dir = work / "base"
        overrides = [f"data.root={work / 'data'}", f"output_dir={base_dir}"]
        base_cfg = load_config(BaseConfig, "configs/digits/base.yaml",
                               overrides + (["train.steps=600"] if quick else ["train.steps=1500"]))
        train_base(base_cfg, resume=True)
    return load_pipeline(base_dir), base_dir


def guidance_check(pipe, images: torch.Tensor, levels, steps: int, guidance: float) -> dict:
    """Views of the same images and seeds with guidance 1 and `guidance`, under the empty prompt: the largest
    8-bit pixel difference between the two (0 = guidance changes nothing)."""
    views = [GenViewGenerator(pipe, noise_levels=levels, num_inference_steps=steps, guidance_scale=g)
             .generate(images, generator=torch.Generator().manual_seed(7)) for g in (1.0, guidance)]
    a, b = (to_uint8(v.views).astype(np.int16) for v in views)
    generated = sum(v > 0 for v in views[0].noise_levels)
    return {"images": len(images), "generated": generated, "guidance": [1.0, guidance],
            "max_pixel_difference_8bit": int(np.abs(a - b).max()), "identical": bool((a == b).all())}


def bins_of(levels) -> list[str]:
    if isinstance(levels, tuple):
        return []
    k = len(levels)
    return [f"{'[' if i == 0 else '('}{i / k:g}, {(i + 1) / k:g}]" for i in range(k)]


def views_by_level(sources: torch.Tensor, labels: torch.Tensor, views: torch.Tensor, levels: list[float],
                   cnn, oracle: ColorOracle) -> list[dict]:
    """Per noise level: how many views, the share whose digit the CNN reads as the source's label, the
    share whose color the oracle reads as another than the source's, and the mean absolute pixel change."""
    src, out = to_uint8(sources), to_uint8(views)
    digit = cnn.predict(out)
    color_src, color_out = oracle(src), oracle(out)
    change = np.abs(src.astype(np.int16) - out.astype(np.int16)).reshape(len(src), -1).mean(1) / 255
    lv, readable = np.asarray(levels), color_out >= 0
    rows = []
    for level in sorted(set(levels)):
        m = lv == level
        rows.append({"level": level, "views": int(m.sum()),
                     "digit_kept": round(float((digit[m] == labels.numpy()[m]).mean()), 4),
                     "color_changed": round(float(((color_out[m] != color_src[m]) & readable[m]).mean()), 4),
                     "color_unreadable": round(float((color_out[m] < 0).mean()), 4),
                     "mean_pixel_change": round(float(change[m].mean()), 4)})
    return rows


def run_arms(work: Path, data: dict, generated: torch.Tensor, rule_tag: str, seeds: int, steps: int) -> dict:
    train_x, train_y, test_x, test_y, conflicting = (data[k] for k in ("train_x", "train_y", "test_x", "test_y",
                                                                       "conflicting"))
    results: dict[str, dict] = {}
    for name, arm in ARMS.items():
        runs = []
        tag = f"_{rule_tag}" if arm["views"] == "genview" else ""
        for seed in range(seeds):
            cfg = SSLConfig(output_dir=str(work / "ssl" / f"{arm['views']}_{arm['loss']}{tag}_s{seed}"), **arm)
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
    return results


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.time()
    work = Path(args.work)
    root = make_colored_digits(work / "data", p_align=0.95, size=16)
    train, test = read_imagefolder(root / "train"), read_imagefolder(root / "test")
    data = {"train_x": train.tensor(), "train_y": torch.as_tensor(train.labels), "test_x": test.tensor(),
            "test_y": torch.as_tensor(test.labels),
            "conflicting": torch.tensor([not a for a in test.attribute("bias_aligned")])}
    if args.quick:
        data["train_x"], data["train_y"] = data["train_x"][:512], data["train_y"][:512]
    steps, seeds = args.steps or (40 if args.quick else 250), args.seeds or (1 if args.quick else 3)
    pipe, base_dir = base_pipeline(args.base, work, args.quick)
    levels = parse_noise_levels(args.noise_levels)

    gen = GenViewGenerator(pipe, noise_levels=levels, num_inference_steps=args.gen_steps,
                           guidance_scale=args.guidance, batch_size=256, cache_dir=work / "cache", progress=True)
    t0 = time.time()
    k = args.views_per_image
    results = [gen.generate(data["train_x"], generator=torch.Generator().manual_seed(1000 + i)) for i in range(k)]
    generated = torch.stack([r.views for r in results], dim=1)  # (N, K, 3, H, W)
    t_views = time.time() - t0
    per_image = results[0].noise_levels  # a level depends on the image only, not on the view's seed
    used = [v for v in per_image for _ in range(k)]  # image-major, as generated.flatten(0, 1)
    proportions = results[0].proportions

    cnn = load_or_train_digit_cnn(work / "digit_cnn")
    evidence = views_by_level(data["train_x"].repeat_interleave(k, 0), data["train_y"].repeat_interleave(k),
                              generated.flatten(0, 1), used, cnn, ColorOracle("two"))
    check = guidance_check(pipe, data["train_x"][:32], levels, args.gen_steps, args.guidance)
    rule_tag = hashlib.sha256(f"{gen.fingerprint}|{gen.noise_levels}|{k}".encode()).hexdigest()[:8]
    arms = run_arms(work, data, generated, rule_tag, seeds, steps)

    from invgen.models.encoders import build_encoder

    torch.manual_seed(0)
    acc, correct = linear_probe(build_encoder("small_resnet"), data["train_x"], data["train_y"], data["test_x"],
                                data["test_y"])
    reference = {"accuracy": acc, "conflicting_accuracy": float(correct[data["conflicting"]].float().mean())}
    setting = {
        "data": "colored digits, 16 px, two colors, p_align 0.95", "train_images": len(data["train_x"]),
        "test_images": len(data["test_x"]), "views_per_image": k,
        "noise_levels": list(gen.noise_levels), "noise_level_bins": bins_of(gen.noise_levels),
        "views_per_bin": None if isinstance(levels, tuple) else [used.count(v) for v in gen.noise_levels],
        "noise_scale": "SDEdit strength (GenView's unCLIP levels 0..400 over 1000)",
        "mean_noise_level": round(statistics.mean(used), 4),
        "mean_foreground_proportion": round(statistics.mean(proportions), 4),
        "gen_steps": args.gen_steps, "guidance_scale": args.guidance, "prompt": "",
        "ssl_steps": steps, "batch_size": SSLConfig().train.batch_size, "seeds": seeds, "encoder": "small_resnet",
        "base": str(base_dir), "quick": args.quick,
    }
    report = {
        "setting": setting, "results": arms, "random_init_encoder": reference, "views_by_level": evidence,
        "guidance_check": check, "view_generation_seconds": round(t_views, 1),
        "view_cache": {"hits": gen.hits, "misses": gen.misses}, "total_seconds": round(time.time() - t_start, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s)",
    }
    write_json(args.out, report)
    print_tables(report)
    print(f"wrote {args.out} in {report['total_seconds']:.0f} s")


def print_tables(report: dict) -> None:
    print("\n| arm | probe accuracy | bias-conflicting accuracy |\n|---|---|---|")
    for name, r in report["results"].items():
        print(f"| {name} | {r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f} | "
              f"{r['conflicting_mean']:.3f} ± {r['conflicting_std']:.3f} |")
    ref = report["random_init_encoder"]
    print(f"| random-init encoder (reference) | {ref['accuracy']:.3f} | {ref['conflicting_accuracy']:.3f} |")
    print("\n| strength | views | digit kept (CNN) | color changed (oracle) | mean pixel change |")
    print("|---|---|---|---|---|")
    for row in report["views_by_level"]:
        print(f"| {row['level']:g} | {row['views']} | {row['digit_kept']:.3f} | {row['color_changed']:.3f} | "
              f"{row['mean_pixel_change']:.3f} |")
    print(f"guidance check: {report['guidance_check']}")


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _summary(runs: list[dict]) -> dict:
    acc = [r["accuracy"] for r in runs]
    con = [r["conflicting_accuracy"] for r in runs]
    return {"accuracy_mean": statistics.mean(acc), "accuracy_std": _sd(acc),
            "conflicting_mean": statistics.mean(con), "conflicting_std": _sd(con)}


if __name__ == "__main__":
    main()
