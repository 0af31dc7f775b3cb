"""Bias and quality metrics of generated image sets.

`bias_report(samples_dir, attribute, classifier)` is the entry point; the metric
functions are importable from here too. Names are loaded on first use, so that `invgen --help` (which
imports `invgen.metrics.cli`) does not pay for torch and matplotlib.
"""

from __future__ import annotations

from invgen.lazy import lazy_exports

_EXPORTS = {
    "invgen.metrics.report": ("bias_report", "images_report", "attribute_figures", "parse_target", "ReportOptions"),
    "invgen.metrics.compare": ("compare_reports", "load_report"),
    "invgen.metrics.results": ("BiasReport", "Comparison"),
    "invgen.metrics.render": ("write_report", "write_comparison", "report_markdown", "comparison_markdown"),
    "invgen.metrics.fairness": (
        "bias_score",
        "shen_bias",
        "fairness_discrepancy",
        "kl_divergence",
        "normalized_entropy",
        "delta_ratio",
        "fairness_metrics",
        "fairness_summary",
        "counts_by_prompt",
        "UNREADABLE",
    ),
    "invgen.metrics.t2i": (
        "distribution_bias",
        "jaccard_hallucination",
        "generative_miss_rate",
        "t2i_bias",
        "TokenFilter",
        "ClipJudge",
        "BlipCaptioner",
    ),
    "invgen.metrics.quality": (
        "frechet_distance",
        "precision_recall",
        "clip_score",
        "quality_report",
        "load_feature_extractor",
    ),
    "invgen.metrics.classifiers": ("load_classifier", "CLASSIFIERS"),
    "invgen.metrics.classifiers.clip": ("ClipZeroShot",),
    "invgen.metrics.classifiers.checkpoint": ("AttributeCNN", "train_attribute_cnn"),
    "invgen.models.clip": ("load_open_clip",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__, __getattr__ = lazy_exports(__name__, _WHERE)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
