"""InvDiff on colored digits: base vs inferred groups vs oracle groups, adapter size and sampling cost.

    python scripts/bench_invdiff.py [--quick] [--base runs/demo/base] [--out benchmarks/invdiff.json]
    python scripts/bench_invdiff.py --matrix [--cells steps1200-p0.95-seed0 ...] [--stage all|bases|arms]

Single run: the base model is `--base`, else the demo's (runs/demo/base) when `make demo` has made it, else one
trained here (2,000 steps). `--quick` is a small but complete run from nothing (it never reuses the demo's base):
a 1,200-step base and shorter adapters at a higher learning rate (`QUICK` below). The base trains, and the three
arms (base, inferred, oracle) run side by side, in `--jobs` processes of one torch thread each. Writes
{"base"|"invdiff"|"oracle": {"bias_score", "fidelity"}, "adapter_param_fraction", "sampling_overhead" (default
attach, LoRA folded), "sampling_overhead_unfused", "group_agreement", ...}. Timings are ratios within one run.

Matrix (`--matrix`): the robustness benchmark over base training length × p_align × data seed (`matrix_cells`).
Each cell has three arms evaluated with the same prompts and seeds: `base`, `inferred` (groups from the
configs' default grouper: no `groups.*` is overridden) and `oracle` (true bias labels, the upper bound). Data
sets, bases, group/adapter runs and each arm's figures are cached under `--work`
(`data/p{P}-seed{D}`, `bases/steps{S}-p{P}-seed{D}`, `cells/<cell>/<arm>/` and `cells/<cell>/<arm>.json`), so a
killed or repeated run continues where it stopped; the summary (`--out` and the markdown table beside it) is
rewritten after every arm. `--stage bases` only trains bases, `--stage arms` only runs arms whose base exists
(with `--wait`, it keeps polling for bases until every selected arm is done).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from invgen.atomic import write_json, write_text

# --quick: a complete run from nothing (base, groups, two adapters, evaluation) in under 15 minutes on 2 cores
# (docs/benchmarks.md, "InvDiff without tuning"). The base keeps 1,200 steps (at 800 it has not learnt the digits:
# fidelity 0.32, and the grouper rightly finds no minority) but trains in two processes; the three arms run side
# by side (`--jobs`); adapters of 300 steps at twice the config's learning rate (oracle groups on a 1,200-step
# base: 0.39 x base bias at 1,000 steps, 0.42 x at 400 steps and lr 4e-3, 0.51 x at 400 and 2e-3); 50 images
# per prompt, since with 20 an unbiased model already scores about 0.18; sampling cost timed on 50 images.
QUICK = {"base_steps": 1200, "adapter_steps": 300, "adapter_overrides": ("train.learning_rate=0.004",),
         "per_prompt": 50, "timing_images": 50}
TIMING_IMAGES = 100
ARMS = ("base", "oracle", "inferred")
# Keys a grouper may use in groups.json for the noise level it chose (read defensively: older reports have none).
CHOSEN_LEVEL_KEYS = ("chosen_timestep", "chosen_timesteps", "chosen_level", "timestep_chosen", "selected_timestep")


# ---------------------------------------------------------------------------------------------- cells
@dataclass(frozen=True)
class Cell:
    steps: int  # base model training steps
    p_align: float
    seed: int  # data seed: which digits go to the training split and which get the minority color

    @property
    def id(self) -> str:
        return f"steps{self.steps}-p{self.p_align:.2f}-seed{self.seed}"

    @property
    def data_id(self) -> str:
        return f"p{self.p_align:.2f}-seed{self.seed}"


def matrix_cells() -> list[Cell]:
    """All 12 cells, in the order they are run: the demo's setting first, seed 0 before seed 1."""
    order = [(1200, 0.95), (2000, 0.95), (1200, 0.90), (1200, 0.99), (2000, 0.90), (2000, 0.99)]
    return [Cell(s, p, seed) for seed in (0, 1) for s, p in order]


def select_cells(names: list[str] | None) -> list[Cell]:
    cells = matrix_cells()
    if not names:
        return cells
    known = {c.id: c for c in cells}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"--cells: unknown cell {unknown[0]} (known: {', '.join(known)})")
    return [c for c in cells if c.id in names]


