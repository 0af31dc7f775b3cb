"""CDvG on colored digits (ten colors): plain cross-entropy vs CDvG with a diffusion or a learned translator.

    python scripts/bench_cdvg.py [--quick] [--p-align 1.0 0.99] [--methods ce cdvg-learned] [--out FILE]

Writes {"results": [{"p_align", "method", "seed", "unbiased_acc", "worst_group_acc", "aligned_acc",
"conflicting_acc", "worst_groups"}, ...], "summary": {...}} with accuracies in [0, 1]. Methods (METHODS):
`ce`; `cdvg-learned` and `cdvg-diffusion`, CDvG as its paper runs it (two views per image and epoch, drawn
afresh every epoch, augmented, set against each other and the image) with SupCon; `cdvg-learned-fixed`, the
earlier setting (one view per image made once, no augmentation); `cdvg-learned-multilevel`, CustomContrast's
multilevel loss in place of SupCon (the config's default). p_align 1.0 is CDvG's own setting: no
bias-conflicting training image at all, and the translators are trained on that set too.

The full run covers p_align 1.0, 0.99 and 0.95 with seeds 0, 1, 2; the diffusion translator (3,000 steps, half
an hour here) is trained at 0.99 only. `--quick` runs p_align 1.0 and 0.99 with seed 0, ce and cdvg-learned at
400 steps (cdvg-diffusion too when its translator is already trained in --work): under 15 minutes here. Every
model is trained with configs/digits/cdvg.yaml; data, translators and the view cache are shared by the seeds of
one p_align (the seed sets the classifier's initialisation and batches). Finished runs are reused, so an
interrupted benchmark continues where it stopped, and two processes given different --p-align values can share
one --work.
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

# Overrides of configs/digits/cdvg.yaml per method.
LEARNED = ["translator.kind=learned", "translator.train_steps=1500", "contrastive.loss=supcon"]
METHODS = {
    "ce": ["translator.kind=none"],
    # The diffusion translator: 3,000 training steps (800 did not learn the ten class colors); this model
    # decides color later than the two-color one, so the prompt switches at t = 700; a view budget of two draws
    # per image (a translation costs 10 denoising steps); guidance 1 (2 and 3 did not change more colors).
    "cdvg-diffusion": ["translator.kind=diffusion", "translator.train_steps=3000", "translator.switch=0.7",
                       "contrastive.loss=supcon",
                       "translator.draws=2", "translator.num_inference_steps=10", "translator.guidance_scale=1.0"],
    "cdvg-learned": LEARNED,
    "cdvg-learned-fixed": [*LEARNED, "translator.views=1", "translator.draws=1", "contrastive.augment=false"],
    "cdvg-learned-multilevel": [*LEARNED, "contrastive.loss=multilevel"],
}
FULL = {1.0: ["ce", "cdvg-learned", "cdvg-learned-fixed", "cdvg-learned-multilevel"],
        0.99: list(METHODS),
        0.95: ["ce", "cdvg-learned", "cdvg-learned-fixed"]}
QUICK = {1.0: ["ce", "cdvg-learned"], 0.99: ["ce", "cdvg-learned", "cdvg-diffusion"]}
# --quick trains the classifiers half as long (their own run folders; translators and views are shared).
QUICK_OVERRIDES = ["train.steps=400"]
FIELDS = ("unbiased_acc", "worst_group_acc", "aligned_acc", "conflicting_acc")


def translator_kind(method: str) -> str:
    return next(o for o in METHODS[method] if o.startswith("translator.kind=")).split("=")[1]


def translator_dir(work: Path, p_align: float, method: str) -> Path:
    return work / f"p{p_align}" / f"translator-{translator_kind(method)}"


def translator_quality(work: Path, p_align: float, method: str, n: int = 200) -> dict:
    """How the translator of `method` at `p_align` does on n training digits aimed at another class: the share
    of views the digit CNN still reads as the source digit ("digit kept") and the share that wear the target
    class's majority color ("color changed"). Views come from the run's own cache; the figures are kept in
    the translator's folder."""
    from invgen.benchmarks.digits.cnn import load_or_train_digit_cnn
    from invgen.benchmarks.digits.data import majority_color
    from invgen.benchmarks.digits.oracle import ColorOracle
    from invgen.cdvg.data import load_labelled_images
    from invgen.cdvg.makers import build_transform
    from invgen.cdvg.transforms import draw_targets
    from invgen.pixels import to_uint8

    folder = translator_dir(work, p_align, method)
    saved = folder / "quality.json"
    if saved.is_file():
        return json.loads(saved.read_text())
    cfg = load_config(CDvGConfig, "configs/digits/cdvg.yaml", [
        f"data.root={work / f'p{p_align}' / 'data'}", f"data.options.p_align={p_align}",
        f"translator.model={folder}", "translator.train_if_missing=false", *METHODS[method]])
    images, labels, _ = load_labelled_images(Path(cfg.data.root) / "train", 10)
    idx = torch.linspace(0, len(images) - 1, n).long()
    x, a = images[idx], labels[idx].tolist()
    seeds = [10_000 + i for i in range(n)]
    views = build_transform(cfg).transform(x, a, seeds=seeds)
    b = draw_targets(a, seeds, 10)
    u8 = to_uint8(views)
    digit = load_or_train_digit_cnn(work / "digit_cnn").predict(u8)
    color = ColorOracle("ten")(u8)
    quality = {"images": n, "digit_kept": float((digit == torch.tensor(a).numpy()).mean()),
               "color_changed": float((color == torch.tensor([majority_color(t, 10) for t in b]).numpy()).mean())}
    write_json(saved, quality)
    return quality


