"""CDvG's training jobs: `cdvg` (the debiased classifier) and `translator` (the learned bias translator)."""

from __future__ import annotations

from invgen.cdvg.learned import LearnedTranslatorConfig, train_learned_translator
from invgen.cdvg.train import CDvGConfig, train_cdvg
from invgen.train.jobs import register_job

register_job("cdvg", CDvGConfig, lambda cfg, resume: train_cdvg(cfg, resume=resume),
             help="train a classifier with contrastive views of bias-transformed images")
register_job("translator", LearnedTranslatorConfig,
             lambda cfg, resume: train_learned_translator(cfg, resume=resume),
             help="train the learned (StarGAN-like) bias translator")
