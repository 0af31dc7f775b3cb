"""Generate image sets reproducibly: every image has its own seed, whatever the batching or process split."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from invgen.errors import InvgenDataError, InvgenError, shown
from invgen.fingerprint import tensors_digest

# What a sampling folder is being filled with, and who fills it now (see "How a sampling run resumes" in
# docs/reliability.md).
MANIFEST = ".invgen-sample.json"
LOCK = ".invgen-sample.lock"
MANIFEST_FORMAT = "invgen-sample/1"
# Names this module writes: the images, the metadata, the manifest and their atomic-write temporaries.
_OWN_TEMP = re.compile(r"^\.(\d{6}\.png|metadata\.jsonl|\.invgen-sample\.json)\..*\.tmp$")


def image_seed(seed: int, index: int) -> int:
    return seed * 100_003 + index


@torch.no_grad()
def generate(
    pipe,
    prompts: Sequence[str],
    seeds: Sequence[int],
    batch_size: int = 256,
    progress: bool = True,
    desc: str = "sampling",
    **call_kwargs,
) -> np.ndarray:
    """Images (N, H, W, C) uint8 for `prompts[i]` from initial noise seeded by `seeds[i]`."""
    if len(prompts) != len(seeds):
        raise ValueError("one seed per prompt is needed")
    out = []
    pipe.set_progress_bar_config(disable=True)
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, disable=not progress, leave=False):
        batch = list(prompts[start : start + batch_size])
        gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds[start : start + batch_size]]
        images = pipe(batch, generator=gens, output_type="np", **call_kwargs).images
        out.append((np.asarray(images) * 255).round().astype(np.uint8))
    return np.concatenate(out)


def read_prompts(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise InvgenDataError(f"prompts file {shown(path)} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raw = path.read_bytes()
        line = raw.count(b"\n", 0, e.start) + 1
        raise InvgenDataError(
            f"prompts file {shown(path)} is not UTF-8 text (line {line}, byte {e.start + 1})"
        ) from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise InvgenDataError(f"prompts file {shown(path)} has no prompts (one per line)")
    return prompts


# ----------------------------------------------------------------------------------------------- job identity
def _plain_config(config: Any) -> Any:
    if isinstance(config, Mapping):
        # Private keys (`_name_or_path`, `_diffusers_version`) say where and with what it was saved, not what it does.
        return {k: v for k, v in config.items() if not str(k).startswith("_")}
    return None


def _adapter_state(module: torch.nn.Module) -> dict[str, Any]:
    """What changes a module's output without changing its own weights: invgen adapters attached to it (a hook
    and a scale, `invgen.invdiff.guidance`) and the scales and active set of peft's live LoRA layers."""
    state: dict[str, Any] = {}
    for name, entry in sorted((getattr(module, "_invgen_adapters", None) or {}).items()):
        guidance = entry.get("guidance")
        delta = getattr(guidance, "module", None)
        weights = delta.state_dict().items() if isinstance(delta, torch.nn.Module) else \
            (getattr(guidance, "lora_weights", None) or {}).items()
        state[f"invgen:{name}"] = {"kind": getattr(getattr(guidance, "adapter", None), "kind", None),
                                   "scale": entry.get("scale"), "weights": tensors_digest(sorted(weights))}
    for name, sub in module.named_modules():
        scaling = getattr(sub, "scaling", None)
        if isinstance(scaling, dict) and scaling:
            state[f"peft:{name}"] = [sorted(scaling.items()), list(getattr(sub, "active_adapters", []) or [])]
    return state


def pipeline_identity(pipe: Any) -> dict[str, Any]:
    """What a pipeline computes: each component's class, config and weights, and adapters attached to it."""
    components = getattr(pipe, "components", None) or {}
    desc: dict[str, Any] = {"class": type(pipe).__name__}
    for name, comp in sorted(components.items()):
        entry: dict[str, Any] = {"class": type(comp).__name__}
        config = _plain_config(getattr(comp, "config", None))
        if config is not None:
            entry["config"] = config
        if isinstance(comp, torch.nn.Module):
            # A folded LoRA shows here, in the weights; a hooked adapter or a live LoRA's scale only below.
            entry["weights"] = tensors_digest(
                [*comp.named_parameters(remove_duplicate=False), *comp.named_buffers(remove_duplicate=False)]
            )
            adapters = _adapter_state(comp)
            if adapters:
                entry["adapters"] = adapters
        desc[name] = entry
    return desc


