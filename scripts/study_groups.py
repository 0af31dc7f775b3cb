"""Dump a base model's per-sample losses over a grid of noise levels × noise draws, with the true groups.

    python scripts/study_groups.py --base runs/bench_invdiff/matrix/bases/steps1200-p0.95-seed0 \\
        --data runs/bench_invdiff/matrix/data/p0.95-seed0 --out runs/study15/steps1200.npz

Writes an npz with `losses` (levels, draws, N), `levels` (t, or σ·1000 for flow matching), `log_snr`
(levels,), `truth` (N,: 1 = bias-conflicting), `prompt_index` (N,). Criteria and groupers are then compared
offline on the dump (`--evaluate`), so the model is run once.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

DEFAULT_LEVELS = [50, 100, 150, 200, 250, 300, 350, 400, 450, 500, 550, 600, 650, 700, 750, 800, 850, 900, 925, 950,
                  975, 990]


def dump(args: argparse.Namespace) -> None:
    from accelerate import Accelerator

    from invgen.config import load_config
    from invgen.invdiff.config import InvDiffConfig
    from invgen.invdiff.grouper import loss_table
    from invgen.invdiff.levels import log_snr
    from invgen.invdiff.train import true_groups
    from invgen.models.denoisers import denoiser_of
    from invgen.train.data import encode_for_pipeline, prepare_dataset
    from invgen.train.diffusion import DenoisingObjective

    out = Path(args.out)
    cfg = load_config(InvDiffConfig, args.config, [f"base_model={args.base}", f"data.root={args.data}",
                                                   f"output_dir={out.parent / (out.stem + '_work')}", *args.set])
    accelerator = Accelerator()
    pipe = cfg.load_base_model()
    if args.adapter:
        from invgen.invdiff.guidance import InvariantGuidance

        # The max-min question: are the groups purer when re-estimated from the partly debiased model?
        InvariantGuidance.from_pretrained(args.adapter).attach(pipe, scale=1.0)
    split = prepare_dataset(cfg.data, True)
    data = encode_for_pipeline(pipe, split, cfg.data, accelerator, Path(cfg.output_dir))
    truth = true_groups(data.image_set, cfg.groups.oracle_attribute)
    objective = DenoisingObjective.for_pipeline(pipe, cfg.objective.flow_matching)
    denoiser = denoiser_of(pipe).eval()
    table = loss_table(denoiser, objective, data.x0, data.embeddings, args.levels, range(args.draws),
                       seed=cfg.groups.seed, prompt_index=data.prompt_index)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, losses=table, levels=np.array(args.levels), log_snr=log_snr(objective, args.levels),
             truth=truth, prompt_index=data.prompt_index.numpy())
    print(f"wrote {out}: losses {table.shape}")


def evaluate(paths: list[str], base: str) -> None:
    """Per dump: the true loss AUC per level, the criterion per level, the selector's choice (on the dump's
    nearest levels) and each grouper's groups at the chosen level, at t = 900 and at the truly best level."""
    from diffusers import DDPMScheduler
    from sklearn.metrics import roc_auc_score

    from invgen.invdiff.grouper import fit_group_weights
    from invgen.invdiff.levels import level_score, select_level
    from invgen.invdiff.mixture import mixture_groups
    from invgen.train.diffusion import DenoisingObjective

    objective = DenoisingObjective("sd", DDPMScheduler.from_pretrained(Path(base) / "scheduler"))
    for path in paths:
        d = np.load(path)
        losses, levels, truth, prompts = d["losses"], d["levels"], d["truth"], d["prompt_index"]
        print(f"== {path}: N {len(truth)}, bias-conflicting {int(truth.sum())}")
        rows = []
        for a, t in enumerate(levels):
            one = losses[a, 0]
            mean = losses[a].mean(0)
            score, detail = level_score(one, prompts)
            rows.append({"t": int(t), "log_snr": round(float(d["log_snr"][a]), 2),
                         "auc_1draw": round(roc_auc_score(truth, one), 3),
                         "auc_all_draws": round(roc_auc_score(truth, mean), 3), "score": round(score, 4),
                         **{k: round(v, 3) for k, v in detail.items()}})
        for r in rows:
            print(json.dumps(r))
        by_t = {r["t"]: r for r in rows}

        def nearest(t: int, levels=levels) -> int:
            return int(levels[np.argmin(np.abs(levels - t))])

        def score_at(t: int, draws: int, levels=levels, losses=losses, prompts=prompts) -> float:
            a = int(np.flatnonzero(levels == nearest(t))[0])
            return level_score(losses[a, :draws].mean(0), prompts)[0]

        chosen, scan = select_level(score_at, objective, 8, 1, losses.shape[1])
        chosen = list(dict.fromkeys(nearest(t) for t in chosen))
        best_true = max(rows, key=lambda r: r["auc_all_draws"])["t"]
        print(f"selector: scanned {scan['levels']} -> {scan['chosen']} ~ dump levels {chosen}; "
              f"best true AUC {by_t[best_true]['auc_all_draws']} at t = {best_true}")
        rounds = (f"{r['draws']} draws {dict(zip(r['levels'], r['score'], strict=True))}" for r in scan["rounds"])
        print("  rounds: " + "; ".join(rounds))
        for ts in dict.fromkeys((tuple(chosen), (nearest(900),), (best_true,))):
            idx = [int(np.flatnonzero(levels == t)[0]) for t in ts]
            for draws in [d for d in (1, 2, 4, 8, 16, 32) if d <= losses.shape[1]]:
                per_level = losses[idx, :draws].mean(1)
                for name, (w, info) in {
                    "spread": (fit_group_weights(per_level.mean(0)), {}),
                    "mixture": mixture_groups(per_level, prompts),
                    "mixture-global": mixture_groups(per_level, None),
                }.items():
                    hard = w.argmax(1) == w.shape[1] - 1
                    agree = float((hard == truth.astype(bool)).mean())
                    auc = roc_auc_score(truth, w[:, -1]) if w.shape[1] > 1 else 0.5
                    purity = float(w[truth.astype(bool), -1].sum() / w[:, -1].sum())
                    print(f"  t={list(ts)} draws={draws} {name:15s}: soft size {w[:, -1].sum():.1f} (purity "
                          f"{purity:.2f}), hard {int(hard.sum())} (true {int((hard & (truth == 1)).sum())}), "
                          f"agreement {agree:.3f}, AUC {auc:.3f} {'NO MINORITY' if 'warning' in info else ''}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base")
    ap.add_argument("--data")
    ap.add_argument("--config", default="configs/digits/invdiff.yaml")
    ap.add_argument("--set", nargs="*", default=[],
                    help="config overrides, e.g. data.options.p_align=0.99 (they must match the base's data)")
    ap.add_argument("--adapter", default=None, help="dump: a trained InvDiff run whose adapter is attached first")
    ap.add_argument("--levels", type=int, nargs="+", default=DEFAULT_LEVELS)
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--out", default="runs/study15/losses.npz")
    ap.add_argument("--evaluate", nargs="+", help="npz dumps to evaluate instead of dumping")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.evaluate:
        evaluate(args.evaluate, args.base)
    else:
        dump(args)


if __name__ == "__main__":
    main()
