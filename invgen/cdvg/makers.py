"""The view makers CDvG chooses by `translator.kind`, registered in `invgen.views.makers.VIEW_MAKERS`.

Each one trains its model first when `translator.model` is missing and `translator.train_if_missing` is set,
and serves its views through the on-disk view cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from invgen.errors import InvgenConfigError, InvgenModelError
from invgen.views.makers import VIEW_MAKERS

NO_VIEWS = "none"


def _diffusion_pipeline(cfg: Any):
    """The translator's diffusers pipeline, trained on the biased set first if asked and missing."""
    from invgen.models.loading import load_pipeline
    from invgen.train.base import BaseConfig, pipeline_complete, train_base

    t = cfg.translator
    if not pipeline_complete(t.model):
        if not t.train_if_missing:
            raise InvgenModelError(f"translator.model {t.model} is not a diffusers pipeline folder")
        from invgen.models.tiny import TinyUNetConfig

        base = BaseConfig(output_dir=str(t.model), data=cfg.data, model=TinyUNetConfig(sample_size=cfg.data.size))
        base.train.steps = t.train_steps
        base.validate()
        train_base(base, resume=True)
    return load_pipeline(t.model)


def class_prompts(cfg: Any) -> list[str]:
    """`translator.class_prompts`, or each class's prompt as the training set's records give it."""
    if cfg.translator.class_prompts:
        return list(cfg.translator.class_prompts)
    from invgen.data.imagefolder import read_imagefolder

    prompts: dict[int, str] = {}
    for r in read_imagefolder(cfg.data.split_dir, load_images=False).records:
        if r.label is not None and r.prompt:
            prompts.setdefault(int(r.label), r.prompt)
    missing = [c for c in range(cfg.num_classes) if c not in prompts]
    if missing:
        raise InvgenConfigError(f"translator.class_prompts: class {missing[0]} has no prompt in "
                                f"{cfg.data.split_dir}; list one prompt per class")
    return [prompts[c] for c in range(cfg.num_classes)]


@VIEW_MAKERS.register(NO_VIEWS, help="no views: the plain cross-entropy baseline")
def _no_views(arg: str, cfg: Any = None, cache_dir: Any = None) -> None:
    return None


@VIEW_MAKERS.register("diffusion", help="a frozen text-to-image pipeline translating between class prompts")
def _diffusion(arg: str, cfg: Any, cache_dir: str | Path):
    from invgen.cdvg.transforms import CachedTransform, DiffusionTranslator

    t = cfg.translator
    pipe = _diffusion_pipeline(cfg)
    inner = DiffusionTranslator(pipe, class_prompts(cfg), strength=t.strength, switch=t.switch,
                                num_inference_steps=t.num_inference_steps, guidance_scale=t.guidance_scale)
    return CachedTransform(inner, cache_dir)


@VIEW_MAKERS.register("learned", help="a small conditional translator trained on the biased set")
def _learned(arg: str, cfg: Any, cache_dir: str | Path):
    from invgen.cdvg.learned import LearnedTranslator, LearnedTranslatorConfig, train_learned_translator
    from invgen.cdvg.transforms import CachedTransform

    t = cfg.translator
    model = Path(t.model)
    if not (model / "model" / "config.json").is_file() and not (model / "config.json").is_file():
        if not t.train_if_missing:
            raise InvgenModelError(f"translator.model {model} is not a trained LearnedTranslator")
        lt = LearnedTranslatorConfig(output_dir=str(model), data=cfg.data, num_classes=cfg.num_classes)
        lt.train.steps = t.train_steps
        train_learned_translator(lt, resume=True)
    return CachedTransform(LearnedTranslator.from_pretrained(model), cache_dir)


@VIEW_MAKERS.register("genview", help="GenView's label-free views of the pipeline in translator.model")
def _genview(arg: str, cfg: Any, cache_dir: str | Path):
    from invgen.cdvg.transforms import GenViewTransform
    from invgen.views.genview import GenViewGenerator

    t = cfg.translator
    gen = GenViewGenerator(_diffusion_pipeline(cfg), num_inference_steps=t.num_inference_steps, cache_dir=cache_dir)
    return GenViewTransform(gen, cfg.num_classes)


def build_transform(cfg: Any):
    """The (cached) view maker `cfg.translator.kind` names, training its model first if asked and missing;
    None for `none`."""
    t = cfg.translator
    cache = t.cache_dir or Path(t.model) / "views_cache"
    return VIEW_MAKERS.resolve(t.kind, cfg=cfg, cache_dir=cache)