def job_manifest(pipe: Any, prompts: Sequence[str], per_prompt: int, seed: int, call_kwargs: Mapping[str, Any],
                 info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of a sampling job: everything that determines its pixels, and their fingerprint.

    Batch size and process count are left out: they change neither the files nor the pixels.
    """
    job = {"pipeline": pipeline_identity(pipe), "prompts": list(prompts), "per_prompt": per_prompt, "seed": seed,
           "call": dict(call_kwargs)}
    fingerprint = hashlib.sha256(json.dumps(job, sort_keys=True, default=str).encode()).hexdigest()
    return {"format": MANIFEST_FORMAT, "fingerprint": fingerprint, "images": len(prompts) * per_prompt,
            "prompts": list(prompts), "per_prompt": per_prompt, "seed": seed,
            "call": json.loads(json.dumps(dict(call_kwargs), default=str)),
            "info": json.loads(json.dumps(dict(info or {}), default=str))}


def _difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """The first setting two manifests disagree on, for the refusal message."""
    for key in ("info", "call"):
        a, b = old.get(key) or {}, new.get(key) or {}
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return f"{k} {a.get(k)!r} there, {b.get(k)!r} now"
    for key in ("prompts", "per_prompt", "seed"):
        if old.get(key) != new.get(key):
            return "other prompts" if key == "prompts" else f"{key} {old.get(key)!r} there, {new.get(key)!r} now"
    return "other pipeline weights"


# ------------------------------------------------------------------------------------------------------ lock
def _holder(path: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        holder = json.loads(path.read_text(encoding="utf-8") or "{}")
        if isinstance(holder, dict):
            return holder
    return {}


def _busy(out: Path, holder: Mapping[str, Any]) -> InvgenDataError:
    who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
    return InvgenDataError(f"{shown(out)} is being filled by another sampling run ({who}); wait for it to end or "
                           "choose another --out")


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_by_pid(out: Path) -> int:
    """Where the file system has no `flock`: the lock file's pid must be alive on this host to hold it."""
    path = out / LOCK
    for _ in range(2):
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            holder = _holder(path)
            if holder.get("host") != socket.gethostname() or _pid_alive(holder.get("pid")):
                raise _busy(out, holder) from None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # stale: the process that wrote it is gone
    raise _busy(out, _holder(path))


def acquire_lock(out: Path) -> int:
    """Lock `out` for this job (one per job: only its main process calls this); returns the lock's descriptor.

    The lock is an `flock` on `out/.invgen-sample.lock`, so the kernel drops it when its process dies, however
    it dies: a lock file left by a killed run is taken over. The file records pid and host for the message.
    """
    path = out / LOCK
    try:
        import fcntl
    except ImportError:  # not POSIX
        fd = _lock_by_pid(out)
    else:
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise _busy(out, _holder(path)) from None
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                fd = _lock_by_pid(out)
                break
            try:
                current = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)  # the previous holder released and removed this file meanwhile: lock the new one
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
    return fd


def release_lock(out: Path, fd: int) -> None:
    # Removed while still held, so nobody can lock the old file after we let go of it.
    with contextlib.suppress(FileNotFoundError):
        (out / LOCK).unlink()
    os.close(fd)


# ---------------------------------------------------------------------------------------------- the folder
def _refuse_foreign(out: Path) -> None:
    """A folder without a manifest must hold nothing but a lock or temporary files of ours."""
    if not out.is_dir() or (out / MANIFEST).exists():
        return
    foreign = sorted(p.name for p in out.iterdir() if p.name != LOCK and not _OWN_TEMP.match(p.name))
    if foreign:
        raise InvgenDataError(f"{shown(out)} already holds files that invgen sample did not write "
                              f"({shown(foreign[0])}); choose an empty or new --out")


