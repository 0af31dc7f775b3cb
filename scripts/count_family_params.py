"""Sizes of the published denoisers and what an InvDiff LoRA step on them costs, without any weights.

Each architecture is built from its published config with `accelerate.init_empty_weights` (parameters on the
meta device, so nothing is allocated) and run once on meta tensors at batch 1, at the resolution of its family's
recipe (`RECIPES`):

- parameters: counted exactly from the module tree;
- LoRA parameters at the recipe's rank: every layer peft's own matching rule selects for the recipe's targets
  (unset: the family default in invgen/invdiff/adapter.py), and for the attention projections alone;
- forward FLOPs: `torch.utils.flop_counter.FlopCounterMode` over that meta forward;
- activation memory: the bytes autograd saves in that forward (`saved_tensors_hooks`), with diffusers'
  gradient checkpointing routed through a recorder so the checkpointed blocks' inputs and the largest
  block's recomputation are known separately.

Memory and time per step are then ESTIMATES (see `estimate`): they assume bf16 frozen weights, fp32 LoRA
weights with AdamW and a sustained throughput, none of which is measured here.

    .venv/bin/python scripts/count_family_params.py            # writes benchmarks/family_params.json
"""

from __future__ import annotations

import argparse
import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

# Each family's CelebA recipe gives the LoRA rank, its targets (unset: the family default) and the resolution.
RECIPES = {
    "sd": "configs/sd15/invdiff_celeba.yaml",
    "sdxl": "configs/sdxl/invdiff_celeba.yaml",
    "sd3": "configs/sd3/invdiff_celeba.yaml",
    "flux": "configs/flux/invdiff_celeba.yaml",
}
# Sustained bf16 throughput assumed for the time estimate: 40% of the dense peak (989 and 312 TFLOP/s).
THROUGHPUT_TFLOPS = {"H100 SXM": 0.4 * 989, "A100": 0.4 * 312}
ATTENTION_TARGETS = {
    "unet": ["to_q", "to_k", "to_v", "to_out.0"],
    "dit": ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"],
}

# The published configs (the fields that differ from the diffusers class defaults are all given).
SD15_UNET = dict(  # stable-diffusion-v1-5/stable-diffusion-v1-5, unet/config.json
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
)
SDXL_UNET = dict(  # stabilityai/stable-diffusion-xl-base-1.0, unet/config.json
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32,
)
_SD3_COMMON = dict(sample_size=128, patch_size=2, in_channels=16, out_channels=16, attention_head_dim=64,
                   joint_attention_dim=4096, pooled_projection_dim=2048)
SD3_MEDIUM = dict(  # stabilityai/stable-diffusion-3-medium-diffusers, transformer/config.json
    _SD3_COMMON, num_layers=24, num_attention_heads=24, caption_projection_dim=1536, pos_embed_max_size=192)
SD35_MEDIUM = dict(  # stabilityai/stable-diffusion-3.5-medium, transformer/config.json
    _SD3_COMMON, num_layers=24, num_attention_heads=24, caption_projection_dim=1536, pos_embed_max_size=384,
    dual_attention_layers=tuple(range(13)), qk_norm="rms_norm")
SD35_LARGE = dict(  # stabilityai/stable-diffusion-3.5-large, transformer/config.json
    _SD3_COMMON, num_layers=38, num_attention_heads=38, caption_projection_dim=2432, pos_embed_max_size=192,
    qk_norm="rms_norm")
FLUX_DEV = dict(  # black-forest-labs/FLUX.1-dev, transformer/config.json
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
    axes_dims_rope=(16, 56, 56))

