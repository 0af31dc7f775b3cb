"""InvDiff's training jobs: `groups` (the max step), `invdiff` (the min step) and `evaluate`."""

from __future__ import annotations

from invgen.invdiff.config import InvDiffConfig
from invgen.train.jobs import register_job


def _groups(cfg: InvDiffConfig, resume: bool):
    from invgen.invdiff.train import infer_groups

    return infer_groups(cfg)


def _invdiff(cfg: InvDiffConfig, resume: bool):
    from invgen.invdiff.train import train_invdiff

    return train_invdiff(cfg, resume=resume)


def _evaluate(cfg: InvDiffConfig, resume: bool):
    from invgen.invdiff.evaluate import evaluate_invdiff

    return evaluate_invdiff(cfg)


register_job("groups", InvDiffConfig, _groups, help="infer bias groups from the frozen model's losses")
register_job("invdiff", InvDiffConfig, _invdiff, help="train the guidance adapter on the inferred groups")
register_job("evaluate", InvDiffConfig, _evaluate, help="sample base and guided sets, report their bias")
