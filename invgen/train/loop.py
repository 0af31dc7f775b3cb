"""The training loop every invgen trainer shares, on accelerate.

What it guarantees:
- Reproducible batches: every step draws its batch, noise and timesteps from a generator seeded by
  (seed, step, micro-batch), so a resumed run sees exactly the data an uninterrupted run would, and N
  processes split the same global batch that one process would use (same effective batch size).
  Dropout and anything else that draws from torch's global generator is reseeded the same way at every
  micro-batch, so a checkpoint needs no RNG state.
- Crash safety: each checkpoint is written to a temporary folder that is renamed into place once complete;
  `resume=True` continues from the newest complete checkpoint.
- Safe resume: a checkpoint holds safetensors and JSON only (invgen/train/checkpoint.py), checked whole
  against the model before anything is loaded; nothing in it is unpickled, so a planted file cannot run code.
- One run per folder: a fresh run refuses a folder that holds another run's checkpoints, so that a later
  resume cannot mix two runs.
- A NaN or infinite loss stops the run with a clear message, keeping the last good checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from invgen.atomic import atomic_dir, reporting_write_errors, write_text
from invgen.config import check, check_seed
from invgen.errors import InvgenConfigError, InvgenError, InvgenTrainingError, shown
from invgen.train.checkpoint import (
    PARTIAL_MARKER,
    Checkpoint,
    is_our_partial,
    is_ours,
    trainable_state,
    write_checkpoint,
)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 64
    learning_rate: float = 1e-3
    lr_scheduler: str = "cosine"
    warmup_steps: int = 50
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    gradient_accumulation_steps: int = 1
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    # Recompute UNet activations in the backward pass (diffusers' enable_gradient_checkpointing): less
    # memory for large models at 512 px, about 20% slower. The trainers that own a UNet apply it.
    gradient_checkpointing: bool = False
    seed: int = 0
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    log_every: int = 10

    def validate(self, prefix: str = "train") -> None:
        check(self.steps > 0, f"{prefix}.steps", f"must be positive, got {self.steps}")
        check(self.batch_size > 0, f"{prefix}.batch_size", f"must be positive, got {self.batch_size}")
        check(self.learning_rate > 0, f"{prefix}.learning_rate", f"must be positive, got {self.learning_rate}")
        check(self.warmup_steps >= 0, f"{prefix}.warmup_steps", "must be 0 or more")
        check(self.weight_decay >= 0, f"{prefix}.weight_decay", f"must be 0 or more, got {self.weight_decay}")
        check(self.max_grad_norm > 0, f"{prefix}.max_grad_norm", f"must be positive, got {self.max_grad_norm}")
        check(self.gradient_accumulation_steps > 0, f"{prefix}.gradient_accumulation_steps", "must be positive")
        check(self.checkpoint_every > 0, f"{prefix}.checkpoint_every", "must be positive")
        check(self.keep_checkpoints > 0, f"{prefix}.keep_checkpoints", "must be positive")
        known = ("constant", "constant_with_warmup", "linear", "cosine")
        check(self.lr_scheduler in known, f"{prefix}.lr_scheduler", f"must be one of {known}")
        check_seed(self.seed, f"{prefix}.seed")


def _step_seed(seed: int, step: int, micro: int) -> int:
    # Large odd multipliers keep (seed, step, micro) triples from colliding.
    return (seed * 1_000_003 + step * 1_009 + micro) % (2**63 - 1)


def step_generator(seed: int, step: int, micro: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(_step_seed(seed, step, micro))


def _global_seed(seed: int, step: int, micro: int) -> int:
    # Another stream than `step_generator`'s (dropout masks should not repeat the batch draws), within the
    # 32 bits numpy's seed accepts.
    return (_step_seed(seed, step, micro) * 6_364_136_223_846_793_005 + 1_442_695_040_888_963_407) % 2**32


def list_checkpoints(ckpt_root: Path, complete: bool = True) -> list[tuple[int, Path]]:
    """`(step, folder)` of the `checkpoint-N` folders under `ckpt_root`, oldest first; with `complete`, only
    those whose `trainer_state.json` (written last) exists."""
    if not ckpt_root.is_dir():
        return []
    found = []
    for p in ckpt_root.iterdir():
        m = CHECKPOINT_RE.match(p.name)
        if m and p.is_dir() and (not complete or (p / "trainer_state.json").is_file()):
            found.append((int(m.group(1)), p))
    return sorted(found)


def check_output_dir(path: Path) -> None:
    """One sentence, before anything is written, when `path` cannot be a run folder."""
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                raise InvgenConfigError(f"output_dir: {shown(parent)} is a file, not a folder")
            return


def _truncate_log(log_path: Path, step: int) -> None:
    """Keep the log lines up to `step`: a resumed run rewrites the steps a killed one logged past its checkpoint.

    Lines after the last checkpoint (and a line cut short by a kill) would otherwise appear twice, and a
    fresh run (`step` 0) starts a new log.
    """
    if not log_path.is_file():
        return
    kept = []
    for line in log_path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("step"), int) and entry["step"] <= step:
            kept.append(line + "\n")
    write_text(log_path, "".join(kept))


class Trainer:
    """Runs `compute_loss(model, step, micro, generator)` for `cfg.steps` optimizer steps."""

    def __init__(
        self,
        cfg: TrainConfig,
        output_dir: str | os.PathLike,
        model: torch.nn.Module,
        params: list[torch.nn.Parameter] | None = None,
        desc: str = "train",
        accelerator: Accelerator | None = None,
    ):
        self.cfg = cfg
        self.output_dir = Path(output_dir)
        self.ckpt_root = self.output_dir / "checkpoints"
        self.desc = desc
        self.accelerator = accelerator or Accelerator(
            mixed_precision=cfg.mixed_precision,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        )
        set_seed(cfg.seed)
        params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
        if not params:
            raise InvgenTrainingError(f"{desc}: the model has no trainable parameters")
        self.num_trainable = sum(p.numel() for p in params)
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        from diffusers.optimization import get_scheduler

        # Not passed to `prepare`: accelerate would step it once per process, and N processes must
        # follow the same schedule as one.
        self.lr_scheduler = get_scheduler(
            cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.steps
        )
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self._trainable = {id(p) for p in params}
        self.step = 0
        self.losses: list[float] = []
        self._started = False

    # ------------------------------------------------------------------ distributed helpers
    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """This process's slice of a global batch (all processes drew the same global batch)."""
        n, r = self.accelerator.num_processes, self.accelerator.process_index
        if len(x) % n:
            raise InvgenTrainingError(f"batch size {len(x)} is not divisible by {n} processes")
        k = len(x) // n
        return x[r * k : (r + 1) * k].to(self.device)

    def all_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Σ of `x` over processes, for losses that are not a mean of per-sample terms (group means).

        The value is the global sum on every process; the gradient is N times this process's own part, so
        DDP's average over N processes gives exactly the gradient of the global sum, as one process would.
        """
        n = self.accelerator.num_processes
        if n == 1:
            return x
        total = self.accelerator.reduce(x.detach().clone(), "sum")
        return n * x + (total - n * x).detach()

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def unwrap(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def save_model(self, path: str | os.PathLike) -> Path:
        """`save_pretrained` of the trained model into `path`, atomically, by the main process only."""
        path = Path(path)
        if self.is_main:
            with atomic_dir(path) as tmp:
                self.unwrap().save_pretrained(tmp)
        self.accelerator.wait_for_everyone()
        return path

    def _all_finite(self, loss: torch.Tensor) -> bool:
        return self._agree(bool(torch.isfinite(loss.detach()).all()))

    def _agree(self, ok: bool) -> bool:
        """Whether `ok` holds in every process. Decided together: a process that stopped alone would leave the
        others waiting in backward() or at the next barrier."""
        if self.accelerator.num_processes == 1:
            return ok
        flags = self.accelerator.reduce(torch.tensor([float(ok)], device=self.device), "sum")
        return int(flags.item()) == self.accelerator.num_processes

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_parts(self) -> tuple[dict[str, torch.Tensor], object, object, object]:
        scaler = getattr(self.accelerator, "scaler", None)
        return trainable_state(self.unwrap(), self._trainable), self.optimizer, self.lr_scheduler, scaler

    def save_checkpoint(self) -> Path:
        """Write `checkpoints/checkpoint-{step}` (main process), atomically; keep the newest `keep_checkpoints`."""
        final = self.ckpt_root / f"checkpoint-{self.step}"
        tmp = self.ckpt_root / f".checkpoint-{self.step}.tmp"
        self.accelerator.wait_for_everyone()
        error: InvgenError | None = None
        if self.is_main:
            try:
                with reporting_write_errors(final):
                    self._write_checkpoint(tmp, final)
            except InvgenError as e:
                error = e
        if not self._agree(error is None):
            raise error or InvgenTrainingError(f"{self.desc}: the main process could not write {shown(final)}")
        return final

    def _write_checkpoint(self, tmp: Path, final: Path) -> None:
        for stale in (tmp, final):
            if stale.exists() and not (is_our_partial(stale) or is_ours(stale)):
                raise InvgenTrainingError(f"{shown(stale)} is in the way of a checkpoint and was not made by invgen; "
                                          "move it away")
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            (tmp / PARTIAL_MARKER).touch()
            weights, optimizer, scheduler, scaler = self._checkpoint_parts()
            write_checkpoint(tmp, weights, optimizer.state_dict(), scheduler.state_dict(),
                             scaler.state_dict() if scaler is not None else None, self.step, self.losses)
            (tmp / PARTIAL_MARKER).unlink()
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # made by this call: ours whatever it holds
            raise
        for _, old in list_checkpoints(self.ckpt_root)[: -self.cfg.keep_checkpoints]:
            if is_ours(old):  # another tool's folder of that name stays
                shutil.rmtree(old, ignore_errors=True)

    def start(self, resume: bool) -> int:
        """Begin the run: with `resume`, load the newest checkpoint (`resume()`); without, refuse a folder that
        holds another run's checkpoints, so that a later resume cannot mix two runs. Returns the first step.

        Trainers call this (through `start_run`) before writing anything into the run folder; `fit` calls it
        for those that did not.
        """
        if self._started:
            return self.step
        check_output_dir(self.output_dir)
        if resume:
            return self.resume()
        found = list_checkpoints(self.ckpt_root, complete=False)
        if found:
            raise InvgenTrainingError(
                f"{shown(self.ckpt_root)} holds checkpoints of an earlier run (newest: {found[-1][1].name}): pass "
                "--resume to continue it, or move that folder away to start afresh"
            )
        self._started = True
        return 0

    def resume(self) -> int:
        """Load the newest complete checkpoint, if any; returns the step to continue from.

        The checkpoint is checked whole before anything is loaded (see invgen/train/checkpoint.py); one that
        is damaged, altered, of another model or in the old pickle format is refused with one sentence.
        """
        if self._started:
            return self.step
        check_output_dir(self.output_dir)
        if self.ckpt_root.is_dir() and self.is_main:
            for p in self.ckpt_root.glob(".checkpoint-*.tmp"):
                if p.is_dir() and (is_our_partial(p) or is_ours(p)):  # left by a run killed mid-write
                    shutil.rmtree(p, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        self._started = True
        found = list_checkpoints(self.ckpt_root)
        if not found:
            return 0
        _, path = found[-1]
        parts = self._checkpoint_parts()
        checkpoint = Checkpoint(path, *parts)
        checkpoint.apply(*parts)
        self.step, self.losses = checkpoint.step, checkpoint.losses
        # accelerate counts micro-batches to know when gradients are accumulated: as if it had run them.
        self.accelerator.step = self.step * self.cfg.gradient_accumulation_steps
        self.accelerator.print(f"{self.desc}: resumed from {path} (step {self.step})")
        return self.step

    # ------------------------------------------------------------------ the loop
    def fit(
        self,
        compute_loss: Callable[[torch.nn.Module, int, int, torch.Generator], torch.Tensor],
        on_step: Callable[[int, float], None] | None = None,
    ) -> list[float]:
        cfg = self.cfg
        self.start(resume=False)
        self.model.train()
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            desc=self.desc,
            disable=not self.is_main,
            dynamic_ncols=True,
        )
        log_path = self.output_dir / "train_log.jsonl"
        if self.is_main:
            with reporting_write_errors(self.output_dir):
                self.output_dir.mkdir(parents=True, exist_ok=True)
            _truncate_log(log_path, self.step)
        t0 = time.time()
        try:
            while self.step < cfg.steps:
                total = 0.0
                for micro in range(cfg.gradient_accumulation_steps):
                    with self.accelerator.accumulate(self.model):
                        set_seed(_global_seed(cfg.seed, self.step, micro))
                        gen = step_generator(cfg.seed, self.step, micro)
                        loss = compute_loss(self.model, self.step, micro, gen)
                        if not self._all_finite(loss):
                            found = list_checkpoints(self.ckpt_root)
                            last = f"; the last good checkpoint is {found[-1][1]}" if found else ""
                            value = loss.item() if loss.numel() == 1 and not torch.isfinite(loss) else "nan or inf"
                            raise InvgenTrainingError(
                                f"{self.desc}: the loss became {value} at step {self.step}{last} "
                                "(try a lower learning_rate or mixed_precision=no)"
                            )
                        self.accelerator.backward(loss)
                        if self.accelerator.sync_gradients and cfg.max_grad_norm > 0:
                            self.accelerator.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                        self.optimizer.step()
                        self.optimizer.zero_grad(set_to_none=True)
                    total += loss.detach().float().item() / cfg.gradient_accumulation_steps
                self.lr_scheduler.step()
                # The logged loss is the mean over processes, the figure one process would see.
                mean = self.accelerator.reduce(torch.tensor([total], device=self.device), "mean").item()
                self.losses.append(mean)
                self.step += 1
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    recent = self.losses[-cfg.log_every :]
                    avg = sum(recent) / len(recent)
                    bar.set_postfix(loss=f"{avg:.4f}", lr=f"{self.lr_scheduler.get_last_lr()[0]:.2e}")
                    if self.is_main:
                        with reporting_write_errors(log_path), open(log_path, "a") as f:
                            f.write(json.dumps({"step": self.step, "loss": avg, "time": time.time() - t0}) + "\n")
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.save_checkpoint()
                if on_step is not None:
                    on_step(self.step, mean)
        finally:
            bar.close()  # before an error propagates, so that its message is the last line printed
        self.model.eval()
        return self.losses