# (name, family, class, config, source)
ARCHITECTURES = [
    ("SD 1.5", "sd", "UNet2DConditionModel", SD15_UNET, "stable-diffusion-v1-5/stable-diffusion-v1-5"),
    ("SDXL base 1.0", "sdxl", "UNet2DConditionModel", SDXL_UNET, "stabilityai/stable-diffusion-xl-base-1.0"),
    ("SD3 medium", "sd3", "SD3Transformer2DModel", SD3_MEDIUM, "stabilityai/stable-diffusion-3-medium-diffusers"),
    ("SD3.5 medium", "sd3", "SD3Transformer2DModel", SD35_MEDIUM, "stabilityai/stable-diffusion-3.5-medium"),
    ("SD3.5 large", "sd3", "SD3Transformer2DModel", SD35_LARGE, "stabilityai/stable-diffusion-3.5-large"),
    ("FLUX.1-dev", "flux", "FluxTransformer2DModel", FLUX_DEV, "black-forest-labs/FLUX.1-dev"),
]

# The other parts of those pipelines, for memory if they are kept on the GPU (invgen caches the prompt
# conditions and image latents before training, so they need not be).
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu")
CLIP_BIGG = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                 num_attention_heads=20, max_position_embeddings=77, projection_dim=1280, hidden_act="gelu")
T5_XXL = dict(vocab_size=32128, d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24,
              feed_forward_proj="gated-gelu")
VAE_4 = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
             down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
VAE_16 = dict(VAE_4, latent_channels=16, use_quant_conv=False, use_post_quant_conv=False)
PIPELINE_PARTS = {
    "sd": ["clip_l", "vae_4ch"],
    "sdxl": ["clip_l", "clip_bigg", "vae_4ch"],
    "sd3": ["clip_l", "clip_bigg", "t5_xxl_encoder", "vae_16ch"],
    "flux": ["clip_l", "t5_xxl_encoder", "vae_16ch"],
}


def build(class_name: str, config: dict[str, Any]) -> nn.Module:
    import diffusers
    from accelerate import init_empty_weights

    # Buffers too (SD3's positional table): the meta forward needs every tensor on one device.
    with init_empty_weights(include_buffers=True):
        return getattr(diffusers, class_name)(**config)


def other_parts() -> dict[str, int]:
    import diffusers
    from accelerate import init_empty_weights
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    with init_empty_weights():
        parts = {
            "clip_l": CLIPTextModel(CLIPTextConfig(**CLIP_L)),
            "clip_bigg": CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_BIGG)),
            "t5_xxl_encoder": T5EncoderModel(T5Config(**T5_XXL)),
            "vae_4ch": diffusers.AutoencoderKL(**VAE_4),
            "vae_16ch": diffusers.AutoencoderKL(**VAE_16),
        }
    for module in parts.values():
        if hasattr(module, "tie_weights"):  # T5's input embedding is shared; the meta init leaves it untied
            module.tie_weights()
    return {name: count(m) for name, m in parts.items()}


