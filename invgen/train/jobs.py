"""One entry per trainer: load its typed config, then run it."""

from __future__ import annotations

from collections.abc import Callable

from invgen.config import load_config


def base(config: str | None, overrides: list[str], resume: bool):
    from invgen.train.base import BaseConfig, train_base

    return train_base(load_config(BaseConfig, config, overrides), resume=resume)


JOBS: dict[str, Callable] = {"base": base}


def groups(config: str | None, overrides: list[str], resume: bool):
    from invgen.invdiff.config import InvDiffConfig
    from invgen.invdiff.train import infer_groups

    return infer_groups(load_config(InvDiffConfig, config, overrides))


def invdiff(config: str | None, overrides: list[str], resume: bool):
    from invgen.invdiff.config import InvDiffConfig
    from invgen.invdiff.train import train_invdiff

    return train_invdiff(load_config(InvDiffConfig, config, overrides), resume=resume)


JOBS.update({"groups": groups, "invdiff": invdiff})


def evaluate(config: str | None, overrides: list[str], resume: bool):
    from invgen.invdiff.config import InvDiffConfig
    from invgen.invdiff.evaluate import evaluate_invdiff

    return evaluate_invdiff(load_config(InvDiffConfig, config, overrides))


JOBS["evaluate"] = evaluate


def cdvg(config: str | None, overrides: list[str], resume: bool):
    from invgen.cdvg.train import CDvGConfig, train_cdvg

    return train_cdvg(load_config(CDvGConfig, config, overrides), resume=resume)


def translator(config: str | None, overrides: list[str], resume: bool):
    from invgen.cdvg.learned import LearnedTranslatorConfig, train_learned_translator

    return train_learned_translator(load_config(LearnedTranslatorConfig, config, overrides), resume=resume)


JOBS.update({"cdvg": cdvg, "translator": translator})
