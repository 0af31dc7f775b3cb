from invgen.invdiff.adapter import AdapterConfig
from invgen.invdiff.grouper import GrouperConfig, fit_group_weights, per_sample_losses
from invgen.invdiff.guidance import InvariantGuidance
from invgen.invdiff.objective import group_robust_loss

__all__ = [
    "AdapterConfig",
    "GrouperConfig",
    "InvariantGuidance",
    "fit_group_weights",
    "group_robust_loss",
    "per_sample_losses",
]
