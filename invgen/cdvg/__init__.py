"""CDvG: contrastive debiasing with generative bias-transformations (docs/cdvg.md)."""

from invgen.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "BiasTransform": "invgen.cdvg.transforms", "CachedTransform": "invgen.cdvg.transforms",
    "DiffusionTranslator": "invgen.cdvg.transforms", "LearnedTranslator": "invgen.cdvg.learned",
})
