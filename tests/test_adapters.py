"""InvDiff adapters as diffusers adapters: stacking on a user's LoRA, exact detach, scale 0, two named adapters,
the diffusers LoRA file a plain `load_lora_weights` reads, and every malformed adapter refused in one sentence
with the pipeline left as it was.

Each case runs on invgen's pixel pipeline and on the four stock families (`invgen.models.tiny_pipeline`).
"""

import json
import math
import shutil

import pytest
import torch
from peft import LoraConfig

from invgen import AdapterConfig, InvariantGuidance
from invgen.errors import InvgenConfigError, InvgenModelError
from invgen.invdiff.guidance import attached_adapters
from invgen.models.denoisers import denoiser_of

KINDS = ["pixel", "sd", "sdxl", "sd3", "flux"]
LORA_FILE = "pytorch_lora_weights.safetensors"


def make_pipe(kind):
    """A pipeline whose denoiser weights are all perturbed (random init leaves some output layers at zero)."""
    if kind == "pixel":
        from invgen.pipelines import build_pixel_pipeline

        pipe = build_pixel_pipeline(seed=0)
        pipe.set_progress_bar_config(disable=True)
    else:
        from invgen.models.tiny import tiny_pipeline

        pipe = tiny_pipeline(kind, seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in denoiser_of(pipe).parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    return pipe


def run(pipe, images=False):
    """The pipeline's latents (its images when `images`; the pixel pipeline's are both), same seed each call."""
    kw = {"output_type": "pt"} if type(pipe).__name__ == "PixelTextToImagePipeline" else {
        "output_type": "np" if images else "latent", "height": 16, "width": 16}
    with torch.no_grad():
        return pipe("a photo of the digit 3", num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                    **kw).images


def trained(pipe, seed=2, **adapter):
    """An InvDiff LoRA for `pipe` with non-zero weights (alpha != rank, so a lost alpha would show)."""
    guidance = InvariantGuidance.for_denoiser(pipe, AdapterConfig(**{"rank": 2, "alpha": 3.0, **adapter}))
    module, params = guidance.training_module(pipe)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    guidance.collect(module)
    return guidance


def add_user_lora(pipe, folder=None, weight=0.7):
    """What a user has done before invgen: their own LoRA, active at their weight. With `folder`, it is written as
    a diffusers LoRA file there and loaded with `pipe.load_lora_weights`, else added with `add_adapter`."""
    from peft import get_peft_model_state_dict

    config = LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k"], init_lora_weights=False)
    d = denoiser_of(pipe)
    if folder is None:
        d.add_adapter(config, adapter_name="style")
    else:
        donor = make_pipe(pipe_kind(pipe))
        denoiser_of(donor).add_adapter(config, adapter_name="style")
        prefix = "transformer" if hasattr(pipe, "transformer") else "unet"
        type(pipe).save_lora_weights(folder, **{f"{prefix}_lora_layers": get_peft_model_state_dict(
            denoiser_of(donor), adapter_name="style")})
        pipe.load_lora_weights(str(folder), adapter_name="style")
    d.set_adapters(["style"], [weight])


def pipe_kind(pipe):
    from invgen.models.denoisers import pipeline_family

    return "pixel" if type(pipe).__name__ == "PixelTextToImagePipeline" else pipeline_family(pipe)


def state(pipe):
    """Everything attaching may touch: weights, adapters loaded and active, invgen's registry."""
    d = denoiser_of(pipe)
    active = d.active_adapters() if getattr(d, "_hf_peft_config_loaded", False) else []
    return ({k: v.clone() for k, v in d.state_dict().items()}, sorted(getattr(d, "peft_config", {}) or {}),
            list(active), sorted(attached_adapters(pipe)))


def assert_same_state(pipe, before):
    weights, loaded, active, attached = state(pipe)
    assert (loaded, active, attached) == before[1:]
    assert weights.keys() == before[0].keys()
    assert all(torch.equal(weights[k], before[0][k]) for k in weights)


@pytest.fixture(scope="module")
def guidances():
    """One trained LoRA per kind (two for the pixel pipeline), trained once for the module."""
    cache = {}

    def get(kind, seed=2):
        if (kind, seed) not in cache:
            cache[kind, seed] = trained(make_pipe(kind), seed=seed)
        return cache[kind, seed]

    return get


# ------------------------------------------------------------------------------------------------ stacking
@pytest.mark.parametrize("kind", KINDS)
def test_attach_on_a_user_lora_then_detach_restores_bit_for_bit(kind, guidances, tmp_path):
    pipe = make_pipe(kind)
    guidance = guidances(kind)
    d = denoiser_of(pipe)
    plain = run(pipe)
    add_user_lora(pipe, None if kind == "pixel" else tmp_path / "style")  # pixel: add_adapter; others: a file
    styled = run(pipe)
    assert (styled - plain).abs().max() > 1e-4  # the user's LoRA acts
    before = state(pipe)

    outs = {}
    for fuse in (False, True):
        guidance.attach(pipe, fuse=fuse)
        assert d.active_adapters() == (["style"] if fuse else ["style", "invgen"])
        assert list(d.peft_config) == (["style"] if fuse else ["style", "invgen"])
        outs[fuse] = run(pipe)
        assert (outs[fuse] - styled).abs().max() > 1e-4  # invgen acts on top of the user's LoRA
        guidance.detach(pipe)
        assert torch.equal(run(pipe), styled)  # bit for bit
        assert_same_state(pipe, before)  # "style" still loaded, active, at its weight
    # Folded or live, the user's LoRA still applies where invgen's layers are: the two agree.
    torch.testing.assert_close(outs[True], outs[False], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_scale_zero_is_the_pipeline_without_invgen(kind, guidances):
    pipe = make_pipe(kind)
    guidance = guidances(kind)
    plain = run(pipe)
    before = state(pipe)
    guidance.attach(pipe, fuse=False)
    at_one = run(pipe)
    guidance.detach(pipe)
    for fuse in (True, False):
        guidance.attach(pipe, scale=0.0, fuse=fuse)
        assert torch.equal(run(pipe), plain)
        guidance.set_scale(pipe, 1.0)  # a folded adapter is folded again from the exact weights
        torch.testing.assert_close(run(pipe), at_one, atol=1e-5, rtol=1e-4)
        guidance.detach(pipe)
        assert torch.equal(run(pipe), plain)
        assert_same_state(pipe, before)
    guidance.attach(pipe, scale=1.0)
    guidance.set_scale(pipe, 0.0)  # from folded at 1 back to 0
    assert torch.equal(run(pipe), plain)
    guidance.detach(pipe)


@pytest.mark.parametrize("kind", ["pixel", "sd"])
def test_two_invgen_adapters_under_two_names(kind, guidances):
    pipe = make_pipe(kind)
    first, second = guidances(kind), guidances(kind, seed=3)
    plain = run(pipe)
    before = state(pipe)
    first.attach(pipe, fuse=False)
    only_first = run(pipe)
    first.detach(pipe)
    second.attach(pipe, scale=0.5, fuse=False, adapter_name="invgen_age")
    only_second = run(pipe)

    first.attach(pipe, fuse=False)
    d = denoiser_of(pipe)
    assert d.active_adapters() == ["invgen_age", "invgen"]
    assert attached_adapters(pipe) == {"invgen_age": second, "invgen": first}
    both = run(pipe)
    assert (both - only_first).abs().max() > 1e-4 and (both - only_second).abs().max() > 1e-4
    second.detach(pipe)
    assert torch.equal(run(pipe), only_first)
    first.detach(pipe)
    assert torch.equal(run(pipe), plain)

    # Folded, and detached in the order they were attached (not the reverse): still exact.
    first.attach(pipe)
    second.attach(pipe, scale=0.5, adapter_name="invgen_age")
    torch.testing.assert_close(run(pipe), both, atol=1e-5, rtol=1e-4)
    first.detach(pipe)
    torch.testing.assert_close(run(pipe), only_second, atol=1e-5, rtol=1e-4)
    second.set_scale(pipe, 0.0)
    assert torch.equal(run(pipe), plain)
    second.detach(pipe)
    assert torch.equal(run(pipe), plain)
    assert_same_state(pipe, before)


# ------------------------------------------------------------------------------------------------ file format
@pytest.mark.parametrize("kind", KINDS)
def test_plain_load_lora_weights_matches_attach(kind, guidances, tmp_path):
    from safetensors import safe_open

    guidance = guidances(kind)
    folder = guidance.save_pretrained(tmp_path / "adapter")
    assert sorted(p.name for p in folder.iterdir()) == ["invgen_guidance.json", LORA_FILE]
    prefix = "transformer" if kind in ("sd3", "flux") else "unet"
    with safe_open(str(folder / LORA_FILE), "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert keys and all(k.startswith(f"{prefix}.") and ".lora_" in k for k in keys)
    lora_meta = json.loads(meta["lora_adapter_metadata"])
    assert (lora_meta[f"{prefix}.r"], lora_meta[f"{prefix}.lora_alpha"]) == (2, 3.0)

    # What the pipeline class's own `save_lora_weights` writes for these weights and this LoRA config.
    stock = make_pipe(kind)
    config = LoraConfig(r=2, lora_alpha=3.0, target_modules=guidance.adapter.target_modules).to_dict()
    type(stock).save_lora_weights(tmp_path / "reference", **{f"{prefix}_lora_layers": guidance.lora_weights,
                                                             f"{prefix}_lora_adapter_metadata": config})
    with safe_open(str(tmp_path / "reference" / LORA_FILE), "pt") as f, safe_open(str(folder / LORA_FILE), "pt") as g:
        assert f.keys() == g.keys() and all(torch.equal(f.get_tensor(k), g.get_tensor(k)) for k in f.keys())
        ref_meta = json.loads(f.metadata()["lora_adapter_metadata"])
    ref_meta[f"{prefix}.target_modules"] = sorted(ref_meta[f"{prefix}.target_modules"])  # a set: in any order
    assert ref_meta == lora_meta

    stock.load_lora_weights(str(folder))  # diffusers alone, no invgen involved
    d = denoiser_of(stock)
    assert list(d.peft_config) == ["default_0"] and d.peft_config["default_0"].lora_alpha == 3.0
    plain_diffusers = run(stock, images=True)

    pipe = make_pipe(kind)
    plain = run(pipe, images=True)
    loaded = InvariantGuidance.from_pretrained(folder)
    loaded.attach(pipe)
    guided = run(pipe, images=True)
    assert abs(guided - plain).max() > 1e-3  # the adapter acts, so the comparison below means something
    assert abs(guided - plain_diffusers).max() <= 1e-5
    loaded.detach(pipe)
    loaded.attach(pipe, fuse=False)  # the same computation as diffusers': the same numbers
    assert abs(run(pipe, images=True) - plain_diffusers).max() <= 1e-6


def test_previous_format_still_loads(guidances, tmp_path):
    from safetensors.torch import save_file

    guidance = guidances("pixel")
    new = guidance.save_pretrained(tmp_path / "new")
    old = tmp_path / "old"
    old.mkdir()
    save_file(guidance.lora_weights, old / "adapter.safetensors")  # peft's key names, no metadata
    config = json.loads((new / "invgen_guidance.json").read_text())
    for key in ("format_version", "family", "weights"):
        del config[key]
    config["signature"] = {k: config["signature"][k] for k in (
        "in_channels", "out_channels", "block_out_channels", "cross_attention_dim", "layers_per_block", "class")}
    (old / "invgen_guidance.json").write_text(json.dumps(config))

    pipe = make_pipe("pixel")
    InvariantGuidance.from_pretrained(new).attach(pipe, fuse=False)
    expected = run(pipe)
    attached_adapters(pipe)["invgen"].detach(pipe)
    legacy = InvariantGuidance.from_pretrained(old)
    legacy.attach(pipe, fuse=False)
    assert torch.equal(run(pipe), expected)
    legacy.detach(pipe)
    with pytest.raises(InvgenModelError) as e:
        pipe.load_lora_weights(str(old))
    assert str(e.value) == (
        f"{old} holds an invgen LoRA in the previous format (adapter.safetensors): attach it with "
        f"InvariantGuidance.from_pretrained('{old}').attach(pipe), or save it again with save_pretrained for a "
        "diffusers LoRA file")


def test_residual_adapters_keep_their_format_and_refuse_lora_calls(tmp_path):
    pipe = make_pipe("pixel")
    guidance = InvariantGuidance.for_denoiser(pipe, AdapterConfig(kind="residual"))
    folder = guidance.save_pretrained(tmp_path / "residual")
    assert sorted(p.name for p in folder.iterdir()) == ["adapter.safetensors", "invgen_guidance.json"]
    before = state(pipe)
    with pytest.raises(InvgenModelError) as e:
        pipe.load_lora_weights(str(folder))
    assert str(e.value) == (f"{folder} holds an invgen residual adapter, which is not a LoRA: attach it with "
                            f"InvariantGuidance.from_pretrained('{folder}').attach(pipe)")
    assert_same_state(pipe, before)
    guidance.attach(pipe)
    for call in (guidance.fuse, guidance.unfuse):
        with pytest.raises(InvgenModelError) as e:
            call(pipe)
        assert str(e.value) == (f"{call.__name__} applies to LoRA adapters only; this one is a 'residual' "
                                "adapter, a separate network added to the UNet's output")
    guidance.detach(pipe)
    with pytest.raises(InvgenConfigError) as e:
        InvariantGuidance.for_denoiser(make_pipe("sd3"), AdapterConfig(kind="residual"))
    assert str(e.value) == "adapter.kind: a residual adapter works on UNet pipelines only; use lora for sd3"


def test_residual_adapter_of_a_non_default_width_round_trips(tmp_path):
    # Built with positional arguments, diffusers recorded the width as a "default" and from_config reset it.
    pipe = make_pipe("pixel")
    guidance = InvariantGuidance.for_denoiser(pipe, AdapterConfig(kind="residual", residual_channels=4))
    with torch.no_grad():
        for p in guidance.module.parameters():
            p.add_(0.05)
    loaded = InvariantGuidance.from_pretrained(guidance.save_pretrained(tmp_path / "narrow"))
    assert loaded.module.config.channels == 4
    for (name, a), (_, b) in zip(guidance.module.state_dict().items(), loaded.module.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(InvgenConfigError) as e:
        InvariantGuidance.for_denoiser(make_pipe("sd3"), AdapterConfig(kind="residual"))
    assert str(e.value) == "adapter.kind: a residual adapter works on UNet pipelines only; use lora for sd3"


# ------------------------------------------------------------------------------------------------ training
@pytest.mark.parametrize("kind", ["sd", "sd3", "flux"])
def test_training_module_is_the_denoiser_with_only_lora_trainable(kind):
    pipe = make_pipe(kind)
    d = denoiser_of(pipe)
    guidance = InvariantGuidance.for_denoiser(d, AdapterConfig(rank=2))
    targets = guidance.adapter.target_modules
    if kind == "sd":
        assert targets[:4] == ["to_q", "to_k", "to_v", "to_out.0"]
    else:
        assert {"to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj"} <= set(targets)
    module, params = guidance.training_module(d)
    assert module is d and list(d.peft_config) == ["invgen"]
    trainable = [n for n, p in d.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n and n.endswith(".invgen.weight") for n in trainable)
    assert len(params) == len(trainable)
    guidance.collect(module)
    assert not hasattr(d, "peft_config") and guidance.num_parameters() == sum(p.numel() for p in params)
    with pytest.raises(InvgenConfigError) as e:
        InvariantGuidance.for_denoiser(d, AdapterConfig(target_modules=["to_q", "to_zz"]))
    word = "UNet" if kind == "sd" else "transformer"
    assert str(e.value) == f"adapter.target_modules: 'to_zz' names no layer of this {word} ({type(d).__name__})"


# ------------------------------------------------------------------------------------------------ refused input
def test_attach_refusals_leave_the_pipeline_as_it_was(guidances):
    from invgen.models.tiny import TinyUNetConfig
    from invgen.pipelines import build_pixel_pipeline

    pipe = make_pipe("pixel")
    add_user_lora(pipe)
    guidance = guidances("pixel")
    guidance.attach(pipe, fuse=False)
    before, out = state(pipe), run(pipe)

    def refused(call, message, error=InvgenModelError):
        with pytest.raises(error) as e:
            call()
        assert str(e.value) == message
        assert_same_state(pipe, before)
        assert torch.equal(run(pipe), out)

    refused(lambda: guidance.attach(pipe), "this pipeline already has an adapter named 'invgen'; detach it first "
                                           "or attach under another adapter_name")
    refused(lambda: guidances("pixel", seed=3).attach(pipe, adapter_name="style"),
            "this pipeline already has an adapter named 'style'; detach it first or attach under another "
            "adapter_name")
    for bad in (math.nan, math.inf, -math.inf, 10.5, -11, "big"):
        # One check for every scale (invgen.config.check_number), as the CLI's --scale gets.
        if isinstance(bad, str):
            message = f"adapter scale: must be a number, got {bad!r}"
        elif math.isfinite(bad):
            message = f"adapter scale: must be between -10 and 10, got {bad!r}"
        else:
            message = f"adapter scale: must be a finite number, got {bad!r}"
        refused(lambda bad=bad: guidance.set_scale(pipe, bad), message, InvgenConfigError)
        refused(lambda bad=bad: guidances("pixel", seed=3).attach(pipe, scale=bad, adapter_name="second"), message,
                InvgenConfigError)
    other_size = build_pixel_pipeline(TinyUNetConfig(block_out_channels=(32, 64)))
    refused(lambda: trained(other_size).attach(pipe, adapter_name="second"),
            "this adapter was trained for another base model: block_out_channels is [32, 64] for the adapter but "
            "[32, 48, 64] for this UNet")
    refused(lambda: guidances("sd").attach(pipe, adapter_name="second"),
            "this adapter was trained for another base model: in_channels is 4 for the adapter but 3 for this UNet")
    refused(lambda: guidances("sdxl").attach(pipe, adapter_name="second"),
            "this adapter was trained for the 'sdxl' model family, but this pipeline is 'sd'")
    refused(lambda: guidances("flux").attach(pipe, adapter_name="second"),
            "this adapter was trained for the 'flux' model family, but this pipeline is 'sd'")


def _save(guidance, tmp_path):
    folder = tmp_path / "adapter"
    if folder.exists():
        shutil.rmtree(folder)
    return guidance.save_pretrained(folder)


def _edit_tensors(folder, edit):
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = folder / LORA_FILE
    with safe_open(str(path), "pt") as f:
        meta, weights = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    meta = edit(weights, meta) or meta
    save_file(weights, path, metadata=meta)
    return sorted(weights)


def _edit_config(folder, edit):
    path = folder / "invgen_guidance.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


def _first(weights, suffix):
    return sorted(k for k in weights if k.endswith(suffix))[0]


def _widen_rank(w, key):
    w[key] = torch.zeros(3, *w[key].shape[1:])


def _set_first(value):
    def edit(w, key):
        w[key][0, 0] = value

    return edit


# case: (the tensor it edits, the edit (may return new metadata), the message)
TENSOR_CASES = {
    "missing lora_A": ("to_q.lora_A.weight", lambda w, key, m: w.__delitem__(key),
                       "{file}: {module}.lora_A.weight is missing (each LoRA layer needs its lora_A and lora_B)"),
    "no tensors": ("to_q.lora_A.weight", lambda w, key, m: w.clear(), "{file}: holds no tensors"),
    "NaN weight": ("to_k.lora_B.weight", lambda w, key, m: _set_first(math.nan)(w, key),
                   "{file}: {key} holds non-finite values (NaN or inf)"),
    "inf weight": ("to_k.lora_B.weight", lambda w, key, m: _set_first(math.inf)(w, key),
                   "{file}: {key} holds non-finite values (NaN or inf)"),
    "integer weight": ("to_k.lora_B.weight", lambda w, key, m: w.__setitem__(key, w[key].long()),
                       "{file}: {key} is torch.int64, expected floating-point weights"),
    "other rank": ("to_q.lora_A.weight", lambda w, key, m: _widen_rank(w, key),
                   "{file}: {key} has shape {shape}, not that of a rank-2 LoRA (adapter.rank in "
                   "invgen_guidance.json)"),
    "alpha lost": ("to_q.lora_A.weight", lambda w, key, m: {"format": "pt"},
                   "{file}: no LoRA config in its metadata (lora_adapter_metadata), so diffusers could not know its "
                   "alpha; save the adapter again"),
    "alpha differs": ("to_q.lora_A.weight", lambda w, key, m: {**m, "lora_adapter_metadata": m[
                          "lora_adapter_metadata"].replace('"unet.lora_alpha": 3.0', '"unet.lora_alpha": 8.0')},
                      "{file}: its LoRA metadata says lora_alpha = 8.0 but invgen_guidance.json says adapter.alpha "
                      "= 3.0"),
}


@pytest.mark.parametrize("case", TENSOR_CASES)
def test_malformed_weights_are_refused_in_one_sentence(case, guidances, tmp_path):
    suffix, edit, message = TENSOR_CASES[case]
    folder = _save(guidances("pixel"), tmp_path)
    chosen = {}

    def apply(w, m):
        key = chosen["key"] = _first(w, suffix)
        meta = edit(w, key, m)
        chosen["shape"] = list(w[key].shape) if key in w else None
        return meta

    _edit_tensors(folder, apply)
    key = chosen["key"]  # as the file names it: "unet.down_blocks..."
    expected = message.format(file=folder / LORA_FILE, key=key, module=key.removesuffix(".lora_A.weight"),
                              shape=chosen["shape"])
    with pytest.raises(InvgenModelError) as e:
        InvariantGuidance.from_pretrained(folder)
    assert str(e.value) == expected


CONFIG_CASES = {
    "rank 0": (lambda c: c["adapter"].update(rank=0), "adapter.rank: must be a positive integer, got 0"),
    "unknown kind": (lambda c: c["adapter"].update(kind="dora"),
                     "adapter.kind: must be one of lora, residual, copy, got 'dora'"),
    "missing signature": (lambda c: c.pop("signature"),
                          "signature: missing: the config must record the denoiser the adapter was trained for"),
    "bad class": (lambda c: c["signature"].update({"class": "os.system"}),
                  "signature.class: 'os.system' is not a denoiser class invgen supports (UNet2DConditionModel, "
                  "SD3Transformer2DModel, FluxTransformer2DModel)"),
    "empty targets": (lambda c: c["adapter"].update(target_modules=[]),
                      "adapter.target_modules: must name at least one module (or be left unset for the family's "
                      "default), got []"),
    "unknown field": (lambda c: c["adapter"].update(rnk=4),
                      "adapter.rnk: unknown field (known: alpha, kind, rank, residual_channels, target_modules)"),
    "unknown family": (lambda c: c.update(family="dalle"), "family: must be one of sd, sdxl, sd3, flux, got 'dalle'"),
    "alpha NaN": (lambda c: c["adapter"].update(alpha=math.nan), "adapter.alpha: must be a finite number above 0, "
                                                                 "got nan"),
    "alpha inf": (lambda c: c["adapter"].update(alpha=math.inf), "adapter.alpha: must be a finite number above 0, "
                                                                 "got inf"),
    "alpha 0": (lambda c: c["adapter"].update(alpha=0), "adapter.alpha: must be a finite number above 0, got 0"),
    "alpha negative": (lambda c: c["adapter"].update(alpha=-4.0),
                       "adapter.alpha: must be a finite number above 0, got -4.0"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_malformed_configs_are_refused_in_one_sentence(case, guidances, tmp_path):
    edit, message = CONFIG_CASES[case]
    folder = _save(guidances("pixel"), tmp_path)
    _edit_config(folder, edit)
    with pytest.raises(InvgenModelError) as e:
        InvariantGuidance.from_pretrained(folder)
    assert str(e.value) == f"{folder / 'invgen_guidance.json'}: {message}"


def test_target_module_without_tensors_and_bad_copy_class(guidances, tmp_path):
    folder = _save(guidances("pixel"), tmp_path)
    _edit_config(folder, lambda c: c["adapter"]["target_modules"].append("to_zz"))
    with pytest.raises(InvgenModelError) as e:
        InvariantGuidance.from_pretrained(folder)
    assert str(e.value) == (f"{folder / LORA_FILE}: adapter.target_modules names 'to_zz' but the file has no tensor "
                            "for it")

    pipe = make_pipe("pixel")
    copy = InvariantGuidance.for_denoiser(pipe, AdapterConfig(kind="copy"))
    folder = copy.save_pretrained(tmp_path / "copy")
    _edit_config(folder, lambda c: c["module_config"].update(_class_name="DiffusionPipeline"))
    with pytest.raises(InvgenModelError) as e:
        InvariantGuidance.from_pretrained(folder)
    assert str(e.value) == (f"{folder / 'invgen_guidance.json'}: module_config._class_name: 'DiffusionPipeline' is "
                            "not a UNet class a copy adapter can be (UNet2DConditionModel)")


def test_weights_of_another_width_are_refused_at_attach(guidances, tmp_path):
    folder = _save(guidances("pixel"), tmp_path)
    widened = {}

    def widen(w, m):
        key = _first(w, "to_q.lora_B.weight")
        widened["key"] = key.removeprefix("unet.")
        w[key] = torch.zeros(w[key].shape[0] + 1, w[key].shape[1])  # rank kept: only the UNet can tell

    _edit_tensors(folder, widen)
    loaded = InvariantGuidance.from_pretrained(folder)
    pipe = make_pipe("pixel")
    before, out = state(pipe), run(pipe)
    with pytest.raises(InvgenModelError) as e:
        loaded.attach(pipe)
    width = loaded.lora_weights[widened["key"]].shape[0]
    assert str(e.value) == (f"{folder / LORA_FILE}: the adapter does not fit this UNet: size mismatch for "
                            f"{widened['key']}: [{width}, 2] in the file, [{width - 1}, 2] in this UNet")
    assert_same_state(pipe, before)
    assert torch.equal(run(pipe), out)
