"""Bad input, tried as a new user would, through the real entry points.

Each case asserts the exit code (2), the one-sentence `error: ...` line naming the file, line, field or
option, and that no traceback was printed. Image modes are converted, not rejected: grayscale, palette,
RGBA (composited on black) and 16-bit grayscale (scaled from 0..65535) images train like RGB ones; mixed
sizes are rejected. Hypothesis tests the metadata reader and the config loader on arbitrary input.
"""

import json

import numpy as np
import pytest
import torch
import yaml
from helpers import P3, P5, write_set
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from invgen.cli import main as cli_main
from invgen.config import load_config
from invgen.data.imagefolder import read_imagefolder
from invgen.errors import InvgenConfigError, InvgenDataError
from invgen.train.__main__ import main as train_main

TINY = ["model.block_out_channels=[8,16]", "model.norm_num_groups=4", "model.attention_head_dim=4",
        "train.batch_size=4", "train.steps=1", "train.warmup_steps=0"]


def error_line(capsys) -> str:
    """The last stderr line, after checking that it is the only error line and nothing is a traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and err.strip().splitlines()[-1] == lines[0], err
    return lines[0]


def train(capsys, *args) -> str:
    assert train_main(list(args)) == 2
    return error_line(capsys)


def sample(capsys, *args) -> str:
    assert cli_main(["sample", *args]) == 2
    return error_line(capsys)


@pytest.fixture()
def data(tmp_path):
    root = tmp_path / "data"
    write_set(root / "train", {P3: ["red", "green"], P5: ["green", "red"]}, size=16)
    return root


def base_args(tmp_path, data):
    return ["base", f"output_dir={tmp_path / 'out'}", f"data.root={data}", "data.builder=null", *TINY]


# ---------------------------------------------------------------------------------------------- configs
def test_malformed_yaml_names_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: 3\n  batch_size: [4\n")
    msg = train(capsys, "base", "--config", str(bad))
    assert msg.startswith(f"error: {bad} line ") and "malformed YAML" in msg


def test_unknown_keys_suggest_the_right_one(tmp_path, capsys):
    bad = tmp_path / "typo.yaml"
    bad.write_text("train:\n  learnig_rate: 0.1\n")
    assert "train: unknown key 'learnig_rate' (did you mean 'learning_rate'?)" in train(capsys, "base", "--config",
                                                                                       str(bad))
    assert "unknown key 'ouptut_dir' (did you mean 'output_dir'?)" in train(capsys, "invdiff", "ouptut_dir=x")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.steps=many", "train.steps: expected an integer, got 'many'"),
        ("train.learning_rate=fast", "train.learning_rate: expected a number, got 'fast'"),
        ("train=[1,2]", "train: expected a mapping of TrainConfig fields, got [1, 2]"),
        ("train.mixed_precision=fp8", "train.mixed_precision: expected one of ['no', 'fp16', 'bf16'], got 'fp8'"),
        ("train.batch_size=0", "train.batch_size: must be positive, got 0"),
        ("train.batch_size=-8", "train.batch_size: must be positive, got -8"),
        ("train.steps=0", "train.steps: must be positive, got 0"),
        ("data.builder=cifar", "data.builder: unknown dataset builder 'cifar' (use colored_digits)"),
    ],
)
def test_wrong_types_and_values_name_the_field(capsys, override, expected):
    assert expected in train(capsys, "base", override)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.options.p_align=1.5", "data.options.p_align: must be in [0, 1], got 1.5"),
        ("data.options.palette=nine", "data.options.palette: must be one of two, ten, got 'nine'"),
        ("data.options.colour=red", "data.options.colour: the colored_digits builder has no such option"),
    ],
)
def test_a_builders_options_are_checked_by_the_builder(capsys, override, expected):
    assert expected in train(capsys, "base", "--config", "configs/digits/base.yaml", override)


def test_wrong_type_in_a_yaml_file(tmp_path, capsys):
    bad = tmp_path / "types.yaml"
    bad.write_text("train:\n  batch_size: sixty-four\n")
    assert "train.batch_size: expected an integer, got 'sixty-four'" in train(capsys, "base", "--config", str(bad))


# ------------------------------------------------------------------------------------------------- data
def test_metadata_line_that_is_not_json(tmp_path, data, capsys):
    meta = data / "train" / "metadata.jsonl"
    lines = meta.read_text().splitlines()
    lines[1] = lines[1][:-1]  # the closing brace lost
    meta.write_text("\n".join(lines) + "\n")
    assert f"error: {meta}:2: not valid JSON" in train(capsys, *base_args(tmp_path, data))


def test_metadata_that_is_not_utf8(tmp_path, data, capsys):
    meta = data / "train" / "metadata.jsonl"
    meta.write_bytes(meta.read_bytes() + b'{"file_name": "000.png", "prompt": "caf\xe9"}\n')
    assert f"error: {meta}:5: not UTF-8 text" in train(capsys, *base_args(tmp_path, data))


def test_images_of_mixed_sizes_are_rejected(tmp_path, data, capsys):
    Image.new("RGB", (20, 16)).save(data / "train" / "002.png")
    msg = train(capsys, *base_args(tmp_path, data))
    assert msg == f"error: {data / 'train' / 'metadata.jsonl'}:3: image 002.png is 20x16, expected 16x16"


def test_truncated_image_is_rejected(tmp_path, data, capsys):
    png = data / "train" / "001.png"
    png.write_bytes(png.read_bytes()[:40])
    assert ":2: image 001.png is unreadable or truncated" in train(capsys, *base_args(tmp_path, data))


def test_grayscale_palette_rgba_and_16bit_images_are_converted(tmp_path, data, capsys):
    folder = data / "train"
    Image.new("L", (16, 16), 128).save(folder / "000.png")
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[:8, ..., 3] = 255  # top half opaque, bottom half transparent
    Image.fromarray(rgba, "RGBA").save(folder / "001.png")
    Image.fromarray(np.full((16, 16), 32768, np.uint16)).save(folder / "002.png")  # 16-bit, mid gray
    Image.new("RGB", (16, 16), (10, 20, 30)).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "003.png")
    assert Image.open(folder / "002.png").mode == "I;16"

    images = read_imagefolder(folder).images
    assert images.shape == (4, 16, 16, 3) and images.dtype == np.uint8
    assert (images[0] == 128).all()
    assert (images[1, :8] == (200, 100, 50)).all() and (images[1, 8:] == 0).all()
    assert (images[2] == 128).all()  # 32768 / 65535 of full scale
    assert (images[3] == (10, 20, 30)).all()
    dark = np.full((16, 16), 200, np.uint16)  # a dark 16-bit image stays dark (not read as 8-bit 200)
    Image.fromarray(dark).save(folder / "002.png")
    assert (read_imagefolder(folder).images[2] == 1).all()

    # ... and the trainer takes the mixed set as it is.
    assert train_main(base_args(tmp_path, data)) == 0
    assert (tmp_path / "out" / "model_index.json").is_file()


# ----------------------------------------------------------------------------------- models and adapters
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny base model, its InvDiff adapter (LoRA) and a second base model of another shape."""
    from helpers import write_set as ws

    root = tmp_path_factory.mktemp("bad_models")
    data = root / "data"
    ws(data / "train", {P3: ["red", "green"], P5: ["green", "red"]}, size=16)
    common = [f"data.root={data}", "data.builder=null", *TINY]
    assert train_main(["base", f"output_dir={root / 'base'}", *common]) == 0
    assert train_main(["base", f"output_dir={root / 'other'}", *common, "model.block_out_channels=[8,8]"]) == 0
    inv = ["--config", "configs/digits/invdiff.yaml", f"base_model={root / 'base'}", f"output_dir={root / 'inv'}",
           *common[:2], "groups.noise_draws=1", "groups.steps=5", "adapter.rank=2", "train.batch_size=4",
           "train.steps=1", "train.warmup_steps=0"]
    assert train_main(["groups", *inv]) == 0
    assert train_main(["invdiff", *inv]) == 0
    prompts = root / "prompts.txt"
    prompts.write_text(P3 + "\n")
    return root, inv, prompts


