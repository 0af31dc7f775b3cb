"""Generative views for self-supervised and contrastive learning (GenView, CustomContrast).

Heavy modules load on first use, like the top-level package.
"""

from invgen.lazy import lazy_exports

_EXPORTS = {
    "GenViewGenerator": "invgen.views.genview",
    "GenViews": "invgen.views.genview",
    "noise_levels_for": "invgen.views.genview",
    "QualityDrivenContrastiveLoss": "invgen.views.losses",
    "MultilevelContrastiveLoss": "invgen.views.losses",
    "build_view_loss": "invgen.views.losses",
    "pair_similarities": "invgen.views.losses",
    "PairQuality": "invgen.views.losses",
    "Img2Img": "invgen.views.img2img",
    "ViewCache": "invgen.views.cache",
    "VIEW_MAKERS": "invgen.views.makers",
    "FOREGROUNDS": "invgen.views.foreground",
    "LOSSES": "invgen.views.losses",
    "ForegroundEstimator": "invgen.views.foreground",
    "SaliencyForeground": "invgen.views.foreground",
    "MaskFolderForeground": "invgen.views.foreground",
    "ClipForeground": "invgen.views.foreground",
    "build_foreground": "invgen.views.foreground",
    "foreground_proportion": "invgen.views.foreground",
}

__all__, __getattr__ = lazy_exports(__name__, _EXPORTS)
