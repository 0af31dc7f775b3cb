"""Time the analysis part of `invgen audit` on N digits images and write benchmarks/audit.json.

    .venv/bin/python scripts/bench_audit.py --out benchmarks/audit.json     # 500 images, 1,000 resamples

Sampling is excluded: the images (the colored digits at 16 px, 50 per prompt, the digits suite's prompts) are
written as an audit folder's `images/` first, untimed. What is timed is `finish_audit` with the digits suite's
protocol (`--attribute color --classifier oracle:color --detector none`): reading the images, classifying,
the figures with bootstrap intervals, report.json, per_prompt.csv, predictions.jsonl, report.md, the plot and
the labelled grids; best of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from invgen.audit.classify import analyze, load_models  # noqa: E402
from invgen.audit.folder import IMAGES, claim_folder  # noqa: E402
from invgen.audit.plan import AuditRequest, plan_audit  # noqa: E402
from invgen.audit.run import finish_audit  # noqa: E402
from invgen.benchmarks.digits.data import build_splits  # noqa: E402
from invgen.data.imagefolder import ImageRecord, write_imagefolder  # noqa: E402


def build_audit(out: Path, plan, size: int) -> None:
    """An audit folder whose images are colored digits, per_prompt of each suite prompt, in suite order."""
    splits = build_splits(size=size, palette_name="two")
    images = np.concatenate([splits["train"].images, splits["test"].images])
    prompts = [r.prompt for r in splits["train"].records + splits["test"].records]
    chosen, records = [], []
    for prompt in plan.prompts:
        index = [i for i, p in enumerate(prompts) if p == prompt][: plan.per_prompt]
        for i in index:
            records.append(ImageRecord(f"{len(records):06d}.png", prompt, extra={"seed": len(records)}))
            chosen.append(images[i])
    claim_folder(out, plan.sampling("colored digits (not sampled)"))
    write_imagefolder(out / IMAGES, chosen, records)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="images (a multiple of the 10 prompts)")
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "audit.json")
    args = ap.parse_args()

    request = AuditRequest("digits", "color", classifier="oracle:color", detector="none", per_prompt=args.n // 10,
                           n_boot=args.bootstrap)
    plan = plan_audit(request)
    with tempfile.TemporaryDirectory(prefix="bench_audit_") as tmp:
        folder = Path(tmp) / "audit"
        t0 = time.perf_counter()
        build_audit(folder, plan, args.size)
        build_s = time.perf_counter() - t0
        runs = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            report = finish_audit(folder, plan, progress=False)
            runs.append(time.perf_counter() - t)
        t = time.perf_counter()
        analyze(folder / IMAGES, plan, load_models(plan), progress=False)
        read_classify_s = time.perf_counter() - t
    seconds = min(runs)
    result = {
        "n_images": report["n_images"],
        "n_prompts": report["n_prompts"],
        "image_size": args.size,
        "protocol": "--suite digits --attribute color --classifier oracle:color --detector none",
        "bootstrap": args.bootstrap,
        "seconds": round(seconds, 3),
        "images_per_second": round(report["n_images"] / seconds, 1),
        "read_and_classify_s": round(read_classify_s, 3),
        "all_runs_s": [round(r, 3) for r in runs],
        "target_s": 30.0,
        "bias_score": round(report["bias_score"], 4),
        "build_set_s": round(build_s, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    from invgen.atomic import write_json

    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