@dataclass(frozen=True)
class Layout:
    """Where a matrix run keeps everything under its work folder."""

    work: Path

    def data(self, cell: Cell) -> Path:
        return self.work / "data" / cell.data_id

    def base(self, cell: Cell) -> Path:
        return self.work / "bases" / cell.id

    def cell(self, cell: Cell) -> Path:
        return self.work / "cells" / cell.id

    def run(self, cell: Cell, arm: str) -> Path:
        return self.cell(cell) / arm

    def arm(self, cell: Cell, arm: str) -> Path:
        return self.cell(cell) / f"{arm}.json"

    def base_timing(self, cell: Cell) -> Path:
        return self.work / "timings" / f"base-{cell.id}.json"

    @property
    def cnn(self) -> Path:
        return self.work / "cache" / "digit_cnn"

    @property
    def log(self) -> Path:
        return self.work / "matrix.log"


# ---------------------------------------------------------------------------------------------- heavy parts
# Module-level functions so that tests can replace them: the bookkeeping below never trains anything itself.
def base_complete(path: Path) -> bool:
    from invgen.train.base import pipeline_complete

    return pipeline_complete(path)


def train_base_model(out: Path, data_root: Path, steps: int | None, p_align: float = 0.95, seed: int = 0,
                     processes: int = 1) -> None:
    """The real base trainer on configs/digits/base.yaml; resumes from its last checkpoint when killed.

    `processes` > 1 (CPU only) trains with that many processes of one thread each through `accelerate launch`,
    which shard each batch (the same model as one process up to float summation order, docs/reliability.md):
    on 2 cores about 1.2 times as fast as one process on two threads."""
    from invgen.config import load_config
    from invgen.train.base import BaseConfig, train_base

    over = [f"data.root={data_root}", f"data.options.p_align={p_align}", f"data.seed={seed}", f"output_dir={out}"]
    if steps is not None:
        over.append(f"train.steps={steps}")
    if processes > 1 and not torch.cuda.is_available():
        import subprocess

        from invgen.distributed import cpu_launch_command

        cmd, env = cpu_launch_command(
            ["-m", "invgen.train", "base", "--config", "configs/digits/base.yaml", "--resume", *over], processes)
        subprocess.run(cmd, env=env, check=True)
        return
    train_base(load_config(BaseConfig, "configs/digits/base.yaml", over), resume=True)


def train_arm(out: Path, base_dir: Path, data_root: Path, source: str, adapter_steps: int | None,
              p_align: float = 0.95, seed: int = 0, overrides: tuple[str, ...] = ()) -> dict:
    """Groups (max step) then adapter (min step) on configs/digits/invdiff.yaml; returns seconds per step.

    Only the data, the group source, the adapter's length and `overrides` (train.* for --quick) are set: the
    grouper runs with its defaults."""
    from invgen.config import load_config
    from invgen.invdiff.config import InvDiffConfig
    from invgen.invdiff.train import GROUPS_WEIGHTS, infer_groups, train_invdiff

    over = [f"data.root={data_root}", f"data.options.p_align={p_align}", f"data.seed={seed}", f"groups.source={source}",
            f"base_model={base_dir}", f"output_dir={out}"]
    if adapter_steps is not None:
        over.append(f"train.steps={adapter_steps}")
    cfg = load_config(InvDiffConfig, "configs/digits/invdiff.yaml", over + list(overrides))
    times = {}
    t0 = time.time()
    if not (out / GROUPS_WEIGHTS).is_file():
        infer_groups(cfg)
    times["groups_seconds"] = round(time.time() - t0, 1)
    t0 = time.time()
    if not (out / "invgen_guidance.json").is_file():
        train_invdiff(cfg, resume=True)
    times["adapter_seconds"] = round(time.time() - t0, 1)
    times["adapter_steps"] = cfg.train.steps
    return times


_CNN = {}