def recipe(family: str) -> dict[str, Any]:
    import yaml

    cfg = yaml.safe_load(Path(RECIPES[family]).read_text())
    adapter = cfg.get("adapter", {})
    return {"path": RECIPES[family], "rank": int(adapter.get("rank", 4)),
            "target_modules": adapter.get("target_modules"), "resolution": int(cfg["data"]["size"])}


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def lora_size(denoiser: nn.Module, targets: list[str]) -> dict[str, int]:
    """Layers a LoRA on `targets` wraps (peft's matching rule) and its parameters per unit of rank."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    config = LoraConfig(target_modules=targets)
    layers, per_rank = 0, 0
    for name, module in denoiser.named_modules():
        if not name or not check_target_module_exists(config, name):
            continue
        if isinstance(module, nn.Linear):
            per_rank += module.in_features + module.out_features
        elif isinstance(module, nn.Conv2d):
            per_rank += module.in_channels * module.kernel_size[0] * module.kernel_size[1] + module.out_channels
        else:
            continue
        layers += 1
    return {"layers": layers, "parameters_per_rank": per_rank}


def meta_inputs(family: str, config: dict[str, Any], resolution: int) -> dict[str, Any]:
    """One batch-1 call at `resolution` px, with the text lengths each pipeline uses by default."""
    side = resolution // 8  # every VAE here downsamples 8x
    meta = {"device": "meta", "dtype": torch.bfloat16}
    t = torch.ones(1, **meta)
    if family in ("sd", "sdxl"):
        x = torch.randn(1, config["in_channels"], side, side, **meta)
        kwargs = {"sample": x, "timestep": t,
                  "encoder_hidden_states": torch.randn(1, 77, config["cross_attention_dim"], **meta)}
        if family == "sdxl":
            pooled = config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
            kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(1, pooled, **meta),
                                           "time_ids": torch.ones(1, 6, **meta)}
        return kwargs
    if family == "sd3":  # 77 CLIP tokens followed by 256 T5 tokens
        return {"hidden_states": torch.randn(1, config["in_channels"], side, side, **meta), "timestep": t,
                "encoder_hidden_states": torch.randn(1, 77 + 256, config["joint_attention_dim"], **meta),
                "pooled_projections": torch.randn(1, config["pooled_projection_dim"], **meta)}
    tokens = (side // 2) ** 2  # Flux packs 2x2 latent patches
    return {"hidden_states": torch.randn(1, tokens, config["in_channels"], **meta), "timestep": t,
            "guidance": t if config.get("guidance_embeds") else None,
            "encoder_hidden_states": torch.randn(1, 512, config["joint_attention_dim"], **meta),
            "pooled_projections": torch.randn(1, config["pooled_projection_dim"], **meta),
            "img_ids": torch.zeros(tokens, 3, device="meta"), "txt_ids": torch.zeros(512, 3, device="meta")}


class SavedBytes:
    """Bytes autograd keeps for the backward pass, split by gradient-checkpointed block.

    Gradient checkpointing is routed through `record` instead of `torch.utils.checkpoint`, so the blocks run
    normally and what they save is counted per block: with real checkpointing only the block's inputs stay
    (`boundary`), and one block's saved tensors at a time come back during the backward pass (`largest_block`).
    """

    def __init__(self) -> None:
        self.outside = 0  # saved outside any checkpointed block: kept either way
        self.boundary = 0
        self.blocks: list[int] = []
        self._depth = 0
        self._seen: set[int] = set()

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        # Frozen weights are saved too (as views), but they are memory the model holds anyway.
        if t.requires_grad and id(t) not in self._seen:
            self._seen.add(id(t))
            nbytes = t.numel() * t.element_size()
            if self._depth:
                self.blocks[-1] += nbytes
            else:
                self.outside += nbytes
        return t

    def record(self, module: nn.Module, *args: Any) -> Any:
        if self._depth == 0:
            self.boundary += sum(a.numel() * a.element_size() for a in args
                                 if isinstance(a, torch.Tensor) and a.requires_grad)
            self.blocks.append(0)
            self._seen = set()
        self._depth += 1
        try:
            return module(*args)
        finally:
            self._depth -= 1


@contextlib.contextmanager
def gpu_attention() -> Iterator[None]:
    """Route SDPA to the memory-efficient kernel, as on a GPU.

    On the meta device SDPA falls back to the math path, which saves the (tokens x tokens) attention matrix for
    the backward pass; the GPU kernels save only the output and a log-sum-exp row.
    """
    import torch.nn.functional as F

    plain = F.scaled_dot_product_attention

    def efficient(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if attn_mask is not None or enable_gqa:
            return plain(query, key, value, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa)
        return torch.ops.aten._scaled_dot_product_efficient_attention(
            query, key, value, None, True, dropout_p, is_causal, scale=scale)[0]

    F.scaled_dot_product_attention = efficient
    try:
        yield
    finally:
        F.scaled_dot_product_attention = plain


def measure(denoiser: nn.Module, inputs: dict[str, Any]) -> dict[str, float]:
    from torch.utils.flop_counter import FlopCounterMode

    denoiser.to(torch.bfloat16)
    first = next(v for v in inputs.values() if isinstance(v, torch.Tensor))
    first.requires_grad_(True)  # a LoRA makes every activation after the first wrapped layer need a gradient
    saved = SavedBytes()
    denoiser.enable_gradient_checkpointing(saved.record)
    flops = FlopCounterMode(display=False)
    with gpu_attention(), flops, torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
        denoiser(**inputs)
    gib = 2**30
    return {
        "forward_tflop": flops.get_total_flops() / 1e12,
        "saved_without_checkpointing_gib": (saved.outside + sum(saved.blocks)) / gib,
        "checkpointed_blocks": len(saved.blocks),
        "saved_outside_blocks_gib": saved.outside / gib,
        "block_inputs_gib": saved.boundary / gib,
        "largest_block_gib": max(saved.blocks, default=0) / gib,
    }


def estimate(params: int, lora_params: int, m: dict[str, float]) -> dict[str, Any]:
    """ESTIMATES of one InvDiff LoRA step (batch 1, gradient checkpointing) from the counts above.

    memory: frozen weights in bf16 (2 bytes each; fp32 doubles that term); LoRA weights, gradients and AdamW's
    two moments in fp32 (16 bytes each); activations = what stays saved outside checkpointed blocks + the
    blocks' inputs + twice the largest block (its recomputed activations and their gradients). Allocator
    slack, the CUDA context and the text encoders/VAE are not included.
    time: a step is about 3 forward passes (forward, recomputation, backward to the activations; the frozen
    weights need no gradient) at the sustained throughputs in THROUGHPUT_TFLOPS.
    """
    gib = 2**30
    weights = 2 * params / gib
    lora_state = 16 * lora_params / gib
    activations = m["saved_outside_blocks_gib"] + m["block_inputs_gib"] + 2 * m["largest_block_gib"]
    step_tflop = 3 * m["forward_tflop"]
    return {
        "weights_bf16_gib": weights,
        "weights_fp32_gib": 2 * weights,
        "lora_training_state_gib": lora_state,
        "activations_gib": activations,
        "total_gib": weights + lora_state + activations,
        "step_tflop": step_tflop,
        "seconds_per_step": {gpu: step_tflop / tput for gpu, tput in THROUGHPUT_TFLOPS.items()},
    }


def rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def main() -> None:
    from invgen.atomic import write_json
    from invgen.invdiff.adapter import DEFAULT_LORA_TARGETS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/family_params.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # diffusers warns about casting a meta model to bf16

    others = other_parts()
    rows = []
    for name, family, class_name, config, source in ARCHITECTURES:
        plan = recipe(family)
        rank, resolution = plan["rank"], plan["resolution"]
        denoiser = build(class_name, config)
        params = count(denoiser)
        buffers = sum(b.numel() for b in denoiser.buffers())
        kind = "unet" if class_name.startswith("UNet") else "dit"
        lora = {}
        targets = plan["target_modules"] or DEFAULT_LORA_TARGETS[family]
        for label, names in (("recipe", targets), ("attention", ATTENTION_TARGETS[kind])):
            size = lora_size(denoiser, names)
            lora[label] = {"targets": names, **size, "parameters": rank * size["parameters_per_rank"]}
        measured = measure(denoiser, meta_inputs(family, config, resolution))
        rows.append({
            "name": name, "family": family, "class": class_name, "config_source": f"{source} (published config)",
            "recipe": plan["path"], "rank": rank, "resolution": resolution, "parameters": params, "buffers": buffers,
            "lora": lora, "meta_forward": measured,
            "other_parts_parameters": {p: others[p] for p in PIPELINE_PARTS[family]},
            "estimate": estimate(params, lora["recipe"]["parameters"], measured),
        })
        print(f"{name:14s} {params / 1e9:6.3f} B params  LoRA r{rank}: {lora['recipe']['parameters'] / 1e6:6.2f} M "
              f"recipe targets, {lora['attention']['parameters'] / 1e6:6.2f} M attention only  "
              f"forward {measured['forward_tflop']:6.1f} TFLOP at {resolution}px")
    report = {
        "note": "parameters, LoRA sizes, FLOPs and saved bytes are counted on the meta device from the published "
                "configs; memory and time are ESTIMATES (see scripts/count_family_params.py: estimate)",
        "batch_size": 1, "dtype": "bfloat16", "gradient_checkpointing": True,
        "assumed_sustained_tflops": THROUGHPUT_TFLOPS,
        "architectures": rows,
    }
    write_json(args.out, rounded(report))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