def sample_args(root, tmp_path, pipeline, adapter):
    return ["--pipeline", str(pipeline), "--guidance", str(adapter), "--prompts", str(root / "prompts.txt"),
            "--out", str(tmp_path / "s"), "--per-prompt", "1", "--steps", "1"]


def test_adapter_for_another_base_model_is_refused(trained, tmp_path, capsys):
    root, _, _ = trained
    msg = sample(capsys, *sample_args(root, tmp_path, root / "other", root / "inv"))
    assert msg == ("error: this adapter was trained for another base model: "
                   "block_out_channels is [8, 16] for the adapter but [8, 8] for this UNet")


def _edited_lora(root, tmp_path, suffix, edit):
    """A copy of the trained adapter whose LoRA file went through `edit(weights) -> key`; (file, key)."""
    import shutil

    from safetensors import safe_open
    from safetensors.torch import save_file

    bad = tmp_path / "inv"
    shutil.copytree(root / "inv", bad)
    lora = bad / "pytorch_lora_weights.safetensors"
    with safe_open(str(lora), "pt") as f:
        meta, weights = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    key = sorted(k for k in weights if k.endswith(suffix))[0]
    edit(weights, key)
    save_file(weights, lora, metadata=meta)
    return lora, key


def test_adapter_weights_of_another_shape_are_refused(trained, tmp_path, capsys):
    def widen(weights, key):  # rank kept, width not
        weights[key] = torch.zeros(weights[key].shape[0] + 1, *weights[key].shape[1:])

    root, _, _ = trained
    lora, key = _edited_lora(root, tmp_path, "to_q.lora_B.weight", widen)
    msg = sample(capsys, *sample_args(root, tmp_path, root / "base", lora.parent))
    assert msg.startswith(f"error: {lora}: the adapter does not fit this UNet: size mismatch for ")
    assert key.removeprefix("unet.") in msg


