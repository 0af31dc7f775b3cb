"""The training loop every invgen trainer shares, on accelerate.

What it guarantees:
- Reproducible batches: every step draws its batch, noise and timesteps from a generator seeded by
  (seed, step, micro-batch), so a resumed run sees exactly the data an uninterrupted run would, and N
  processes split the same global batch that one process would use (same effective batch size).
- Crash safety: `accelerator.save_state` writes each checkpoint to a temporary folder that is renamed
  into place once complete; `resume=True` continues from the newest complete checkpoint.
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

from invgen.atomic import atomic_dir, write_text
from invgen.config import check
from invgen.errors import InvgenTrainingError

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
        check(self.gradient_accumulation_steps > 0, f"{prefix}.gradient_accumulation_steps", "must be positive")
        check(self.checkpoint_every > 0, f"{prefix}.checkpoint_every", "must be positive")
        check(self.keep_checkpoints > 0, f"{prefix}.keep_checkpoints", "must be positive")
        known = ("constant", "constant_with_warmup", "linear", "cosine")
        check(self.lr_scheduler in known, f"{prefix}.lr_scheduler", f"must be one of {known}")


def step_generator(seed: int, step: int, micro: int = 0) -> torch.Generator:
    # Large odd multipliers keep (seed, step, micro) triples from colliding.
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 1_009 + micro) % (2**63 - 1))


def list_checkpoints(ckpt_root: Path) -> list[tuple[int, Path]]:
    if not ckpt_root.is_dir():
        return []
    found = []
    for p in ckpt_root.iterdir():
        m = CHECKPOINT_RE.match(p.name)
        if m and (p / "trainer_state.json").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


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
        self.accelerator.register_for_checkpointing(self.lr_scheduler)
        self.step = 0
        self.losses: list[float] = []

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
        # Decided together: a process that stopped alone would leave the others waiting in backward().
        finite = bool(torch.isfinite(loss.detach()).all())
        if self.accelerator.num_processes == 1:
            return finite
        flags = self.accelerator.reduce(torch.tensor([float(finite)], device=self.device), "sum")
        return int(flags.item()) == self.accelerator.num_processes

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        final = self.ckpt_root / f"checkpoint-{self.step}"
        tmp = self.ckpt_root / f".checkpoint-{self.step}.tmp"
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(tmp))
        self.accelerator.wait_for_everyone()
        if self.is_main:
            state = {"step": self.step, "losses": self.losses}
            (tmp / "trainer_state.json").write_text(json.dumps(state))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for _, old in list_checkpoints(self.ckpt_root)[: -self.cfg.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return final

    def resume(self) -> int:
        """Load the newest complete checkpoint, if any; returns the step to continue from."""
        if self.ckpt_root.is_dir() and self.is_main:
            for p in self.ckpt_root.glob(".checkpoint-*.tmp"):
                shutil.rmtree(p, ignore_errors=True)  # left by a run killed mid-write
        self.accelerator.wait_for_everyone()
        found = list_checkpoints(self.ckpt_root)
        if not found:
            return 0
        step, path = found[-1]
        self.accelerator.load_state(str(path))
        state = json.loads((path / "trainer_state.json").read_text())
        self.step, self.losses = int(state["step"]), list(state["losses"])
        self.accelerator.print(f"{self.desc}: resumed from {path} (step {self.step})")
        return self.step

    # ------------------------------------------------------------------ the loop
    def fit(
        self,
        compute_loss: Callable[[torch.nn.Module, int, int, torch.Generator], torch.Tensor],
        on_step: Callable[[int, float], None] | None = None,
    ) -> list[float]:
        cfg = self.cfg
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
            self.output_dir.mkdir(parents=True, exist_ok=True)
            _truncate_log(log_path, self.step)
        t0 = time.time()
        while self.step < cfg.steps:
            total = 0.0
            for micro in range(cfg.gradient_accumulation_steps):
                with self.accelerator.accumulate(self.model):
                    gen = step_generator(cfg.seed, self.step, micro)
                    loss = compute_loss(self.model, self.step, micro, gen)
                    if not self._all_finite(loss):
                        found = list_checkpoints(self.ckpt_root)
                        last = f"; the last good checkpoint is {found[-1][1]}" if found else ""
                        value = loss.item() if loss.numel() == 1 and not torch.isfinite(loss) else "nan or inf"
                        bar.close()  # so that the error is the last line printed
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
                    with open(log_path, "a") as f:
                        f.write(json.dumps({"step": self.step, "loss": avg, "time": time.time() - t0}) + "\n")
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self.save_checkpoint()
            if on_step is not None:
                on_step(self.step, mean)
        bar.close()
        self.model.eval()
        return self.losses
