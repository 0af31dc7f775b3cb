"""CDvG on colored digits (ten colors): plain cross-entropy vs CDvG with a diffusion or a learned translator.

    python scripts/bench_cdvg.py [--quick] [--out benchmarks/cdvg.json] [--work runs/bench_cdvg]

Writes {"results": [{"p_align", "method", "seed", "unbiased_acc", "worst_group_acc", "aligned_acc",
"conflicting_acc"}, ...], "summary": {...}} with accuracies in [0, 1]; `method` is ce, cdvg-diffusion or
cdvg-learned. The full run covers p_align 0.95, 0.99 and 0.995 with seeds 0, 1, 2; `--quick` runs p_align 0.99
with seed 0. Every model is trained with configs/digits/cdvg.yaml; the data and the translators (and so the
cached views) are shared by the seeds of one p_align, the seed sets the classifier's initialisation and batches.
Finished runs are reused, so an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from invgen.atomic import write_json
from invgen.cdvg.evaluate import evaluate_run
from invgen.cdvg.train import CDvGConfig, train_cdvg
from invgen.config import load_config

METHODS = {"ce": "none", "cdvg-diffusion": "diffusion", "cdvg-learned": "learned"}
FIELDS = ("unbiased_acc", "worst_group_acc", "aligned_acc", "conflicting_acc")


def run_one(work: Path, p_align: float, method: str, seed: int) -> dict:
    kind = METHODS[method]
    out = work / f"p{p_align}" / f"{method}-seed{seed}"
    overrides = [
        f"output_dir={out}",
        f"data.root={work / f'p{p_align}' / 'data'}",
        f"data.options.p_align={p_align}",
        f"translator.kind={kind}",
        f"translator.model={work / f'p{p_align}' / f'translator-{kind}'}",
        f"train.seed={seed}",
    ]
    # The translators' training budgets of the recorded run (docs/benchmarks.md).
    overrides += {"learned": ["translator.train_steps=1500"], "diffusion": ["translator.train_steps=800"]}.get(kind, [])
    if not (out / "eval.json").is_file():
        train_cdvg(load_config(CDvGConfig, "configs/digits/cdvg.yaml", overrides), resume=True)  # a killed run goes on
        evaluate_run(out)
    result = json.loads((out / "eval.json").read_text())
    return {"p_align": p_align, "method": method, "seed": seed, **{k: result[k] for k in FIELDS}}


def summarise(results: list[dict]) -> dict:
    summary: dict = {}
    for r in results:
        summary.setdefault(f"{r['p_align']}", {}).setdefault(r["method"], []).append(r)
    out: dict = {}
    for p, by_method in summary.items():
        out[p] = {}
        for method, rows in by_method.items():
            out[p][method] = {
                k: {"mean": statistics.fmean(r[k] for r in rows),
                    "std": statistics.stdev(r[k] for r in rows) if len(rows) > 1 else 0.0}
                for k in FIELDS
            }
    return out


def markdown(summary: dict) -> str:
    """The table of docs/benchmarks.md: accuracies in %, mean ± std over seeds."""
    lines = ["| p_align | method | unbiased | worst group | aligned | conflicting |", "|---|---|---|---|---|---|"]
    for p, by_method in summary.items():
        for method, stats in by_method.items():
            cells = [f"{100 * stats[k]['mean']:.1f} ± {100 * stats[k]['std']:.1f}" for k in FIELDS]
            lines.append(f"| {p} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="p_align 0.99, seed 0 only (under 15 minutes here)")
    ap.add_argument("--work", default="runs/bench_cdvg")
    ap.add_argument("--out", default="benchmarks/cdvg.json")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (1 is faster on a loaded machine)")
    ap.add_argument("--table", action="store_true", help="print the markdown table of --out and exit")
    args = ap.parse_args()
    if args.table:
        print(markdown(json.loads(Path(args.out).read_text())["summary"]))
        return
    torch.set_num_threads(args.threads)
    p_aligns, seeds = ([0.99], [0]) if args.quick else ([0.95, 0.99, 0.995], [0, 1, 2])
    work = Path(args.work)
    t0 = time.time()
    results: list[dict] = []
    for p in p_aligns:
        for seed in seeds:
            for method in METHODS:
                results.append(run_one(work, p, method, seed))
                print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in results[-1].items()}, flush=True)
                # Written after every run so that an interrupted benchmark still leaves its figures.
                write_json(args.out, {"quick": args.quick, "results": results, "summary": summarise(results),
                                      "seconds": round(time.time() - t0, 1),
                                      "machine": f"{platform.machine()}, {args.threads} threads, torch "
                                                 f"{torch.__version__}"})
    print(markdown(summarise(results)))
    print(f"wrote {args.out} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
