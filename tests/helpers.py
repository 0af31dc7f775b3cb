"""Builders shared by several test files (imported as `helpers`; pytest puts tests/ on the path)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from invgen.data.imagefolder import ImageRecord, write_imagefolder

RGB = {"red": (235, 45, 45), "green": (45, 215, 60)}  # the "two" palette, read exactly by the oracle
P3, P5 = "a photo of the digit 3", "a photo of the digit 5"


def tree_hash(root: Path) -> dict[str, str]:
    """Every file and folder under `root` (hidden ones too): relative path -> sha256 of its bytes ("dir")."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(Path(root).rglob("*"))}


def write_set(root, spec, size=8):
    """An imagefolder with one flat image per color listed under each prompt (unknown colors are black)."""
    images, records = [], []
    for prompt, colors in spec.items():
        for c in colors:
            images.append(np.full((size, size, 3), RGB.get(c, (0, 0, 0)), dtype=np.uint8))
            records.append(ImageRecord(f"{len(records):03d}.png", prompt, attributes={"color": c}))
    return write_imagefolder(root, images, records)


def tiny_open_clip(folder):
    """A tiny random open_clip model saved as a local folder; its state dict also goes to ../weights.pt."""
    import open_clip
    from safetensors.torch import save_file

    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    folder.mkdir(parents=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    torch.manual_seed(0)
    model = open_clip.CLIP(**cfg)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors"
    )
    torch.save(model.state_dict(), folder.parent / "weights.pt")
    return folder


def launch_two_cpu(args, cwd=None, timeout=600):
    """Run `args` (a script or `-m module` and its arguments) in two CPU processes joined over gloo.

    `accelerate launch --cpu --num_processes 2` starts a single process without mpirun; `--multi_gpu` with
    ACCELERATE_USE_CPU=1 starts two that `Accelerator` and `invgen.distributed.process_state` join.
    """
    import subprocess

    from invgen.distributed import cpu_launch_command

    cmd, env = cpu_launch_command(list(args), 2)
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def pixel_pipeline_with_adapter(root: Path, pipe_name: str = "pipe") -> Path:
    """A tiny pixel pipeline saved to `root/pipe_name` (weights jittered so its images have colors) and a residual
    adapter that changes its images saved to `root/adapter`; returns `root`."""
    from invgen.invdiff.adapter import AdapterConfig
    from invgen.invdiff.guidance import InvariantGuidance
    from invgen.models.loading import save_pipeline
    from invgen.pipelines import build_pixel_pipeline

    pipe = build_pixel_pipeline(seed=0)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in pipe.unet.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    save_pipeline(pipe, root / pipe_name)
    guidance = InvariantGuidance.for_denoiser(pipe.unet, AdapterConfig(kind="residual"),
                                              base_model=str(root / pipe_name))
    with torch.no_grad():  # a fresh adapter adds exactly 0: make it act
        for p in guidance.module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    guidance.save_pretrained(root / "adapter")
    return root