def evaluate(base_dir: Path, adapter_dir: Path | None, per_prompt: int, cnn_dir: Path) -> dict:
    """Bias score and digit fidelity of the base model (with the adapter attached, if given): the prompts
    "a photo of the digit d", `per_prompt` images each, seeds `image_seed(0, i)`, read by the digit CNN."""
    from invgen.benchmarks.digits.cnn import load_or_train_digit_cnn
    from invgen.benchmarks.digits.data import digit_prompt
    from invgen.benchmarks.digits.metrics import digit_figures
    from invgen.invdiff.guidance import InvariantGuidance
    from invgen.models.loading import load_pipeline
    from invgen.sampling import generate, image_seed

    if cnn_dir not in _CNN:
        _CNN[cnn_dir] = load_or_train_digit_cnn(cnn_dir)
    pipe = load_pipeline(base_dir)
    labels = [d for d in range(10) for _ in range(per_prompt)]
    prompts = [digit_prompt(d) for d in labels]
    seeds = [image_seed(0, i) for i in range(len(prompts))]
    if adapter_dir is not None:
        InvariantGuidance.from_pretrained(adapter_dir).attach(pipe, scale=1.0)
    figs = digit_figures(generate(pipe, prompts, seeds), prompts, labels, _CNN[cnn_dir])
    return {k: figs[k] for k in ("bias_score", "fidelity")}


# ---------------------------------------------------------------------------------------------- groups.json
def chosen_level(report: dict):
    """The noise level the grouper chose, from whichever key its report uses; a single fixed level otherwise."""
    for key in CHOSEN_LEVEL_KEYS:
        if report.get(key) is not None:
            return report[key]
    scan = report.get("level_scan")
    if isinstance(scan, dict) and scan.get("chosen") is not None:
        return scan["chosen"]
    ts = report.get("timesteps")
    if isinstance(ts, list) and len(ts) == 1:
        return ts[0]
    return None


def group_summary(report: dict) -> dict:
    """The separation figures of a groups.json report, and the whole report (it is small) for the record."""
    return {
        "group_agreement": report.get("group_agreement"),
        "group_loss_auc": report.get("loss_auc"),
        "group_auc": report.get("group_auc"),
        "group_sizes": report.get("group_sizes"),
        "true_group_sizes": report.get("true_group_sizes"),
        "timesteps": report.get("timesteps"),
        "timesteps_requested": report.get("timesteps_requested"),
        "chosen_level": chosen_level(report),
        "grouper_method": (report.get("grouper") or {}).get("method"),
        "grouper_warning": report.get("warning"),
        "groups_report": report,
    }


def read_groups(run_dir: Path) -> dict:
    path = run_dir / "groups.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def code_fingerprint() -> str:
    """Short hash of the grouper and trainer sources, so results can be told apart when they change."""
    root = Path(__file__).resolve().parents[1] / "invgen" / "invdiff"
    h = hashlib.sha256()
    for name in ("grouper.py", "train.py"):
        p = root / name
        h.update(p.read_bytes() if p.is_file() else b"")
    return h.hexdigest()[:12]


# ---------------------------------------------------------------------------------------------- bookkeeping
def log(layout: Layout, message: str) -> None:
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime())}Z {message}"
    print(line, flush=True)
    layout.log.parent.mkdir(parents=True, exist_ok=True)
    with open(layout.log, "a") as f:
        f.write(line + "\n")


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def ensure_base(layout: Layout, cell: Cell) -> None:
    """Train the cell's base unless it is complete; its wall time goes to timings/base-<cell>.json."""
    out = layout.base(cell)
    if base_complete(out):
        return
    resumed = (out / "checkpoints").is_dir()
    log(layout, f"base {cell.id}: training ({'resuming' if resumed else 'from scratch'})")
    t0 = time.time()
    train_base_model(out, layout.data(cell), cell.steps, cell.p_align, cell.seed)
    seconds = round(time.time() - t0, 1)
    earlier = read_json(layout.base_timing(cell)) or {}
    write_json(layout.base_timing(cell), {"seconds": seconds + earlier.get("seconds", 0.0), "resumed": resumed,
                                          "threads": torch.get_num_threads()})
    log(layout, f"base {cell.id}: done in {seconds / 60:.1f} min")


def arm_done(layout: Layout, cell: Cell, arm: str, settings: dict) -> bool:
    """True when the arm's figures exist for these settings; figures made with other settings are an error,
    since mixing them in one table would mislead."""
    done = read_json(layout.arm(cell, arm))
    if done is None:
        return False
    made = done.get("settings", {})
    keys = ("per_prompt",) if arm == "base" else ("per_prompt", "adapter_steps")
    for key in keys:
        if made.get(key) != settings.get(key):
            raise SystemExit(f"{layout.arm(cell, arm)} was made with {key}={made.get(key)}, this run asks for "
                             f"{settings.get(key)}; use another --work folder")
    return True


