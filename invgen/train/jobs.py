"""Training jobs by name, for `accelerate launch -m invgen.train JOB --config FILE [--resume] [key=value ...]`.

A feature registers its jobs (`register_job`) in its own `jobs` module; this registry imports those modules
by name the first time it is read, so the training package never imports the features it launches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from invgen.config import load_config
from invgen.registry import Registry


@dataclass(frozen=True)
class Job:
    """A typed config class and the function that runs it: `run(cfg, resume)`."""

    config_class: type
    run: Callable[[Any, bool], Any]

    def __call__(self, config: str | None, overrides: list[str], resume: bool) -> Any:
        return self.run(load_config(self.config_class, config, overrides), resume)


JOBS: Registry[Job] = Registry("training job", modules=("invgen.train.base", "invgen.invdiff.jobs",
                                                        "invgen.cdvg.jobs"))


def register_job(name: str, config_class: type, run: Callable[[Any, bool], Any], help: str = "") -> None:
    JOBS.register(name, lambda arg: Job(config_class, run), help=help)
