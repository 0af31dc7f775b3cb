"""InvDiff's two jobs on one config:

    accelerate launch -m invgen.train groups  --config configs/digits/invdiff.yaml   # max step
    accelerate launch -m invgen.train invdiff --config configs/digits/invdiff.yaml   # min step

`groups` writes `groups.safetensors` (weights N × G, per-sample losses) and `groups.json` (sizes, mean
losses and, where true labels exist, the separation) into `output_dir`; `invdiff` reads them, trains the
adapter with the base model frozen (never written to) and saves it with `save_pretrained` there.

Both work on every denoiser family (`invgen.models.denoisers`): the conditions come from the pipeline's
own `encode_prompt` and the loss is the one the denoiser was trained with (`DenoisingObjective`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from invgen.atomic import atomic_file, write_json
from invgen.config import dump_config
from invgen.data.imagefolder import ImageSet
from invgen.errors import InvgenDataError
from invgen.invdiff.config import InvDiffConfig
from invgen.invdiff.grouper import (
    fit_group_weights,
    harden,
    loss_table,
    oracle_weights,
    separation_report,
)
from invgen.invdiff.guidance import InvariantGuidance
from invgen.invdiff.levels import LEVEL_CRITERION, level_score, select_level
from invgen.invdiff.mixture import mixture_groups
from invgen.invdiff.objective import group_robust_loss
from invgen.models.denoisers import denoiser_of, pipeline_family
from invgen.train.data import encode_for_pipeline, prepare_dataset
from invgen.train.diffusion import DenoisingObjective, draw_noise
from invgen.train.loop import Trainer

GROUPS_WEIGHTS = "groups.safetensors"
GROUPS_REPORT = "groups.json"


def true_groups(image_set: ImageSet, attribute: str) -> np.ndarray | None:
    """True groups from metadata (1 = bias-conflicting for the boolean `bias_aligned`), if present."""
    if not image_set.has_attribute(attribute):
        return None
    values = image_set.attribute(attribute)
    if all(isinstance(v, bool) for v in values):
        return np.array([0 if v else 1 for v in values])
    uniq = sorted(set(values))
    return np.array([uniq.index(v) for v in values])


def infer_groups(cfg: InvDiffConfig) -> Path:
    """The max step; returns the output folder."""
    from accelerate import Accelerator

    g = cfg.groups
    out = Path(cfg.output_dir)
    accelerator = Accelerator(mixed_precision=cfg.train.mixed_precision)
    pipe = cfg.load_base_model()
    split = prepare_dataset(cfg.data, accelerator.is_main_process)
    accelerator.wait_for_everyone()
    data = encode_for_pipeline(pipe, split, cfg.data, accelerator, out)
    truth = true_groups(data.image_set, g.oracle_attribute)
    report_extra: dict = {"timesteps_requested": g.timesteps, "timesteps": g.timesteps}

    if g.source == "oracle":
        if truth is None:
            raise InvgenDataError(f"{split}: groups.source is oracle but the metadata has no '{g.oracle_attribute}'")
        losses = np.zeros(len(truth))
        weights = oracle_weights(truth, max(g.num_groups, int(truth.max()) + 1))
    else:
        losses, weights = _groups_from_losses(cfg, pipe, data, accelerator, report_extra)

    if accelerator.is_main_process:
        from safetensors.torch import save

        out.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, out / "invdiff_config.yaml")
        tensors = {"weights": torch.from_numpy(weights).float().contiguous(),
                   "losses": torch.from_numpy(losses).float().contiguous()}
        meta = {"file_names": json.dumps([r.file_name for r in data.image_set.records]), "source": g.source}
        with atomic_file(out / GROUPS_WEIGHTS, "wb") as f:
            f.write(save(tensors, metadata=meta))
        report = {"source": g.source, "n": len(weights), "family": pipeline_family(pipe), **report_extra,
                  **separation_report(losses, weights, truth)}
        write_json(out / GROUPS_REPORT, report)
        _print_groups(report)
    accelerator.wait_for_everyone()
    return out


def _groups_from_losses(cfg: InvDiffConfig, pipe, data, accelerator, report_extra: dict
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The max step proper: per-sample losses at the chosen level(s), then soft group weights from them.

    Records the levels, the level scan and the grouper's diagnostics in `report_extra`."""
    g = cfg.groups
    objective = DenoisingObjective.for_pipeline(pipe, cfg.objective.flow_matching)
    denoiser = denoiser_of(pipe).to(accelerator.device).eval()
    prompts = data.prompt_index.numpy()
    n = len(data.x0)
    per = -(-n // accelerator.num_processes)
    lo, hi = accelerator.process_index * per, min(n, (accelerator.process_index + 1) * per)

    def table(levels: list[int], draws: range) -> np.ndarray:
        # Each process scores a contiguous slice; the slices are gathered in order.
        with accelerator.autocast():
            part = loss_table(
                denoiser, objective, data.x0[lo:hi], data.embeddings, levels, draws, seed=g.seed,
                batch_size=g.batch_size, device=accelerator.device, progress=accelerator.is_main_process,
                index_offset=lo, prompt_index=data.prompt_index[lo:hi],
            )
        padded = torch.zeros((len(levels), len(draws), per), dtype=torch.float64)
        padded[:, :, : part.shape[2]] = torch.from_numpy(part)
        gathered = accelerator.gather(padded.permute(2, 0, 1).contiguous().to(accelerator.device))
        return gathered.cpu().numpy()[:n].transpose(1, 2, 0)

    if g.timesteps == "auto":
        # Draws are kept per level, so each round of the selector only computes the new ones, and the
        # chosen level's final losses reuse them all.
        kept: dict[int, np.ndarray] = {}

        def draws_at(t: int, d: int) -> np.ndarray:
            have = kept.get(t, np.zeros((0, n)))
            if len(have) < d:
                kept[t] = have = np.concatenate([have, table([t], range(len(have), d))[0]])
            return have[:d]

        levels, scan = select_level(lambda t, d: level_score(draws_at(t, d).mean(0), prompts)[0], objective,
                                    g.scan_levels, g.scan_draws, g.noise_draws)
        per_level = np.stack([draws_at(t, g.noise_draws).mean(0) for t in levels])
        report_extra["level_scan"] = {**scan, "criterion": LEVEL_CRITERION}
        report_extra["chosen_level"] = levels
    else:
        levels = list(g.timesteps)
        per_level = table(levels, range(g.noise_draws)).mean(1)
    losses = per_level.mean(0)
    report_extra["timesteps"] = levels
    if g.method == "mixture":
        weights, info = mixture_groups(per_level, prompts if g.standardize == "prompt" else None, g.num_groups)
    else:
        weights = fit_group_weights(losses, g.num_groups, g.balance, g.steps, g.learning_rate, g.seed)
        info = {"method": "spread"}
    report_extra["grouper"] = info
    if "warning" in info:
        report_extra["warning"] = info["warning"]
        if accelerator.is_main_process:
            print(f"warning: {info['warning']}")
    if g.assignment == "hard":
        weights = harden(weights)
    return losses, weights


def _print_groups(report: dict) -> None:
    line = f"groups ({report['source']}): sizes {report['group_sizes']}"
    if "loss_auc" in report:
        line += (f", loss ROC-AUC vs true bias-conflicting {report['loss_auc']:.3f},"
                 f" agreement {report['group_agreement']:.3f}")
    print(line)


def load_groups(out: Path, image_set: ImageSet) -> np.ndarray:
    from safetensors import SafetensorError, safe_open

    path = out / GROUPS_WEIGHTS
    if not path.is_file():
        raise InvgenDataError(f"{path} does not exist (run the max step first: python -m invgen.train groups)")
    try:
        with safe_open(str(path), "pt") as f:
            names = json.loads(f.metadata()["file_names"])
            weights = f.get_tensor("weights").numpy()
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as e:
        raise InvgenDataError(f"{path} is unreadable or corrupt ({e}); run groups again") from None
    if names != [r.file_name for r in image_set.records]:
        raise InvgenDataError(f"{path} was computed on another image set than {image_set.root}; run groups again")
    return weights


def train_invdiff(cfg: InvDiffConfig, resume: bool = False) -> Path:
    """The min step; returns the adapter folder."""
    out = Path(cfg.output_dir)
    pipe = cfg.load_base_model()
    denoiser = denoiser_of(pipe)
    if cfg.train.gradient_checkpointing:
        denoiser.enable_gradient_checkpointing()
    # The adapter's initial weights (LoRA A, residual/copy layers) come from the global RNG: seeded here, so a run
    # is reproducible from its config alone (a resume reads them from the checkpoint instead).
    torch.manual_seed(cfg.train.seed)
    guidance = InvariantGuidance.for_denoiser(denoiser, cfg.adapter, base_model=str(cfg.base_model))
    model, params = guidance.training_module(denoiser)
    trainer = Trainer(cfg.train, out, model, params, desc=f"invdiff ({cfg.adapter.kind})")
    trainer.start(resume)  # before minutes of encoding: a checkpoint that does not fit is refused first
    split = prepare_dataset(cfg.data, trainer.is_main)
    trainer.accelerator.wait_for_everyone()
    data = encode_for_pipeline(pipe, split, cfg.data, trainer.accelerator, out)
    weights = torch.from_numpy(load_groups(out, data.image_set)).float()
    objective = DenoisingObjective.for_pipeline(pipe, cfg.objective.flow_matching)

    n, bs = len(data.x0), cfg.train.batch_size
    if cfg.objective.balanced_sampling:
        probs = (weights / weights.sum(0, keepdim=True).clamp_min(1e-8)).sum(1)
        probs = probs / probs.sum()
    else:
        probs = torch.full((n,), 1.0 / n)

    def compute_loss(m, step, micro, gen):
        idx = torch.multinomial(probs, bs, replacement=True, generator=gen)
        x0 = data.x0[idx]
        levels = objective.draw_levels(bs, gen, tuple(x0.shape))
        noise = draw_noise(x0.shape, gen)
        x0, levels, noise, w = (trainer.shard(v) for v in (x0, levels, noise, weights[idx]))
        cond = {k: trainer.shard(v) for k, v in data.conditions(idx).items()}
        losses = objective.per_sample_loss(m, x0, cond, levels, noise)
        return group_robust_loss(losses, w, cfg.objective.lam, all_sum=trainer.all_sum)

    trainer.fit(compute_loss)
    if trainer.is_main:
        guidance.collect(trainer.unwrap())
        guidance.info = {
            "adapter_parameters": guidance.num_parameters(),
            "family": objective.family,
            "denoiser_parameters": sum(p.numel() for n_, p in denoiser.named_parameters() if "lora_" not in n_),
            "steps": cfg.train.steps,
            "groups": str(out / GROUPS_WEIGHTS),
        }
        guidance.save_pretrained(out)
    trainer.accelerator.wait_for_everyone()
    return out