def run_arm(layout: Layout, cell: Cell, arm: str, settings: dict) -> dict:
    """Run one arm of a cell (its base must exist) and write its figures atomically; returns them."""
    base_dir = layout.base(cell)
    log(layout, f"{cell.id} {arm}: start")
    t0 = time.time()
    result: dict = {"arm": arm, "cell": cell.id, "settings": dict(settings)}
    adapter = None
    if arm != "base":
        adapter = layout.run(cell, arm)
        result.update(train_arm(adapter, base_dir, layout.data(cell), "oracle" if arm == "oracle" else "inferred",
                                settings.get("adapter_steps"), cell.p_align, cell.seed))
        result["code"] = code_fingerprint()
    t1 = time.time()
    result.update(evaluate(base_dir, adapter, settings["per_prompt"], layout.cnn))
    result["eval_seconds"] = round(time.time() - t1, 1)
    if arm != "base":
        result.update(group_summary(read_groups(adapter)))
    result["seconds"] = round(time.time() - t0, 1)
    write_json(layout.arm(cell, arm), result)
    log(layout, f"{cell.id} {arm}: bias {result['bias_score']:.3f}, fidelity {result['fidelity']:.3f}, "
                f"{result['seconds'] / 60:.1f} min")
    return result


def cell_result(layout: Layout, cell: Cell) -> dict:
    """What is known of a cell: each finished arm's figures, and the comparisons once all three exist."""
    out: dict = {"cell": cell.id, "base_steps": cell.steps, "p_align": cell.p_align, "data_seed": cell.seed}
    timing = read_json(layout.base_timing(cell))
    out["base_train_seconds"] = timing.get("seconds") if timing else None
    arms = {arm: read_json(layout.arm(cell, arm)) for arm in ARMS}
    for arm, r in arms.items():
        if r is not None:
            out[arm] = {k: r.get(k) for k in ("bias_score", "fidelity", "seconds", "groups_seconds",
                                              "adapter_seconds", "eval_seconds") if k in r}
    inf, orc, base = arms["inferred"], arms["oracle"], arms["base"]
    if inf is not None:
        out.update({k: inf.get(k) for k in ("group_agreement", "group_loss_auc", "group_sizes", "true_group_sizes",
                                           "timesteps", "timesteps_requested", "chosen_level", "grouper_method",
                                           "grouper_warning", "code")})
    if orc is not None and out.get("true_group_sizes") is None:
        out["true_group_sizes"] = orc.get("true_group_sizes")
    out["complete"] = all(r is not None for r in arms.values())
    if base is not None:
        b = base["bias_score"]
        if orc is not None:
            out["oracle_vs_base"] = orc["bias_score"] / b if b > 0 else None
        if inf is not None:
            out["inferred_vs_base"] = inf["bias_score"] / b if b > 0 else None
        if inf is not None and orc is not None:
            red_orc = b - orc["bias_score"]
            out["inferred_vs_oracle_reduction"] = (b - inf["bias_score"]) / red_orc if red_orc > 0 else None
            out["fidelity_drop_points"] = 100 * (base["fidelity"] - inf["fidelity"])
            out["meets"] = meets(out)
    return out


def meets(row: dict) -> bool:
    """The issue's per-cell acceptance: ≥ 70% of the oracle's reduction; where the oracle halves the bias, the
    inferred bias at most 0.6 × base; fidelity within 5 points."""
    ratio = row.get("inferred_vs_oracle_reduction")
    ok = ratio is not None and ratio >= 0.7 and row["fidelity_drop_points"] <= 5.0
    if ok and row.get("oracle_vs_base") is not None and row["oracle_vs_base"] <= 0.5:
        ok = row["inferred_vs_base"] <= 0.6
    return ok


def _f(v, fmt: str = "{:.3f}") -> str:
    return "–" if v is None else fmt.format(v)


def _sizes(v) -> str:
    return "–" if not v else " / ".join(f"{x:,.0f}" for x in v)