def _claim(out: Path, manifest: dict[str, Any], overwrite: bool) -> int:
    """Lock `out` and make sure it holds this job's images or none: returns the lock.

    A folder without a manifest must hold nothing (sampling never deletes what it did not write); one with
    another job's manifest is emptied of that job's files only with `overwrite`.
    """
    if out.exists() and not out.is_dir():
        raise InvgenDataError(f"{shown(out)} is a file, not a folder for the image set; choose another --out")
    _refuse_foreign(out)  # before the lock file is made in a folder that is not ours
    out.mkdir(parents=True, exist_ok=True)
    lock = acquire_lock(out)
    try:
        old = None
        _refuse_foreign(out)  # again, now that no other run can change the folder
        if (out / MANIFEST).is_file():
            try:
                old = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
            except ValueError:
                old = None
            if not isinstance(old, dict) or old.get("format") != MANIFEST_FORMAT:
                raise InvgenDataError(f"{shown(out / MANIFEST)} is not a sampling manifest invgen wrote; "
                                      "choose another --out")
        if old is not None and old.get("fingerprint") != manifest["fingerprint"]:
            if not overwrite:
                raise InvgenDataError(f"{shown(out)} holds images of another sampling job "
                                      f"({_difference(old, manifest)}); choose another --out, or pass --overwrite "
                                      "to replace them")
            own = {f"{i:06d}.png" for i in range(int(old.get("images", 0)))} | {"metadata.jsonl", MANIFEST}
            for p in out.iterdir():
                if p.name in own:
                    p.unlink()
            old = None
        for p in out.iterdir():
            if _OWN_TEMP.match(p.name):
                p.unlink()  # left by a killed run
        if old is None:
            from invgen.atomic import write_json

            write_json(out / MANIFEST, manifest)
        return lock
    except BaseException:
        release_lock(out, lock)
        raise


def _write_failure(out: Path, error: OSError) -> InvgenError:
    from invgen.atomic import write_error

    return write_error(out, error) or InvgenDataError(f"cannot write {shown(out)}: {error.strerror or error}")


def _share_outcome(state, error: str | None) -> str | None:
    """The main process's verdict for every process of the job (they all stop with the same sentence)."""
    if state.num_processes == 1:
        return error
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([error])[0]


def sample_to_imagefolder(
    pipe,
    prompts: Sequence[str],
    per_prompt: int,
    out: str | Path,
    seed: int = 0,
    batch_size: int = 64,
    info: dict | None = None,
    overwrite: bool = False,
    **call_kwargs,
) -> Path:
    """Generate `per_prompt` images per prompt into an imagefolder, resumably and across processes.

    Image i (prompt i // per_prompt) has its own seed, and images are generated in fixed global batches
    that processes take in turn, so 1 or N processes, or a resumed run, write the same files and pixels.
    Each PNG is written atomically; `metadata.jsonl` is written last, so a set with it is complete.

    The folder's manifest (`.invgen-sample.json`) fingerprints the job (`job_manifest`): a rerun of the same
    job resumes, skipping the batches whose images all exist; another job is refused (or, with `overwrite`,
    replaces this job's files), and so is a folder holding files sampling did not write. The job's main
    process holds a lock on the folder while it runs, so a concurrent run is refused too.
    """
    from invgen.data.imagefolder import ImageRecord, save_image, write_metadata
    from invgen.distributed import process_state

    if per_prompt <= 0:
        raise InvgenDataError(f"per_prompt must be positive, got {per_prompt}")
    state = process_state()
    out = Path(out)
    lock, error = None, None
    if state.is_main_process:
        try:
            manifest = job_manifest(pipe, prompts, per_prompt, seed, call_kwargs, info)
            lock = _claim(out, manifest, overwrite)
        except OSError as e:
            error = str(_write_failure(out, e))
        except InvgenError as e:
            error = str(e)
    error = _share_outcome(state, error)
    if error:
        raise InvgenDataError(error)
    try:
        n = len(prompts) * per_prompt
        all_prompts = [prompts[i // per_prompt] for i in range(n)]
        names = [f"{i:06d}.png" for i in range(n)]
        seeds = [image_seed(seed, i) for i in range(n)]
        batches = [range(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
        mine = batches[state.process_index :: state.num_processes]
        todo = [b for b in mine if not all((out / names[i]).is_file() for i in b)]
        pipe.set_progress_bar_config(disable=True)
        for b in tqdm(todo, desc="sampling", disable=not state.is_main_process):
            images = generate(pipe, [all_prompts[i] for i in b], [seeds[i] for i in b], batch_size=len(b),
                              progress=False, **call_kwargs)
            for i, image in zip(b, images, strict=True):
                if not (out / names[i]).is_file():
                    save_image(image, out / names[i])
        state.wait_for_everyone()
        if state.is_main_process:
            extra = dict(info or {})
            records = [ImageRecord(names[i], all_prompts[i], extra={"seed": seeds[i], "index": i, **extra})
                       for i in range(n)]
            write_metadata(out, records)
        state.wait_for_everyone()
    except OSError as e:
        raise _write_failure(out, e) from None
    finally:
        if lock is not None:
            release_lock(out, lock)
    return out
