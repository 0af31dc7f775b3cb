"""Property-based tests (hypothesis) of every number a user gives: each value either runs or is refused
with one sentence naming the field or option; none gives a traceback or a non-finite output.

- Config loader: every numeric field of every trainer's config (found by walking the dataclasses), given
  through a YAML file or a `key=value` override, with NaN, ±inf, huge, negative, zero and normal values.
- `invgen sample`: its numeric options, run end to end on a tiny pipeline with a (perturbed) adapter.
"""

import dataclasses
import json
import math
import typing

import pytest
import torch
import yaml
from helpers import tree_hash
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from invgen.cdvg.learned import LearnedTranslatorConfig
from invgen.cdvg.train import CDvGConfig
from invgen.cli import main as cli_main
from invgen.config import SEED_LIMIT, load_config
from invgen.errors import InvgenConfigError
from invgen.invdiff.config import InvDiffConfig
from invgen.train.base import BaseConfig
from invgen.views.train import SSLConfig

CONFIGS = [BaseConfig, InvDiffConfig, CDvGConfig, LearnedTranslatorConfig, SSLConfig]


def numeric_fields(cls, prefix: str = "") -> list[tuple[str, type]]:
    """(dotted name, float or int) of every number in `cls` and its nested config sections."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, name = hints[f.name], f"{prefix}{f.name}"
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0] if len(args) == 1 else tp  # `float | None` is a float field
        if dataclasses.is_dataclass(tp):
            out += numeric_fields(tp, f"{name}.")
        elif tp in (float, int):
            out.append((name, tp))
    return out


FIELDS = [(cls, name, tp) for cls in CONFIGS for name, tp in numeric_fields(cls)]


def test_the_walk_finds_the_fields_the_issue_names():
    names = {(cls.__name__, name) for cls, name, _ in FIELDS}
    for expected in [("InvDiffConfig", "objective.lam"), ("BaseConfig", "train.learning_rate"),
                     ("InvDiffConfig", "evaluation.scale"), ("CDvGConfig", "translator.switch"),
                     ("BaseConfig", "data.size"), ("SSLConfig", "saliency_threshold")]:
        assert expected in names
    assert len(FIELDS) > 60


def leaves(obj, prefix: str = ""):
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from leaves(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value


special = st.sampled_from([math.nan, math.inf, -math.inf, 1e30, -1e30, 1e308, 0.0, -0.0, -1.0, 1e-12])
numbers = special | st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**30), 10**30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=numbers, as_override=st.booleans())
def test_numeric_config_fields_load_or_are_refused_naming_the_field(tmp_path, field, value, as_override):
    cls, name, tp = field
    text = yaml.safe_dump(value).removesuffix("\n...\n").strip()  # .nan, .inf, 1.0e+30 as YAML writes them
    if as_override:
        source, overrides = None, [f"{name}={text}"]
    else:
        source, overrides = tmp_path / "c.yaml", []
        node: dict = {}
        tree = node
        *sections, leaf = name.split(".")
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = value
        source.write_text(yaml.safe_dump(tree))
    try:
        cfg = load_config(cls, source, overrides)
    except InvgenConfigError as e:
        message = str(e)
        assert "\n" not in message and message.strip() == message
        assert name in message or name.rsplit(".", 1)[-1] in message, message
        return
    # Loaded: the value is the one given, and every number of the config is finite.
    loaded = dict(leaves(cfg))
    if tp is float:
        assert math.isfinite(value) and loaded[name] == pytest.approx(float(value))
    else:
        assert loaded[name] == value
    for key, v in loaded.items():
        if isinstance(v, float):
            assert math.isfinite(v), key
        if key.endswith("seed"):
            assert 0 <= v <= SEED_LIMIT, key


@pytest.mark.parametrize(("cls", "override", "message"), [
    (InvDiffConfig, "objective.lam=.inf", "objective.lam: must be a finite number, got inf"),
    (InvDiffConfig, "objective.lam=-0.5", "objective.lam: must be 0 or more, got -0.5"),
    (BaseConfig, "train.learning_rate=.nan", "train.learning_rate: must be a finite number, got nan"),
    (BaseConfig, "train.learning_rate=1e-4", None),  # YAML 1.1 reads this as text: taken as the number
    (BaseConfig, "train.learning_rate=1e400", "train.learning_rate: must be a finite number, got 1e400"),
    (BaseConfig, "train.max_grad_norm=0", "train.max_grad_norm: must be positive, got 0.0"),
    (InvDiffConfig, "evaluation.scale=11", "evaluation.scale: must be between -10 and 10, got 11.0"),
    (InvDiffConfig, "evaluation.guidance_scale=-1", "evaluation.guidance_scale: must be between 0 and 100"),
    (InvDiffConfig, "adapter.alpha=0", "adapter.alpha: must be"),
    (CDvGConfig, "translator.switch=1.5", "translator.switch: must be in [0, 1] or null, got 1.5"),
    (CDvGConfig, "train.seed=-1", "train.seed: must be an integer from 0 to 4294967295, got -1"),
    (LearnedTranslatorConfig, "lambda_cls=-1", "lambda_cls: must be 0 or more, got -1.0"),
])
def test_config_numbers_examples(cls, override, message):
    if message is None:
        assert load_config(cls, None, [override]).train.learning_rate == 1e-4
        return
    with pytest.raises(InvgenConfigError) as e:
        load_config(cls, None, [override])
    assert message in str(e.value)


# ---------------------------------------------------------------------------------------------- sample
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A saved tiny pipeline and a residual adapter whose weights are perturbed, so that --scale acts."""
    from safetensors.torch import load_file, save_file

    from invgen.invdiff.adapter import AdapterConfig
    from invgen.invdiff.guidance import InvariantGuidance
    from invgen.models.loading import save_pipeline
    from invgen.pipelines import build_pixel_pipeline

    root = tmp_path_factory.mktemp("props")
    pipe = build_pixel_pipeline(seed=0)
    save_pipeline(pipe, root / "pipe")
    guidance = InvariantGuidance.for_denoiser(pipe.unet, AdapterConfig(kind="residual"), base_model=str(root / "pipe"))
    guidance.save_pretrained(root / "adapter")
    weights_file = root / "adapter" / "adapter.safetensors"
    g = torch.Generator().manual_seed(0)
    save_file({k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in load_file(weights_file).items()},
              weights_file)
    (root / "prompts.txt").write_text("a photo of the digit 1\n")
    return root



