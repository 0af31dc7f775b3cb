"""Training checkpoints that load without running code: safetensors and JSON only, no pickle.

A checkpoint folder `checkpoint-N` holds:
- `model.safetensors`: the trainable parameters and the buffers (BatchNorm statistics) of the model. Frozen
  weights are not stored: they come from the config or the base model, as in the run that wrote it.
- `optimizer.safetensors` and `optimizer.json`: the optimizer's state tensors (AdamW's moments and step
  counts), and its parameter groups and any non-tensor state.
- `scheduler.json`: the learning-rate scheduler's state (numbers only; its schedule is rebuilt from the config).
- `scaler.json`: the fp16 gradient scaler's state, when the run has one.
- `trainer_state.json`, written last: the format, the step, the logged losses, and a manifest with the size
  and SHA-256 of every other file, so that a truncated or altered file is refused before it is read.

No RNG state is stored: every step draws from generators seeded by (seed, step, micro-batch) (`Trainer.fit`).
A checkpoint is checked whole (manifest, every file, every shape against the model and optimizer) before
anything is loaded into them, so a refused checkpoint leaves the run untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from invgen.atomic import current_umask
from invgen.errors import InvgenTrainingError, shown

FORMAT = "invgen.checkpoint"
VERSION = 1
MODEL = "model.safetensors"
OPTIMIZER = "optimizer.safetensors"
OPTIMIZER_JSON = "optimizer.json"
SCHEDULER = "scheduler.json"
SCALER = "scaler.json"
STATE = "trainer_state.json"
# Written first into a checkpoint's temporary folder: what lets a later run delete that folder as its own.
PARTIAL_MARKER = ".invgen-partial-checkpoint"


def trainable_state(model: torch.nn.Module, trainable: set[int]) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint keeps: parameters in `trainable` (by id) and every persistent buffer."""
    return {
        name: t
        for name, t in model.state_dict(keep_vars=True).items()
        if not isinstance(t, torch.nn.Parameter) or id(t) in trainable
    }


def _cpu_copy(t: torch.Tensor) -> torch.Tensor:
    # A copy, so that tied weights do not share storage (which safetensors refuses).
    return t.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, allow_nan=False) + "\n")


def write_checkpoint(
    folder: Path,
    model_state: Mapping[str, torch.Tensor],
    optimizer_state: dict,
    scheduler_state: dict,
    scaler_state: dict | None,
    step: int,
    losses: list[float],
) -> None:
    """Write every file of a checkpoint into `folder`, `trainer_state.json` last. `folder` is a temporary folder
    (holding `PARTIAL_MARKER`, which the caller removes before renaming it into place)."""
    save_file({k: _cpu_copy(v) for k, v in model_state.items()}, folder / MODEL, metadata={"format": FORMAT})
    tensors, rest = {}, {}
    for index, entries in optimizer_state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = _cpu_copy(value)
            else:
                rest.setdefault(str(index), {})[name] = value
    save_file(tensors, folder / OPTIMIZER, metadata={"format": FORMAT})
    _json(folder / OPTIMIZER_JSON, {"param_groups": optimizer_state["param_groups"], "state": rest})
    _json(folder / SCHEDULER, scheduler_state)
    if scaler_state is not None:
        _json(folder / SCALER, scaler_state)
    files = {}
    for p in sorted(folder.iterdir()):
        if p.name != PARTIAL_MARKER:
            os.chmod(p, 0o666 & ~current_umask())  # safetensors makes its files private (0600)
            files[p.name] = {"bytes": p.stat().st_size, "sha256": _sha256(p)}
    _json(folder / STATE, {"format": FORMAT, "version": VERSION, "step": step, "losses": losses, "files": files})


