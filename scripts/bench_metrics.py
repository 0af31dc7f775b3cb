"""Time `bias_report` with the color oracle on N images of 32 px and write benchmarks/metrics.json.

    .venv/bin/python scripts/bench_metrics.py            # 5,000 images, 1,000 bootstrap resamples
    .venv/bin/python scripts/bench_metrics.py --n 20000

The images are the colored digits (train and test splits, 32 px, two colors) repeated to N and written
as PNG with `write_imagefolder` into a temporary folder; building them is not timed. The report is timed
end to end (read, classify, metrics with bootstrap), best of `--repeat` runs, with its own breakdown.
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

from invgen.benchmarks.digits.data import build_splits  # noqa: E402
from invgen.data.imagefolder import ImageRecord, write_imagefolder  # noqa: E402
from invgen.metrics.report import bias_report  # noqa: E402


def build_set(out: Path, n: int, size: int = 32) -> Path:
    splits = build_splits(size=size, palette_name="two")
    images = np.concatenate([splits["train"].images, splits["test"].images])
    records = splits["train"].records + splits["test"].records
    idx = np.arange(n) % len(images)
    recs = [
        ImageRecord(f"{i:06d}.png", records[j].prompt, records[j].label, dict(records[j].attributes))
        for i, j in enumerate(idx)
    ]
    return write_imagefolder(out, list(images[idx]), recs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "metrics.json")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_metrics_") as tmp:
        t0 = time.perf_counter()
        folder = build_set(Path(tmp) / "set", args.n, args.size)
        build_s = time.perf_counter() - t0
        runs = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            report = bias_report(folder, "color", "oracle:color", n_boot=args.bootstrap)
            runs.append((time.perf_counter() - t, report["timing"]))
    seconds, timing = min(runs, key=lambda r: r[0])
    result = {
        "n_images": args.n,
        "image_size": args.size,
        "classifier": "oracle:color",
        "bootstrap": args.bootstrap,
        "seconds": round(seconds, 3),
        "images_per_second": round(args.n / seconds, 1),
        "breakdown_s": {k: round(v, 3) for k, v in timing.items()},
        "all_runs_s": [round(r[0], 3) for r in runs],
        "bias_score": round(report["bias_score"], 4),
        "build_set_s": round(build_s, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from invgen.atomic import write_json

    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