def markdown_table(rows: list[dict]) -> str:
    head = ("| cell | bias base → inferred / oracle | fidelity base → inferred / oracle | inferred / oracle "
            "reduction | agreement | loss AUC | level | groups (true) | minutes: base / arms |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        def arm(name, key, r=r):
            return _f((r.get(name) or {}).get(key))

        arm_min = sum((r.get(a) or {}).get("seconds", 0.0) for a in ARMS) / 60
        base_min = _f(r["base_train_seconds"] / 60 if r.get("base_train_seconds") else None, "{:.1f}")
        ratio = _f(r.get("inferred_vs_oracle_reduction"), "{:.0%}")
        if "meets" in r:
            ratio += "" if r["meets"] else " ✗"
        lines.append(
            f"| {r['cell']} | {arm('base', 'bias_score')} → {arm('inferred', 'bias_score')} / "
            f"{arm('oracle', 'bias_score')} | {arm('base', 'fidelity')} → {arm('inferred', 'fidelity')} / "
            f"{arm('oracle', 'fidelity')} | {ratio} | {_f(r.get('group_agreement'))} | "
            f"{_f(r.get('group_loss_auc'))} | {_f(r.get('chosen_level'), '{}')} | {_sizes(r.get('group_sizes'))} "
            f"({_sizes(r.get('true_group_sizes'))}) | {base_min} / {arm_min:.1f} |")
    return head + "\n".join(lines) + "\n"


def write_summary(layout: Layout, cells: list[Cell], out: Path, settings: dict) -> dict:
    """Rebuild `out` (JSON) and its markdown twin from the per-arm files: a killed run loses nothing."""
    rows = [cell_result(layout, c) for c in matrix_cells() if c in cells or layout.cell(c).is_dir()]
    summary = {
        "settings": settings,
        "cells": rows,
        "complete": sum(r["complete"] for r in rows),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(out, summary)
    write_text(out.with_suffix(".md"), markdown_table(rows))
    return summary


def pending_arm(layout: Layout, cells: list[Cell], arms: tuple[str, ...], settings: dict,
                skip: set[tuple[str, str]] = frozenset()) -> tuple[Cell, str] | None:
    """The first arm still to run whose base exists (cells in matrix order), leaving out `skip` (cell id, arm)."""
    for cell in cells:
        if not base_complete(layout.base(cell)):
            continue
        for arm in ARMS:
            if arm in arms and (cell.id, arm) not in skip and not arm_done(layout, cell, arm, settings):
                return cell, arm
    return None


def run_matrix(layout: Layout, cells: list[Cell], out: Path, settings: dict, stage: str = "all",
               arms: tuple[str, ...] = ARMS, wait: bool = False, poll_seconds: float = 60.0) -> dict:
    """Bases and arms of `cells`, each skipped when already done; the summary is rewritten after each arm.

    A failed arm is logged and left for a later run (its figures are not written); the rest go on."""
    failed: set[tuple[str, str]] = set()
    if stage in ("all", "bases"):
        for cell in cells:
            try:
                ensure_base(layout, cell)
            except Exception:  # one broken cell must not stop the others
                log(layout, f"base {cell.id}: FAILED\n{traceback.format_exc()}")
                continue
            if stage == "all":
                for arm in arms:
                    if not arm_done(layout, cell, arm, settings):
                        _try_arm(layout, cell, arm, settings, failed)
                        write_summary(layout, cells, out, settings)
        return write_summary(layout, cells, out, settings)
    while True:
        nxt = pending_arm(layout, cells, arms, settings, failed)
        if nxt is not None:
            _try_arm(layout, *nxt, settings, failed)
            write_summary(layout, cells, out, settings)
            continue
        if not wait or all(arm_done(layout, c, a, settings) for c in cells for a in arms):
            return write_summary(layout, cells, out, settings)
        time.sleep(poll_seconds)
        failed.clear()  # a failure may have been passing (a base still being written): try again


def _try_arm(layout: Layout, cell: Cell, arm: str, settings: dict, failed: set) -> None:
    try:
        run_arm(layout, cell, arm, settings)
    except Exception:
        failed.add((cell.id, arm))
        log(layout, f"{cell.id} {arm}: FAILED\n{traceback.format_exc()}")


# ---------------------------------------------------------------------------------------------- single run
def arm_job(name: str, base_dir: Path, run_dir: Path | None, data_root: Path, source: str | None,
            adapter_steps: int | None, overrides: tuple[str, ...], per_prompt: int, cnn_dir: Path):
    """One arm of the single run: its groups and adapter (none for the base), then its figures."""
    times = None
    if run_dir is not None:
        times = train_arm(run_dir, base_dir, data_root, source, adapter_steps, overrides=overrides)
    return name, times, evaluate(base_dir, run_dir, per_prompt, cnn_dir)


def _one_thread() -> None:
    torch.set_num_threads(1)


def run_jobs(jobs: list[tuple], workers: int) -> list:
    """`fn(*args)` for each (fn, args), in order; with `workers` > 1 in that many fresh processes of one torch
    thread each: on a small CPU two one-thread jobs side by side do about 1.5 times the work of one job on
    two threads (a tiny UNet's kernels do not keep two threads busy). Jobs are started in the order given."""
    if workers <= 1:
        return [fn(*a) for fn, a in jobs]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: a forked child of a process that has run torch's thread pool can hang.
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_one_thread) as pool:
        futures = [pool.submit(fn, *a) for fn, a in jobs]
        return [f.result() for f in futures]


def _timed(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def single_run(args) -> dict:
    from invgen.benchmarks.digits.cnn import load_or_train_digit_cnn
    from invgen.benchmarks.digits.data import digit_prompt
    from invgen.config import load_config
    from invgen.invdiff.config import InvDiffConfig
    from invgen.invdiff.guidance import InvariantGuidance
    from invgen.models.loading import load_pipeline
    from invgen.sampling import generate, image_seed
    from invgen.train.data import prepare_dataset

    work = Path(args.work)
    per_prompt = args.per_prompt or (QUICK["per_prompt"] if args.quick else 50)
    adapter_steps = args.adapter_steps or (QUICK["adapter_steps"] if args.quick else None)
    overrides = tuple(QUICK["adapter_overrides"]) if args.quick else ()
    data_root = work / "data"
    demo_base = Path("runs/demo/base")
    # --quick starts from nothing unless --base is given: it is the run a new user makes first.
    default_base = demo_base if base_complete(demo_base) and not args.quick else work / "base"
    base_dir = Path(args.base) if args.base else default_base
    t_start = time.time()
    result: dict = {"per_prompt": per_prompt, "quick": args.quick}
    if not base_complete(base_dir):
        train_base_model(base_dir, data_root, QUICK["base_steps"] if args.quick else None, processes=args.jobs)
        result["base_train_seconds"] = round(time.time() - t_start, 1)
    result["base_model"] = str(base_dir)

    dirs = {"invdiff": work / "invdiff", "oracle": work / "oracle"}
    cnn_dir = work / "cache" / "digit_cnn"
    # Once, before the jobs that read them (the data is missing here when --base came from elsewhere).
    load_or_train_digit_cnn(cnn_dir)
    prepare_dataset(load_config(InvDiffConfig, "configs/digits/invdiff.yaml", [f"data.root={data_root}"]).data)
    jobs = [("invdiff", dirs["invdiff"], "inferred"), ("oracle", dirs["oracle"], "oracle"), ("base", None, None)]
    t_arms = time.time()
    for name, times, figures in run_jobs(
        [(arm_job, (name, base_dir, d, data_root, source, adapter_steps, overrides, per_prompt, cnn_dir))
         for name, d, source in jobs], args.jobs):
        if times is not None:
            result[f"{name}_seconds"] = times
        result[name] = figures
    result["arms_seconds"] = round(time.time() - t_arms, 1)

    pipe = load_pipeline(base_dir)
    g = InvariantGuidance.from_pretrained(dirs["invdiff"])
    unet_params = sum(p.numel() for p in pipe.unet.parameters())
    result["adapter_kind"] = g.adapter.kind
    result["adapter_parameters"] = g.num_parameters()
    result["unet_parameters"] = unet_params
    result["adapter_param_fraction"] = g.num_parameters() / unet_params

    # Sampling cost: same prompts and seeds, best of 3, base vs attached vs fused, in one run.
    labels = [d for d in range(10) for _ in range(per_prompt)]
    prompts = [digit_prompt(d) for d in labels]
    seeds = [image_seed(0, i) for i in range(len(prompts))]
    k = QUICK["timing_images"] if args.quick else TIMING_IMAGES
    tp, ts = prompts[:: max(1, len(prompts) // k)][:k], seeds[:k]

    def sample():
        generate(pipe, tp, ts, progress=False)

    t_timing = time.time()
    t_base = _timed(sample)
    g.attach(pipe, scale=1.0)  # the default: a LoRA is folded into the weights
    t_attached = _timed(sample)
    g.detach(pipe)
    result["sampling_overhead"] = t_attached / t_base
    if g.adapter.kind == "lora":
        g.attach(pipe, scale=1.0, fuse=False)  # peft's LoRA layers left in place
        result["sampling_overhead_unfused"] = _timed(sample) / t_base
        g.detach(pipe)
    result["timing_seconds"] = round(time.time() - t_timing, 1)

    groups = group_summary(read_groups(dirs["invdiff"]))
    result["group_agreement"] = groups["group_agreement"]
    result["group_loss_auc"] = groups["group_loss_auc"]
    result["group_sizes"] = groups["group_sizes"]
    result["true_group_sizes"] = groups["true_group_sizes"]
    result["group_timesteps"] = groups["timesteps"]
    result["group_chosen_level"] = groups["chosen_level"]
    red_inv = result["base"]["bias_score"] - result["invdiff"]["bias_score"]
    red_orc = result["base"]["bias_score"] - result["oracle"]["bias_score"]
    result["inferred_vs_oracle_reduction"] = red_inv / red_orc if red_orc > 0 else None
    result["adapter_steps"] = result["invdiff_seconds"]["adapter_steps"]
    result["adapter_overrides"] = list(overrides)
    result["seconds"] = round(time.time() - t_start, 1)
    result["machine"] = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    write_json(args.out, result)
    return result


# ---------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help=f"single small run from nothing, under 15 minutes on 2 cores ({QUICK})")
    ap.add_argument("--matrix", action="store_true", help="the robustness matrix instead of a single run")
    ap.add_argument("--work", default=None, help="run folder (runs/bench_invdiff, or runs/bench_invdiff/matrix)")
    ap.add_argument("--base", default=None,
                    help="single run: reuse a trained base pipeline (default: runs/demo/base when `make demo` has "
                         "made it, except with --quick)")
    ap.add_argument("--per-prompt", type=int, default=None, help="images per prompt (50)")
    ap.add_argument("--adapter-steps", type=int, default=None,
                    help="adapter training steps (default: the config's, 1,000; 500 with --quick)")
    ap.add_argument("--out", default=None, help="benchmarks/invdiff.json, or benchmarks/invdiff_matrix.json")
    ap.add_argument("--cells", nargs="+", default=None, help="matrix: only these cells (e.g. steps1200-p0.95-seed0)")
    ap.add_argument("--stage", choices=("all", "bases", "arms"), default="all", help="matrix: what to run")
    ap.add_argument("--arms", default=",".join(ARMS), help="matrix: comma-separated arms to run (base,oracle,inferred)")
    ap.add_argument("--wait", action="store_true", help="matrix --stage arms: keep polling for bases")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (1 is faster on a loaded machine)")
    ap.add_argument("--jobs", type=int, default=2,
                    help="single run: the base trained, and the three arms run, in this many processes of one thread "
                         "each (1: all in this one, on --threads threads)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.matrix:
        args.work = args.work or "runs/bench_invdiff"
        args.out = args.out or "benchmarks/invdiff.json"
        print(json.dumps(single_run(args), indent=2))
        return
    arms = tuple(a for a in args.arms.split(",") if a)
    if any(a not in ARMS for a in arms):
        raise SystemExit(f"--arms: each must be one of {', '.join(ARMS)}, got {args.arms}")
    layout = Layout(Path(args.work or "runs/bench_invdiff/matrix"))
    settings = {"per_prompt": args.per_prompt or 50, "adapter_steps": args.adapter_steps}
    out = Path(args.out or "benchmarks/invdiff_matrix.json")
    summary = run_matrix(layout, select_cells(args.cells), out, settings, args.stage, arms, args.wait)
    print(markdown_table(summary["cells"]))
    print(f"{summary['complete']} of {len(summary['cells'])} cells complete; {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    sys.exit(main())