def run_one(work: Path, p_align: float, method: str, seed: int, quick: bool = False) -> dict:
    out = work / f"p{p_align}" / f"{method}-seed{seed}{'-quick' if quick else ''}"
    overrides = [
        f"output_dir={out}",
        f"data.root={work / f'p{p_align}' / 'data'}",
        f"data.options.p_align={p_align}",
        f"translator.model={translator_dir(work, p_align, method)}",
        f"train.seed={seed}",
        *METHODS[method],
        *(QUICK_OVERRIDES if quick else []),
    ]
    if not (out / "eval.json").is_file():
        train_cdvg(load_config(CDvGConfig, "configs/digits/cdvg.yaml", overrides), resume=True)  # a killed run goes on
        evaluate_run(out)
    result = json.loads((out / "eval.json").read_text())
    groups = result.get("group_acc", {})
    worst = sorted(groups, key=groups.get)[:5]  # "digit/color" of the five weakest groups
    return {"p_align": p_align, "method": method, "seed": seed, **{k: result[k] for k in FIELDS},
            "worst_groups": {g: groups[g] for g in worst}}


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


def markdown(summary: dict, translators: dict | None = None) -> str:
    """The tables of docs/benchmarks.md: accuracies in %, mean ± std over seeds; the translators' views."""
    lines = ["| p_align | method | unbiased | worst group | aligned | conflicting |", "|---|---|---|---|---|---|"]
    for p, by_method in summary.items():
        for method, stats in by_method.items():
            cells = [f"{100 * stats[k]['mean']:.1f} ± {100 * stats[k]['std']:.1f}" for k in FIELDS]
            lines.append(f"| {p} | {method} | " + " | ".join(cells) + " |")
    if translators:
        lines += ["", "| p_align | translator | digit kept | color changed |", "|---|---|---|---|"]
        for p, by_kind in translators.items():
            for kind, q in by_kind.items():
                lines.append(f"| {p} | {kind} | {100 * q['digit_kept']:.1f} | {100 * q['color_changed']:.1f} |")
    return "\n".join(lines)


def plan(args) -> dict[float, list[str]]:
    base = QUICK if args.quick else FULL
    chosen = {p: base.get(p, list(METHODS)) for p in (args.p_align or base)}
    if args.methods:
        chosen = {p: [m for m in args.methods if m in METHODS] for p in chosen}
    if args.quick:  # the diffusion translator takes half an hour to train: quick reuses one, never trains it
        chosen = {p: [m for m in ms if m != "cdvg-diffusion"
                      or (translator_dir(Path(args.work), p, m) / "model_index.json").is_file()]
                  for p, ms in chosen.items()}
    return chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="p_align 1.0 and 0.99, seed 0 (under 15 minutes here)")
    ap.add_argument("--p-align", type=float, nargs="+", help="only these p_align values")
    ap.add_argument("--methods", nargs="+", choices=list(METHODS), help="only these methods")
    ap.add_argument("--seeds", type=int, nargs="+", help="default: 0 1 2 (quick: 0)")
    ap.add_argument("--work", default="runs/bench_cdvg")
    ap.add_argument("--out", default="benchmarks/cdvg.json")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (1 is faster on a loaded machine)")
    ap.add_argument("--table", action="store_true", help="print the markdown table of --out and exit")
    args = ap.parse_args()
    if args.table:
        report = json.loads(Path(args.out).read_text())
        print(markdown(report["summary"], report.get("translators")))
        return
    torch.set_num_threads(args.threads)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    work = Path(args.work)
    t0 = time.time()
    results: list[dict] = []
    translators: dict = {}
    for p, methods in plan(args).items():
        for seed in seeds:
            for method in methods:
                results.append(run_one(work, p, method, seed, args.quick))
                if method != "ce":
                    translators.setdefault(str(p), {})[translator_kind(method)] = translator_quality(work, p, method)
                print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in results[-1].items()
                       if k != "worst_groups"}, flush=True)
                # Written after every run so that an interrupted benchmark still leaves its figures.
                write_json(args.out, {"quick": args.quick, "results": results, "summary": summarise(results),
                                      "translators": translators,
                                      "seconds": round(time.time() - t0, 1),
                                      "machine": f"{platform.machine()}, {args.threads} threads, torch "
                                                 f"{torch.__version__}"})
    print(markdown(summarise(results), translators))
    print(f"wrote {args.out} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
