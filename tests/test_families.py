"""InvDiff on every denoiser family (SD, SDXL, SD3, Flux): objectives by hand, then the jobs on tiny pipelines."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import P3, P5, write_set
from safetensors.torch import load_file

from invgen.config import load_config
from invgen.invdiff.config import InvDiffConfig
from invgen.invdiff.grouper import per_sample_losses
from invgen.invdiff.train import infer_groups, train_invdiff
from invgen.models.denoisers import denoiser_of
from invgen.train.conditioning import POOLED, PROMPT_EMBEDS, denoiser_kwargs, encode_conditions, sdxl_time_ids
from invgen.train.diffusion import DenoisingObjective, flow_matching_pair

FAMILIES = ["sd", "sdxl", "sd3", "flux"]
REPO = Path(__file__).resolve().parent.parent


def _recipe(family: str) -> str:
    return str(REPO / "configs" / ("sd15" if family == "sd" else family) / "invdiff_digits.yaml")


class Recorder(torch.nn.Module):
    """A stand-in denoiser: returns a fixed prediction and keeps the arguments it was called with."""

    def __init__(self, pred):
        super().__init__()
        self.pred = pred
        self.calls = []

    def forward(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return (self.pred,)


# ---------------------------------------------------------------------------------------------- objectives


def test_flow_matching_input_target_and_timestep_by_hand():
    x0 = torch.tensor([[[[1.0, 2.0]]]])
    eps = torch.tensor([[[[3.0, -1.0]]]])
    noisy, target = flow_matching_pair(x0, eps, torch.tensor([0.25]))
    # x_t = 0.75 * x0 + 0.25 * eps; target eps - x0
    assert noisy.flatten().tolist() == [1.5, 1.25]
    assert target.flatten().tolist() == [2.0, -3.0]

    from diffusers import FlowMatchEulerDiscreteScheduler

    sd3 = DenoisingObjective("sd3", FlowMatchEulerDiscreteScheduler(shift=3.0))
    model = Recorder(torch.tensor([[[[2.5, -3.0]]]]))
    cond = {PROMPT_EMBEDS: torch.zeros(1, 3, 4), POOLED: torch.zeros(1, 5)}
    loss = sd3.per_sample_loss(model, x0, cond, torch.tensor([0.25]), eps)
    kwargs = model.calls[0][1]
    assert kwargs["timestep"].tolist() == [250.0]  # SD3's pipeline passes sigma * 1000
    assert kwargs["hidden_states"].flatten().tolist() == [1.5, 1.25]
    assert set(kwargs) == {"hidden_states", "timestep", "encoder_hidden_states", "pooled_projections"}
    assert loss.tolist() == [pytest.approx(0.125)]  # ((2.5 - 2)^2 + 0^2) / 2
    # The grouper's fixed level t = 865 is sigma = 0.865; SD3's shift 3 maps a drawn u = 0.5 to 0.75.
    assert sd3.fixed_levels(865, 2).tolist() == pytest.approx([0.865, 0.865])
    assert sd3.shift(torch.tensor([0.5])).tolist() == [0.75]


def test_flux_packs_tokens_passes_sigma_and_guidance():
    from diffusers import FlowMatchEulerDiscreteScheduler

    flux = DenoisingObjective("flux", FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True), guidance_embeds=True)
    x0 = torch.zeros(2, 4, 4, 6)
    eps = torch.arange(2 * 4 * 4 * 6, dtype=torch.float32).reshape(2, 4, 4, 6) / 100
    model = Recorder(torch.zeros(2, 6, 16))
    cond = {PROMPT_EMBEDS: torch.zeros(2, 7, 8), POOLED: torch.zeros(2, 8)}
    loss = flux.per_sample_loss(model, x0, cond, torch.tensor([0.5, 1.0]), eps)
    kw = model.calls[0][1]
    assert kw["hidden_states"].shape == (2, 6, 16)  # (4 / 2) * (6 / 2) tokens of 4 channels x 2 x 2
    assert kw["timestep"].tolist() == [0.5, 1.0]  # Flux's pipeline passes t / 1000 = sigma
    assert kw["guidance"].tolist() == [3.5, 3.5]
    assert kw["txt_ids"].shape == (7, 3) and not kw["txt_ids"].any()
    assert kw["img_ids"][:, 1:].tolist() == [[r, c] for r in range(2) for c in range(3)]
    # token 0 of sample 0 holds latent (channel 0, rows 0-1, cols 0-1) first: 0.00, 0.01, 0.06, 0.07
    assert kw["hidden_states"][0, 0, :4].tolist() == pytest.approx([0.0, 0.005, 0.03, 0.035])
    # target eps - x0 = eps: the loss is the mean square of eps (packing only permutes it)
    torch.testing.assert_close(loss, eps.pow(2).flatten(1).mean(1))


def test_v_prediction_target_is_read_from_the_scheduler_config():
    from diffusers import DDPMScheduler

    kw = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
    x0 = torch.full((1, 1, 1, 2), 2.0)
    eps = torch.tensor([[[[1.0, -1.0]]]])
    t = torch.tensor([500])
    for kind in ("v_prediction", "epsilon"):
        sched = DDPMScheduler(prediction_type=kind, **kw)
        model = Recorder(torch.zeros(1, 1, 1, 2))
        obj = DenoisingObjective("sd", sched)
        loss = obj.per_sample_loss(model, x0, {PROMPT_EMBEDS: torch.zeros(1, 3, 4)}, t, eps)
        a = sched.alphas_cumprod[500].item()
        target = [a**0.5 * e - (1 - a) ** 0.5 * 2.0 for e in (1.0, -1.0)] if kind == "v_prediction" else [1.0, -1.0]
        assert loss.item() == pytest.approx(sum(v * v for v in target) / 2, rel=1e-5)
        noisy = model.calls[0][0][0].flatten().tolist()
        assert noisy == pytest.approx([a**0.5 * 2 + (1 - a) ** 0.5 * e for e in (1.0, -1.0)], rel=1e-5)


def test_v_prediction_pipeline_gives_a_v_objective():
    from diffusers import EulerDiscreteScheduler

    from invgen.models.tiny import tiny_pipeline

    pipe = tiny_pipeline("sdxl")
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, prediction_type="v_prediction")
    obj = DenoisingObjective.for_pipeline(pipe)
    assert obj.family == "sdxl" and obj.scheduler.config.prediction_type == "v_prediction"
    x0, eps, t = torch.ones(1, 4, 2, 2), torch.zeros(1, 4, 2, 2), torch.tensor([999])
    _, target = obj.noisy_and_target(x0, eps, t)
    a = obj.scheduler.alphas_cumprod[999].item()
    torch.testing.assert_close(target, torch.full_like(x0, -((1 - a) ** 0.5)))


def test_sdxl_time_ids_match_the_pipeline():
    from invgen.models.tiny import tiny_pipeline

    assert sdxl_time_ids(32, 48, 2).tolist() == [[32, 48, 0, 0, 32, 48]] * 2
    pipe = tiny_pipeline("sdxl")
    cond = encode_conditions(pipe, [P3, P5])
    assert cond[PROMPT_EMBEDS].shape == (2, 77, 64) and cond[POOLED].shape == (2, 32)
    kw = denoiser_kwargs("sdxl", torch.zeros(2, 4, 4, 6), torch.tensor([1, 2]), cond, vae_scale_factor=8)
    # The pipeline's own ids for a 32 x 48 image with its defaults (no crop, original = target size).
    want = pipe._get_add_time_ids((32, 48), (0, 0), (32, 48), torch.float32, text_encoder_projection_dim=32)
    torch.testing.assert_close(kw["added_cond_kwargs"]["time_ids"], want.expand(2, 6))
    torch.testing.assert_close(kw["added_cond_kwargs"]["text_embeds"], cond[POOLED])
    # The conditions are the pipeline's encode_prompt output, row for row.
    embeds, _, pooled, _ = pipe.encode_prompt(P5, device="cpu", do_classifier_free_guidance=False)
    torch.testing.assert_close(cond[PROMPT_EMBEDS][1:], embeds)
    torch.testing.assert_close(cond[POOLED][1:], pooled)


@pytest.mark.parametrize("family", FAMILIES)
def test_per_sample_losses_depend_only_on_the_sample(family):
    from invgen.models.tiny import tiny_pipeline

    pipe = tiny_pipeline(family)
    obj = DenoisingObjective.for_pipeline(pipe)
    cond = encode_conditions(pipe, [P3, P5])
    x0 = torch.randn(5, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    index = torch.tensor([0, 1, 1, 0, 1])
    net = denoiser_of(pipe).eval()
    whole = per_sample_losses(net, obj, x0, cond, [865], 2, seed=3, batch_size=5, progress=False, prompt_index=index)
    parts = np.concatenate([
        per_sample_losses(net, obj, x0[:2], cond, [865], 2, seed=3, batch_size=1, progress=False,
                          prompt_index=index[:2]),
        per_sample_losses(net, obj, x0[2:], cond, [865], 2, seed=3, batch_size=2, progress=False,
                          prompt_index=index[2:], index_offset=2),
    ])
    np.testing.assert_allclose(whole, parts, rtol=1e-5)
    assert np.isfinite(whole).all() and len(set(whole.round(6))) == 5
    other = per_sample_losses(net, obj, x0, cond, [865], 2, seed=4, batch_size=5, progress=False, prompt_index=index)
    assert not np.allclose(whole, other)


def test_sd_losses_are_those_of_the_plain_scheduler_path():
    from invgen.models.tiny import tiny_pipeline

    pipe = tiny_pipeline("sd")
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    emb = encode_conditions(pipe, [P3])[PROMPT_EMBEDS].expand(3, -1, -1)
    x0 = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    old = per_sample_losses(pipe.unet, sched, x0, emb, [500], 1, progress=False)
    new = per_sample_losses(pipe.unet, DenoisingObjective.for_pipeline(pipe), x0, {PROMPT_EMBEDS: emb}, [500], 1,
                            progress=False)
    np.testing.assert_array_equal(old, new)


def test_celeba_recipes_scale_the_published_hyperparameters():
    for family in ("sdxl", "sd3", "flux"):
        cfg = load_config(InvDiffConfig, str(REPO / "configs" / family / "invdiff_celeba.yaml"))
        t = cfg.train
        assert cfg.data.size == 1024 and t.batch_size * t.gradient_accumulation_steps == 64
        assert t.learning_rate == 1e-4 and t.lr_scheduler == "cosine" and t.warmup_steps == 1000 and t.steps == 10_000
        assert t.mixed_precision == "bf16" and t.gradient_checkpointing and cfg.data.latent_cache
        assert cfg.groups.num_groups == 8 and cfg.groups.assignment == "soft" and cfg.objective.lam == 1.0
        assert cfg.adapter.kind == "lora" and cfg.evaluation.classifier.startswith("clip:")
        digits = load_config(InvDiffConfig, _recipe(family))
        assert digits.evaluation.classifier == "oracle:color"


# ---------------------------------------------------------------------------------------------- the jobs


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    write_set(root / "train", {P3: ["red"] * 7 + ["green"], P5: ["green"] * 7 + ["red"]}, size=16)
    return root


@pytest.fixture(scope="module", params=FAMILIES)
def saved_family(request, tmp_path_factory):
    from invgen.models.loading import save_pipeline
    from invgen.models.tiny import tiny_pipeline

    return request.param, save_pipeline(tiny_pipeline(request.param), tmp_path_factory.mktemp(request.param) / "pipe")


def _lora_b(out: Path) -> list[torch.Tensor]:
    tensors = {}
    for f in out.glob("*.safetensors"):
        if f.name != "groups.safetensors":
            tensors.update(load_file(f))
    return [v for k, v in tensors.items() if "lora_B" in k or "lora.up" in k]


def test_groups_invdiff_attach_detach_on_every_family(saved_family, small_set, tmp_path):
    from invgen.invdiff.evaluate import evaluate_invdiff
    from invgen.invdiff.guidance import InvariantGuidance
    from invgen.models.loading import load_pipeline

    family, pipe_dir = saved_family
    out = tmp_path / "run"
    cfg = load_config(InvDiffConfig, _recipe(family), [
        f"base_model={pipe_dir}", f"output_dir={out}", f"data.root={small_set}", "data.builder=null", "data.size=16",
        "data.latent_cache=null", "groups.noise_draws=1", "groups.batch_size=8", "train.steps=3",
        "train.batch_size=4", "train.learning_rate=0.01", "train.warmup_steps=0", "train.checkpoint_every=1000",
        "train.mixed_precision='no'", "train.log_every=1", "evaluation.per_prompt=1",
        "evaluation.num_inference_steps=2", "evaluation.batch_size=2",
    ])
    infer_groups(cfg)
    groups = json.loads((out / "groups.json").read_text())
    assert groups["n"] == 16 and groups["family"] == family and np.isfinite(groups["group_mean_loss"]).all()
    # No data.latent_cache: the latents still live on disk (in the run's folder), not in memory.
    cached = sorted((out / "latents").glob("latents-*.safetensors"))
    assert len(cached) == 1

    train_invdiff(cfg)
    log = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and np.isfinite(log).all()
    up = _lora_b(out)
    assert up and any(v.abs().sum() > 0 for v in up)  # LoRA B starts at zero: training moved it

    pipe = load_pipeline(pipe_dir)
    call = {"num_inference_steps": 2, "height": 16, "width": 16, "output_type": "np"}

    def run():
        return pipe([P3, P5], generator=[torch.Generator().manual_seed(i) for i in range(2)], **call).images

    base = run()
    weights = {k: v.clone() for k, v in denoiser_of(pipe).state_dict().items()}
    guidance = InvariantGuidance.from_pretrained(out)
    guidance.attach(pipe, scale=1.0)
    guided = run()
    assert np.abs(guided - base).max() > 0
    guidance.detach(pipe)
    np.testing.assert_array_equal(run(), base)
    after = denoiser_of(pipe).state_dict()
    assert after.keys() == weights.keys() and all(torch.equal(after[k], v) for k, v in weights.items())

    evaluate_invdiff(cfg)
    summary = json.loads((out / "evaluation.json").read_text())
    first = json.loads((out / "samples" / "invdiff" / "metadata.jsonl").read_text().splitlines()[0])
    assert summary["images_per_set"] == 2 and first["height"] == 16  # null resolution: data.size


def _cli(args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_recipe_runs_all_three_jobs_from_the_command_line(family, tmp_path, digits_dir):
    from invgen.models.loading import save_pipeline
    from invgen.models.tiny import tiny_pipeline

    pipe_dir = save_pipeline(tiny_pipeline(family), tmp_path / "pipe")
    out = tmp_path / "run"
    overrides = [f"base_model={pipe_dir}", f"data.root={digits_dir}", "data.size=16", "train.steps=4",
                 f"output_dir={out}"]
    for job in ("groups", "invdiff", "evaluate"):
        res = _cli(["-m", "invgen.train", job, "--config", _recipe(family), *overrides], cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-2000:]
        assert res.stdout.strip().splitlines()[-1] == f"{job}: wrote {out}"
    assert json.loads((out / "groups.json").read_text())["family"] == family
    assert json.loads((out / "evaluation.json").read_text())["images_per_set"] == 100
    # The latent cache is the recipe's, relative to the working folder.
    cache = "sd15" if family == "sd" else family
    assert list((tmp_path / "runs" / cache / "cache").glob("latents-*.safetensors"))

    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"{P3}\n")
    res = _cli(["-m", "invgen.cli", "sample", "--pipeline", str(pipe_dir), "--guidance", str(out), "--prompts",
                str(prompts), "--out", str(tmp_path / "s"), "--per-prompt", "2", "--steps", "2"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(list((tmp_path / "s").glob("*.png"))) == 2


def test_base_trainer_refuses_a_non_sd_pipeline(saved_family, tmp_path):
    from invgen.errors import InvgenConfigError
    from invgen.train.base import BaseConfig, train_base

    family, pipe_dir = saved_family
    if family == "sd":
        pytest.skip("the base trainer fine-tunes SD pipelines")
    cfg = load_config(BaseConfig, str(REPO / "configs" / "digits" / "base.yaml"),
                      [f"pretrained={pipe_dir}", f"output_dir={tmp_path / 'base'}", f"data.root={tmp_path / 'data'}"])
    with pytest.raises(InvgenConfigError) as e:
        train_base(cfg)
    assert str(e.value) == (f"pretrained: the base trainer fine-tunes SD 1.x/2.x UNets only, {pipe_dir} is a "
                            f"{family} pipeline (InvDiff trains on it as it is)")
    assert not (tmp_path / "base").exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_app_side_by_side_on_transformer_and_sdxl_pipelines(family):
    """What the app's Compare tab runs: base and debiased grids from the same seeds, the pipeline restored."""
    from invgen import AdapterConfig, InvariantGuidance
    from invgen.models.tiny import tiny_pipeline
    from invgen.side_by_side import BASE, DEBIASED, side_by_side

    pipe = tiny_pipeline(family)
    guidance = InvariantGuidance.for_denoiser(pipe, AdapterConfig(rank=2))
    module, params = guidance.training_module(pipe)
    with torch.no_grad():
        for p in params:
            p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    guidance.collect(module)
    before = {k: v.clone() for k, v in denoiser_of(pipe).state_dict().items()}
    result = side_by_side(pipe, [P3], 2, guidance=guidance, classifier="oracle:color", attribute="color",
                          num_inference_steps=2,
                          height=16, width=16)
    base, debiased = result.images[BASE], result.images[DEBIASED]
    assert base.shape == debiased.shape == (2, 16, 16, 3) and np.abs(base.astype(int) - debiased).max() > 0
    assert set(result.reports) == {BASE, DEBIASED} and result.comparison is not None
    after = denoiser_of(pipe).state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
