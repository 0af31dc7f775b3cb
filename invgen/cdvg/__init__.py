"""CDvG: contrastive debiasing with generative bias-transformations (docs/cdvg.md)."""

from invgen.cdvg.transforms import BiasTransform, CachedTransform, DiffusionTranslator

__all__ = ["BiasTransform", "CachedTransform", "DiffusionTranslator", "LearnedTranslator"]


def __getattr__(name: str):
    if name == "LearnedTranslator":
        from invgen.cdvg.learned import LearnedTranslator

        return LearnedTranslator
    raise AttributeError(f"module 'invgen.cdvg' has no attribute '{name}'")