def is_ours(folder: Path) -> bool:
    """Whether `folder` is a checkpoint this module wrote (so rotation may delete it)."""
    try:
        return json.loads((folder / STATE).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def is_our_partial(folder: Path) -> bool:
    """Whether `folder` is the temporary folder of a checkpoint write that was cut short: ours to delete."""
    try:
        return not any(folder.iterdir()) or (folder / PARTIAL_MARKER).is_file()
    except OSError:
        return False


class Checkpoint:
    """A checkpoint read and checked against the model and optimizer it is to be loaded into.

    Every check runs in the constructor; `apply` then only copies, so a refused checkpoint changes nothing.
    Each refusal is one `InvgenTrainingError` sentence naming the checkpoint folder.
    """

    def __init__(self, folder: Path, model_state: Mapping[str, torch.Tensor], optimizer, scheduler, scaler):
        self.folder = folder
        state = self._read_state()
        self.step: int = state["step"]
        self.losses: list[float] = [float(x) for x in state["losses"]]
        self.weights = self._read_weights(model_state)
        self.optimizer_state = self._read_optimizer(optimizer)
        self.scheduler_state = self._read_numbers(SCHEDULER, scheduler.state_dict())
        self.scaler_state = None
        if scaler is not None and (folder / SCALER).is_file():
            self.scaler_state = self._read_numbers(SCALER, scaler.state_dict())

    # ------------------------------------------------------------------ refusals
    def _damaged(self, what: str) -> InvgenTrainingError:
        return InvgenTrainingError(
            f"checkpoint {shown(self.folder)} is damaged ({what}); remove it to resume from the one before"
        )

    def _other_model(self, what: str) -> InvgenTrainingError:
        return InvgenTrainingError(
            f"checkpoint {shown(self.folder)} was written for another model ({what}); resume with the config it "
            f"was trained with ({shown(self.folder.parent.parent / 'train_config.yaml')}) or use another output_dir"
        )

    # ------------------------------------------------------------------ reading
    def _read_state(self) -> dict:
        path = self.folder / STATE
        try:
            state = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise self._damaged(f"{STATE} is unreadable: {type(e).__name__}") from None
        if not isinstance(state, dict):
            raise self._damaged(f"{STATE} is not a JSON object")
        if state.get("format") != FORMAT:
            # accelerate's `save_state` (what invgen wrote before) stores pickles, which can run code on load.
            raise InvgenTrainingError(
                f"checkpoint {shown(self.folder)} is not in invgen's pickle-free format and is not loaded (its "
                "files could run code); move the checkpoints folder away to start afresh"
            )
        if state.get("version") != VERSION:
            raise InvgenTrainingError(
                f"checkpoint {shown(self.folder)} has format version {state.get('version')!r}, this invgen "
                f"reads version {VERSION}"
            )
        files = state.get("files")
        step, losses = state.get("step"), state.get("losses")
        if (
            not isinstance(files, dict)
            or not isinstance(step, int)
            or self.folder.name != f"checkpoint-{step}"
            or not isinstance(losses, list)
            or len(losses) != step
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in losses)
        ):
            raise self._damaged(f"{STATE} does not describe this checkpoint")
        expected = set(files) | {STATE}
        for p in sorted(self.folder.iterdir()):
            if p.name not in expected:
                raise InvgenTrainingError(
                    f"checkpoint {shown(self.folder)} holds {shown(p.name)}, a file invgen did not write there, "
                    "and is not loaded (a planted file could run code); remove that file to resume"
                )
        for name in (MODEL, OPTIMIZER, OPTIMIZER_JSON, SCHEDULER):
            if name not in files:
                raise self._damaged(f"{name} is missing from its manifest")
        for name, entry in files.items():
            path = self.folder / name
            if Path(name).name != name or name in (".", "..", STATE):  # only files of this folder
                raise self._damaged(f"its manifest names {shown(name)}")
            if not isinstance(entry, dict) or not path.is_file():
                raise self._damaged(f"{shown(name)} is missing")
            if path.stat().st_size != entry.get("bytes") or _sha256(path) != entry.get("sha256"):
                raise self._damaged(f"{shown(name)} is truncated or changed since it was written")
        return state

    def _load_tensors(self, name: str) -> dict[str, torch.Tensor]:
        try:
            return load_file(self.folder / name)
        except (SafetensorError, OSError, ValueError) as e:
            raise self._damaged(f"{name} is unreadable: {type(e).__name__}") from None

    def _load_json(self, name: str) -> Any:
        try:
            return json.loads((self.folder / name).read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise self._damaged(f"{name} is unreadable: {type(e).__name__}") from None

    def _read_weights(self, model_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        weights = self._load_tensors(MODEL)
        missing, extra = sorted(set(model_state) - set(weights)), sorted(set(weights) - set(model_state))
        if missing or extra:
            name = (missing or extra)[0]
            where = "only in this model" if missing else "only in the checkpoint"
            raise self._other_model(f"{len(missing) + len(extra)} weights differ, e.g. {name!r}: {where}")
        for name, t in model_state.items():
            w = weights[name]
            if w.shape != t.shape or w.dtype != t.dtype:
                raise self._other_model(
                    f"{name!r} is {tuple(w.shape)} {w.dtype} in the checkpoint, {tuple(t.shape)} {t.dtype} here"
                )
        return weights

    def _read_optimizer(self, optimizer) -> dict:
        tensors = self._load_tensors(OPTIMIZER)
        meta = self._load_json(OPTIMIZER_JSON)
        current = optimizer.state_dict()["param_groups"]
        groups = meta.get("param_groups") if isinstance(meta, dict) else None
        rest = meta.get("state") if isinstance(meta, dict) else None
        if not isinstance(groups, list) or not isinstance(rest, dict) or len(groups) != len(current):
            raise self._other_model(f"{OPTIMIZER_JSON} has other parameter groups than this optimizer")
        params = [p for group in optimizer.param_groups for p in group["params"]]
        restored = []
        for saved, now in zip(groups, current, strict=True):
            if not isinstance(saved, dict) or saved.get("params") != now["params"]:
                raise self._other_model(f"{OPTIMIZER_JSON}: a parameter group holds other parameters")
            # JSON has no tuples; give back the types the optimizer uses (AdamW's `betas`).
            restored.append({k: tuple(v) if isinstance(now.get(k), tuple) and isinstance(v, list) else v
                             for k, v in saved.items()})
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            _, index, name = (key.split(".", 2) + ["", ""])[:3]
            if not index.isdigit() or int(index) >= len(params) or not name:
                raise self._damaged(f"{OPTIMIZER} has an unknown entry {key!r}")
            param = params[int(index)]
            if value.ndim and value.shape != param.shape:
                raise self._other_model(f"{OPTIMIZER}: {key!r} is {tuple(value.shape)}, its weight "
                                        f"{tuple(param.shape)}")
            state.setdefault(int(index), {})[name] = value
        for index, entries in rest.items():
            if not str(index).isdigit() or int(index) >= len(params) or not isinstance(entries, dict):
                raise self._damaged(f"{OPTIMIZER_JSON} has an unknown entry {index!r}")
            state.setdefault(int(index), {}).update(entries)
        return {"state": state, "param_groups": restored}

    def _read_numbers(self, name: str, current: dict) -> dict:
        """A JSON state of numbers whose keys and value kinds match `current` (the object's own state)."""
        saved = self._load_json(name)
        if not isinstance(saved, dict) or set(saved) != set(current):
            raise self._damaged(f"{name} does not match this run's {name.split('.')[0]}")
        for key, now in current.items():
            if not _same_kind(saved[key], now):
                raise self._damaged(f"{name}: {key!r} is {saved[key]!r}")
        return saved

    # ------------------------------------------------------------------ loading
    def apply(self, model_state: Mapping[str, torch.Tensor], optimizer, scheduler, scaler) -> None:
        with torch.no_grad():
            for name, t in model_state.items():
                t.copy_(self.weights[name])
        optimizer.load_state_dict(self.optimizer_state)
        scheduler.load_state_dict(self.scheduler_state)
        if self.scaler_state is not None:
            scaler.load_state_dict(self.scaler_state)


def _same_kind(saved: Any, now: Any) -> bool:
    """Whether a JSON value can stand for `now`: None, a flag, an integer, a number, or a list of those."""
    if now is None:
        return saved is None
    if isinstance(now, bool):
        return isinstance(saved, bool)
    if isinstance(saved, bool):
        return False
    if isinstance(now, int):
        return isinstance(saved, int)
    if isinstance(now, float):
        return isinstance(saved, (int, float))
    if isinstance(now, (list, tuple)):
        return isinstance(saved, list) and len(saved) == len(now) and all(map(_same_kind, saved, now))
    return False


__all__ = ["Checkpoint", "FORMAT", "is_our_partial", "is_ours", "trainable_state", "write_checkpoint"]