def test_adapter_missing_a_tensor_is_refused(trained, tmp_path, capsys):
    def drop(weights, key):  # peft would have filled it with its random init
        del weights[key]

    root, _, _ = trained
    lora, key = _edited_lora(root, tmp_path, "lora_A.weight", drop)
    msg = sample(capsys, *sample_args(root, tmp_path, root / "base", lora.parent))
    assert msg == f"error: {lora}: {key} is missing (each LoRA layer needs its lora_A and lora_B)"


def test_corrupt_adapter_and_groups_files(trained, tmp_path, capsys):
    import shutil

    root, inv, _ = trained
    bad = tmp_path / "inv"
    shutil.copytree(root / "inv", bad)
    (bad / "pytorch_lora_weights.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header")
    msg = sample(capsys, *sample_args(root, tmp_path, root / "base", bad))
    assert msg.startswith(f"error: {bad / 'pytorch_lora_weights.safetensors'}: unreadable or corrupt weights")

    groups = bad / "groups.safetensors"
    groups.write_bytes(groups.read_bytes()[:100])  # cut short, as by a full disk
    shutil.rmtree(bad / "checkpoints")  # the copied run's: a fresh run into the folder refuses them first
    args = [a if not a.startswith("output_dir=") else f"output_dir={bad}" for a in inv]
    assert train(capsys, "invdiff", *args).startswith(f"error: {groups} is unreadable or corrupt")


def test_missing_base_model_and_bad_sample_options(trained, tmp_path, capsys):
    root, inv, prompts = trained
    args = [a if not a.startswith("base_model=") else f"base_model={tmp_path / 'none'}" for a in inv]
    assert f"base_model: no trained pipeline at {tmp_path / 'none'}" in train(capsys, "invdiff", *args)
    common = ["--pipeline", str(root / "base"), "--prompts", str(prompts), "--out", str(tmp_path / "s")]
    assert sample(capsys, *common, "--batch-size", "0") == "error: --batch-size must be positive, got 0"
    assert sample(capsys, *common, "--per-prompt", "-1") == "error: --per-prompt must be positive, got -1"
    assert "no pipeline folder at" in sample(capsys, *common[2:], "--pipeline", str(tmp_path / "nope/"))


# ------------------------------------------------------------------------------------ property-based tests
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
record_like = st.fixed_dictionaries(
    {},
    optional={
        "file_name": st.sampled_from(["000.png", "001.png", "missing.png", "", "../x.png", "/abs.png"]) | json_values,
        "prompt": st.text(max_size=10) | json_values,
        "label": st.integers() | json_values,
        "attributes": st.dictionaries(st.text(max_size=5), json_values, max_size=2) | json_values,
    },
)
metadata_line = (
    record_like.map(json.dumps)
    | json_values.map(json.dumps)
    | st.text(max_size=30)
    | record_like.map(lambda r: json.dumps(r)[:-1])
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(metadata_line, max_size=4), raw=st.binary(max_size=8))
def test_metadata_reader_loads_or_names_file_and_line(tmp_path, lines, raw):
    folder = tmp_path / "set"
    if not (folder / "000.png").exists():
        write_set(folder, {P3: ["red", "green"]}, size=8)
    meta = folder / "metadata.jsonl"
    meta.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass") + b"\n" + raw)
    try:
        result = read_imagefolder(folder)
    except InvgenDataError as e:
        assert str(e).startswith(str(meta)) or str(e).startswith(str(folder)), e
        return
    assert len(result) == len(result.images) > 0
    assert all(isinstance(r.prompt, str) and (r.label is None or isinstance(r.label, int)) for r in result.records)


config_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3000) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=6,
)
config_keys = st.sampled_from(["output_dir", "train", "data", "model", "cond_dropout", "pretrained", "trian"])
train_keys = st.sampled_from(["steps", "batch_size", "learning_rate", "mixed_precision", "lr_scheduler", "stepz"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    top=st.dictionaries(config_keys | st.text(max_size=6), config_values, max_size=4),
    section=st.dictionaries(train_keys, config_values, max_size=3),
)
def test_config_loader_loads_or_raises_a_config_error(tmp_path, top, section):
    from invgen.train.base import BaseConfig

    if section:
        top = {**top, "train": section}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(top))
    try:
        cfg = load_config(BaseConfig, path)
    except InvgenConfigError as e:
        assert "\n" not in str(e)
        return
    assert cfg.train.steps > 0 and cfg.train.batch_size > 0
