import json

import pytest
import torch
from safetensors.torch import load_file

from invgen.config import load_config
from invgen.errors import InvgenConfigError
from invgen.train import loop
from invgen.train.base import BaseConfig, train_base


def _cfg(tmp_path, digits_dir, name, **train):
    overrides = [f"output_dir={tmp_path / name}", f"data.root={digits_dir}", "data.builder=null",
                 "train.batch_size=16", "train.log_every=1", "train.warmup_steps=0"]
    overrides += [f"train.{k}={v}" for k, v in train.items()]
    return load_config(BaseConfig, "configs/digits/base.yaml", overrides)


def test_base_trainer_lowers_the_loss(tmp_path, digits_dir):
    out = train_base(_cfg(tmp_path, digits_dir, "run", steps=40, checkpoint_every=100))
    losses = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    assert (out / "model_index.json").is_file() and (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()


class _Crash(Exception):
    pass


def test_resume_gives_the_same_weights(tmp_path, digits_dir, monkeypatch):
    full = train_base(_cfg(tmp_path, digits_dir, "full", steps=8, checkpoint_every=3))

    original_fit = loop.Trainer.fit

    def crashing_fit(self, compute_loss, on_step=None):
        def boom(step, loss):
            if step == 5:  # two steps after the checkpoint at 3: they must be redone on resume
                raise _Crash

        return original_fit(self, compute_loss, on_step=boom)

    cfg = _cfg(tmp_path, digits_dir, "crashed", steps=8, checkpoint_every=3)
    monkeypatch.setattr(loop.Trainer, "fit", crashing_fit)
    with pytest.raises(_Crash):
        train_base(cfg)
    monkeypatch.setattr(loop.Trainer, "fit", original_fit)
    assert not (tmp_path / "crashed" / "model_index.json").exists()
    resumed = train_base(cfg, resume=True)

    a = load_file(full / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "unet" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_config_errors_are_one_sentence(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  stepz: 3\n")
    with pytest.raises(InvgenConfigError, match=r"unknown key 'stepz' \(did you mean 'steps'\?\)"):
        load_config(BaseConfig, bad)
    bad.write_text("train: [1, 2\n")
    with pytest.raises(InvgenConfigError, match=r"bad.yaml line \d+: malformed YAML"):
        load_config(BaseConfig, bad)
    with pytest.raises(InvgenConfigError, match=r"train.batch_size: must be positive, got 0"):
        load_config(BaseConfig, None, ["train.batch_size=0"])
    with pytest.raises(InvgenConfigError, match=r"train.steps: expected an integer, got 'many'"):
        load_config(BaseConfig, None, ["train.steps=many"])
    with pytest.raises(InvgenConfigError, match=r"config file .*missing.yaml does not exist"):
        load_config(BaseConfig, tmp_path / "missing.yaml")


def test_train_cli_reports_errors_without_traceback(capsys):
    from invgen.train.__main__ import main

    assert main(["base", "train.batch_size=-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_train_cli_takes_overrides_after_the_config_flag(tmp_path, digits_dir):
    from invgen.train.__main__ import main

    out = tmp_path / "cli"
    code = main(["base", "--config", "configs/digits/base.yaml", f"output_dir={out}", f"data.root={digits_dir}",
                 "data.builder=null", "train.steps=2", "train.batch_size=4"])
    assert code == 0 and (out / "model_index.json").is_file()


def test_partial_config_section_keeps_the_parents_defaults():
    from invgen.config import load_config
    from invgen.train.base import BaseConfig

    cfg = load_config(BaseConfig, None, ["train.steps=7"])
    # BaseConfig's own train defaults (lr 2e-3), not TrainConfig's (1e-3), survive a one-key override.
    assert cfg.train.steps == 7 and cfg.train.learning_rate == 2e-3


def test_bare_no_for_mixed_precision_is_the_word_no():
    from invgen.config import load_config
    from invgen.train.base import BaseConfig

    assert load_config(BaseConfig, None, ["train.mixed_precision=no"]).train.mixed_precision == "no"
