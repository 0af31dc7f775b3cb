"""Train the base (biased) model of the embedded pipeline: `python -m invgen.train base --config ...`.

Only the UNet learns; the text encoder is frozen and its prompt embeddings are computed once. The final
pipeline is written with `save_pretrained` into `output_dir` (checkpoints live in `output_dir/checkpoints`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DDPMScheduler

from invgen.atomic import reporting_write_errors
from invgen.config import check
from invgen.models.loading import save_pipeline
from invgen.models.tiny import TinyUNetConfig, tiny_text_encoder, tiny_unet
from invgen.models.tokenizer import build_clip_tokenizer
from invgen.pipelines.pixel_t2i import PixelTextToImagePipeline
from invgen.train.data import DataConfig, encode_for_pipeline, encode_image_set, start_run
from invgen.train.diffusion import denoising_loss, draw_noise
from invgen.train.jobs import register_job
from invgen.train.loop import TrainConfig, Trainer


@dataclass
class BaseConfig:
    output_dir: str = "runs/base"
    # A pipeline (hub id or local folder) to fine-tune instead of the tiny embedded model: its UNet learns,
    # in latent space when it has a VAE (Stable Diffusion); `model` is then ignored.
    pretrained: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: TinyUNetConfig = field(default_factory=TinyUNetConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=2000, batch_size=64, learning_rate=2e-3))
    # Share of prompts replaced by the empty prompt, so the model also learns the unconditional score
    # that classifier-free guidance needs.
    cond_dropout: float = 0.1
    beta_schedule: str = "squaredcos_cap_v2"

    def validate(self) -> None:
        self.data.validate()
        self.train.validate()
        check(0.0 <= self.cond_dropout < 1.0, "cond_dropout", f"must be in [0, 1), got {self.cond_dropout}")
        if self.pretrained is None:
            check(self.data.size == self.model.sample_size, "model.sample_size",
                  f"must equal data.size ({self.data.size}), got {self.model.sample_size}")
            _validate_model(self.model)


def _validate_model(m: TinyUNetConfig) -> None:
    """The shapes diffusers' UNet would otherwise reject with a traceback from inside torch."""
    channels = list(m.block_out_channels)
    check(m.channels == 3, "model.channels", f"must be 3 (the training images are RGB), got {m.channels}")
    check(len(channels) > 0, "model.block_out_channels", "must list at least one block")
    check(all(c > 0 for c in channels), "model.block_out_channels", f"must all be positive, got {channels}")
    check(m.layers_per_block > 0, "model.layers_per_block", f"must be positive, got {m.layers_per_block}")
    check(m.norm_num_groups > 0, "model.norm_num_groups", f"must be positive, got {m.norm_num_groups}")
    check(all(c % m.norm_num_groups == 0 for c in channels), "model.norm_num_groups",
          f"must divide every entry of model.block_out_channels {channels}, got {m.norm_num_groups}")
    # The attention blocks (all but the first, and the middle block) split their channels into this many heads.
    attended = channels[1:] or channels[-1:]
    check(0 < m.attention_head_dim <= min(attended), "model.attention_head_dim",
          f"must be between 1 and the channels of the attention blocks ({min(attended)}), got {m.attention_head_dim}")
    # The frozen text encoder has 4 attention heads and the UNet pools its states with 2.
    check(m.cross_attention_dim > 0 and m.cross_attention_dim % 4 == 0, "model.cross_attention_dim",
          f"must be a positive multiple of 4, got {m.cross_attention_dim}")


def pipeline_complete(path: str | Path) -> bool:
    return (Path(path) / "model_index.json").is_file()


def _components(cfg: BaseConfig):
    """(pipeline or None, unet, text_encoder, tokenizer, training noise scheduler)."""
    if cfg.pretrained is not None:
        from invgen.errors import InvgenConfigError
        from invgen.models.denoisers import pipeline_family
        from invgen.models.loading import load_frozen_pipeline

        pipe = load_frozen_pipeline(cfg.pretrained, "pretrained")
        family = pipeline_family(pipe)
        if family != "sd":
            # SDXL's added conditions and the flow-matching objective are InvDiff's (invgen/train/diffusion.py);
            # fine-tuning a whole SDXL/SD3/Flux denoiser is not this trainer's job.
            raise InvgenConfigError(f"pretrained: the base trainer fine-tunes SD 1.x/2.x UNets only, "
                                    f"{cfg.pretrained} is a {family} pipeline (InvDiff trains on it as it is)")
        pipe.unet.requires_grad_(True)
        if cfg.train.gradient_checkpointing:
            pipe.unet.enable_gradient_checkpointing()
        scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        return pipe, pipe.unet, pipe.text_encoder, pipe.tokenizer, scheduler
    unet = tiny_unet(cfg.model, seed=cfg.train.seed)
    text_encoder = tiny_text_encoder(hidden_size=cfg.model.cross_attention_dim, seed=0)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule=cfg.beta_schedule, clip_sample=True)
    return None, unet, text_encoder, build_clip_tokenizer(), scheduler


def train_base(cfg: BaseConfig, resume: bool = False) -> Path:
    out = Path(cfg.output_dir)
    pipe, unet, text_encoder, tokenizer, noise_scheduler = _components(cfg)

    trainer = Trainer(cfg.train, out, unet, desc="base")
    split = start_run(trainer, cfg, resume)
    if pipe is not None:
        data = encode_for_pipeline(pipe, split, cfg.data, trainer.accelerator, out)
    else:
        data = encode_image_set(split, tokenizer, text_encoder, size=cfg.data.size)

    n = len(data.x0)
    bs = cfg.train.batch_size

    def compute_loss(model, step, micro, gen):
        # Every process draws the whole global batch, then keeps its own shard.
        idx = torch.randint(n, (bs,), generator=gen)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bs,), generator=gen)
        drop = torch.rand(bs, generator=gen) < cfg.cond_dropout
        prompt = torch.where(drop, torch.full_like(idx, data.empty_index), data.prompt_index[idx])
        x0, emb = data.x0[idx], data.embeddings["prompt_embeds"][prompt]
        noise = draw_noise(x0.shape, gen)
        x0, emb, t, noise = (trainer.shard(v) for v in (x0, emb, t, noise))
        return denoising_loss(model, noise_scheduler, x0, emb, t, noise).mean()

    trainer.fit(compute_loss)
    if trainer.is_main and pipe is not None:
        pipe.unet = trainer.unwrap()
        if cfg.train.gradient_checkpointing:
            pipe.unet.disable_gradient_checkpointing()
        with reporting_write_errors(out):
            save_pipeline(pipe, out)
    elif trainer.is_main:
        pipe = PixelTextToImagePipeline(
            unet=trainer.unwrap(),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            scheduler=DDIMScheduler.from_config(noise_scheduler.config),
        )
        with reporting_write_errors(out):
            save_pipeline(pipe, out)
    trainer.accelerator.wait_for_everyone()
    return out


__all__ = ["BaseConfig", "pipeline_complete", "train_base"]


register_job("base", BaseConfig, lambda cfg, resume: train_base(cfg, resume=resume),
             help="train a text-to-image base model (the embedded benchmark's biased one, or a fine-tune)")