def option_text(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


float_options = (st.sampled_from([math.nan, math.inf, -math.inf, 1e30, -1e30, 0.0, -1.0, 1.0, 10.0, 10.5, 100.0, 101.0])
                 | st.floats(-20, 120, allow_nan=False))
OPTIONS = {
    "--scale": float_options,
    "--guidance-scale": float_options,
    "--seed": st.sampled_from([0, 7, -1, SEED_LIMIT, SEED_LIMIT + 1, 10**30]),
    "--steps": st.sampled_from([-1, 0, 1, 2, 3]),
    "--per-prompt": st.sampled_from([-3, 0, 1, 2]),
    "--batch-size": st.sampled_from([-1, 0, 1, 2, 10**30]),
}
BASELINE = {"--scale": 1.0, "--guidance-scale": 2.0, "--seed": 0, "--steps": 1, "--per-prompt": 1, "--batch-size": 1}
# One option is drawn at a time (the others keep a valid value), so that about half the examples run.
one_option = st.sampled_from(sorted(OPTIONS)).flatmap(lambda o: st.tuples(st.just(o), OPTIONS[o]))


@settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          derandomize=True)
@given(change=one_option)
@example(change=("--scale", 10.0)).via("the largest scale runs")
@example(change=("--scale", math.nan)).via("the issue: NaN scale")
@example(change=("--guidance-scale", math.nan)).via("the issue: NaN guidance silently off")
@example(change=("--scale", 1e30)).via("the issue: huge scale")
def test_sample_numeric_options_run_or_are_refused(tiny_run, tmp_path_factory, capsys, change):
    option, value = change
    options = {**BASELINE, option: value}
    out = tmp_path_factory.mktemp("s") / "set"
    before = tree_hash(tiny_run)
    args = ["sample", "--pipeline", str(tiny_run / "pipe"), "--guidance", str(tiny_run / "adapter"),
            "--prompts", str(tiny_run / "prompts.txt"), "--out", str(out)]
    for name, v in options.items():
        args += [name, option_text(v)]
    rc = cli_main(args)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert tree_hash(tiny_run) == before  # the pipeline, adapter and prompts are never touched
    if rc == 2:
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
        assert option in errors[0], errors[0]  # the sentence names the option
        assert not out.exists()  # refused before anything was written
        return
    assert rc == 0, err
    scale, guidance_scale, seed = options["--scale"], options["--guidance-scale"], options["--seed"]
    assert math.isfinite(scale) and abs(scale) <= 10 and 0 <= guidance_scale <= 100 and 0 <= seed <= SEED_LIMIT
    lines = (out / "metadata.jsonl").read_text().splitlines()
    assert len(lines) == options["--per-prompt"]
    for line in lines:
        record = json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in metadata.jsonl"))
        assert record["scale"] == scale and record["guidance_scale"] == guidance_scale
        assert record["num_inference_steps"] == options["--steps"]
    from invgen.data.imagefolder import read_imagefolder

    images = read_imagefolder(out).images
    assert images.shape[0] == options["--per-prompt"] and images.max() > 0  # not the black squares of NaN
