"""invgen: debias generative image models without bias labels.

Public API (everything else may change):
- `InvariantGuidance`: attach a trained InvDiff adapter to a diffusers pipeline (SD, SDXL, SD3, Flux).
- `load_pipeline`, `PixelTextToImagePipeline`: models.
- `read_imagefolder`, `write_imagefolder`, `make_colored_digits`: image sets.
- `bias_report`: bias metrics on a generated set.
- `run_audit` (with an `AuditRequest`), `compare_audits`: a bias audit of a pipeline on a prompt suite (`invgen audit`).
"""

from typing import TYPE_CHECKING

from invgen.lazy import lazy_exports

__version__ = "0.1.0"

# Lazy imports keep `import invgen` (and the CLI's start-up) fast: torch and diffusers load on first use.
_EXPORTS = {
    "InvariantGuidance": "invgen.invdiff.guidance",
    "AdapterConfig": "invgen.invdiff.adapter",
    "GrouperConfig": "invgen.invdiff.grouper",
    "group_robust_loss": "invgen.invdiff.objective",
    "load_pipeline": "invgen.models.loading",
    "save_pipeline": "invgen.models.loading",
    "build_clip_tokenizer": "invgen.models.tokenizer",
    "tiny_pipeline": "invgen.models.tiny",
    "PixelTextToImagePipeline": "invgen.pipelines.pixel_t2i",
    "build_pixel_pipeline": "invgen.pipelines.pixel_t2i",
    "read_imagefolder": "invgen.data.imagefolder",
    "write_imagefolder": "invgen.data.imagefolder",
    "ImageRecord": "invgen.data.imagefolder",
    "make_colored_digits": "invgen.benchmarks.digits.data",
    "bias_report": "invgen.metrics.report",
    "compare_reports": "invgen.metrics.compare",
    "images_report": "invgen.metrics.report",
    "run_audit": "invgen.audit.run",
    "AuditRequest": "invgen.audit.plan",
    "compare_audits": "invgen.audit.compare",
    "InvgenError": "invgen.errors",
    "InvgenDataError": "invgen.errors",
    "InvgenConfigError": "invgen.errors",
    "InvgenModelError": "invgen.errors",
}

__all__, __getattr__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # pragma: no cover
    from invgen.audit.compare import compare_audits  # noqa: F401
    from invgen.audit.plan import AuditRequest  # noqa: F401
    from invgen.audit.run import run_audit  # noqa: F401
    from invgen.benchmarks.digits.data import make_colored_digits  # noqa: F401
    from invgen.data.imagefolder import ImageRecord, read_imagefolder, write_imagefolder  # noqa: F401
    from invgen.errors import InvgenConfigError, InvgenDataError, InvgenError, InvgenModelError  # noqa: F401
    from invgen.invdiff.adapter import AdapterConfig  # noqa: F401
    from invgen.invdiff.grouper import GrouperConfig  # noqa: F401
    from invgen.invdiff.guidance import InvariantGuidance  # noqa: F401
    from invgen.invdiff.objective import group_robust_loss  # noqa: F401
    from invgen.metrics.compare import compare_reports  # noqa: F401
    from invgen.metrics.report import bias_report, images_report  # noqa: F401
    from invgen.models.loading import load_pipeline, save_pipeline  # noqa: F401
    from invgen.models.tiny import tiny_pipeline  # noqa: F401
    from invgen.models.tokenizer import build_clip_tokenizer  # noqa: F401
    from invgen.pipelines.pixel_t2i import PixelTextToImagePipeline, build_pixel_pipeline  # noqa: F401
