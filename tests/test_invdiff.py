import numpy as np
import pytest
import torch

from invgen import AdapterConfig, InvariantGuidance
from invgen.errors import InvgenConfigError, InvgenModelError
from invgen.invdiff.grouper import fit_group_weights, project_simplex, separation_report
from invgen.invdiff.objective import group_robust_loss


@pytest.fixture()
def perturbed_pipe(tiny_pipe):
    # A randomly initialised UNet has a zero output layer; perturb it so outputs depend on the weights.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in tiny_pipe.unet.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    return tiny_pipe


def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 3, 16, 16, generator=g), torch.tensor([10, 500, 900]), torch.randn(3, 77, 32, generator=g)


def _lora_layers(unet):
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]


def _trained_guidance(unet, kind):
    guidance = InvariantGuidance.for_denoiser(unet, AdapterConfig(kind=kind))
    model, params = guidance.training_module(unet)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    guidance.collect(model)  # takes the weights and, for a LoRA, removes the training adapter
    assert not _lora_layers(unet)
    unet.requires_grad_(False)
    return guidance


@pytest.mark.parametrize("kind", ["lora", "residual", "copy"])
def test_attach_scale_detach_save_load(perturbed_pipe, tmp_path, kind):
    unet = perturbed_pipe.unet
    x, t, c = _inputs()
    with torch.no_grad():
        base = unet(x, t, encoder_hidden_states=c).sample
        guidance = _trained_guidance(unet, kind)
        guidance.attach(perturbed_pipe, scale=0.0)
        assert torch.equal(unet(x, t, encoder_hidden_states=c).sample, base)  # scale 0 is the base, bit for bit
        guidance.set_scale(perturbed_pipe, 1.0)
        guided = unet(x, t, encoder_hidden_states=c).sample
        assert (guided - base).abs().max() > 1e-3  # the adapter changes the output
        guidance.detach(perturbed_pipe)
        assert torch.equal(unet(x, t, encoder_hidden_states=c).sample, base)  # and vanishes when detached

        guidance.save_pretrained(tmp_path / "g")
        loaded = InvariantGuidance.from_pretrained(tmp_path / "g")
        loaded.attach(perturbed_pipe, scale=1.0)
        assert torch.equal(unet(x, t, encoder_hidden_states=c).sample, guided)
        loaded.detach(perturbed_pipe)
        assert torch.equal(unet(x, t, encoder_hidden_states=c).sample, base)


@pytest.mark.parametrize("kind", ["lora", "residual"])
def test_attached_block_and_sample_pair_detach_even_when_sampling_fails(perturbed_pipe, kind):
    from invgen.invdiff.guidance import attached_adapters
    from invgen.side_by_side import sample_pair

    unet = perturbed_pipe.unet
    x, t, c = _inputs()
    guidance = _trained_guidance(unet, kind)
    with torch.no_grad():
        base = unet(x, t, encoder_hidden_states=c).sample
        with guidance.attached(perturbed_pipe, scale=1.0):
            guided = unet(x, t, encoder_hidden_states=c).sample
        assert (guided - base).abs().max() > 1e-3 and attached_adapters(perturbed_pipe) == {}

        def sample(label):
            out = unet(x, t, encoder_hidden_states=c).sample
            if label == "debiased":
                raise RuntimeError("out of memory")  # what a user's sampler may raise half-way
            return out

        with pytest.raises(RuntimeError, match="out of memory"):
            sample_pair(perturbed_pipe, sample, guidance, scale=1.0)
        assert attached_adapters(perturbed_pipe) == {}
        assert torch.equal(unet(x, t, encoder_hidden_states=c).sample, base)  # the pipeline as it was found
        sets = sample_pair(perturbed_pipe, lambda label: unet(x, t, encoder_hidden_states=c).sample, guidance,
                           scale=1.0, labels=("b", "g"))
        assert torch.equal(sets["b"], base)
        torch.testing.assert_close(sets["g"], guided, atol=1e-5, rtol=1e-5)
        assert list(sample_pair(perturbed_pipe, lambda label: label)) == ["base"]  # no adapter: the base only


def test_residual_delta_is_linear_in_scale(perturbed_pipe):
    unet = perturbed_pipe.unet
    x, t, c = _inputs()
    guidance = _trained_guidance(unet, "residual")
    with torch.no_grad():
        base = unet(x, t, encoder_hidden_states=c).sample
        guidance.attach(perturbed_pipe, scale=1.0)
        one = unet(x, t, encoder_hidden_states=c).sample
        guidance.set_scale(perturbed_pipe, 2.5)
        torch.testing.assert_close(unet(x, t, encoder_hidden_states=c).sample, base + 2.5 * (one - base))


def test_fuse_lora_matches_and_detach_restores(perturbed_pipe):
    unet = perturbed_pipe.unet
    x, t, c = _inputs()
    guidance = _trained_guidance(unet, "lora")
    with torch.no_grad():
        base = unet(x, t, encoder_hidden_states=c).sample
        guidance.attach(perturbed_pipe, scale=1.0, fuse=False)
        assert list(unet.peft_config) == ["invgen"] and unet.active_adapters() == ["invgen"]
        guided = unet(x, t, encoder_hidden_states=c).sample
        guidance.set_scale(perturbed_pipe, 0.5)
        half = unet(x, t, encoder_hidden_states=c).sample
        guidance.fuse(perturbed_pipe)
        assert not _lora_layers(unet)  # fused: plain layers, no extra cost
        torch.testing.assert_close(unet(x, t, encoder_hidden_states=c).sample, half, atol=1e-5, rtol=1e-5)
        guidance.set_scale(perturbed_pipe, 1.0)  # re-folded from the exact base weights
        assert not _lora_layers(unet)
        torch.testing.assert_close(unet(x, t, encoder_hidden_states=c).sample, guided, atol=1e-5, rtol=1e-5)
        guidance.detach(perturbed_pipe)
        assert torch.equal(unet(x, t, encoder_hidden_states=c).sample, base)
        guidance.attach(perturbed_pipe, scale=1.0)  # the default attach folds too
        assert not _lora_layers(unet)
        torch.testing.assert_close(unet(x, t, encoder_hidden_states=c).sample, guided, atol=1e-5, rtol=1e-5)
        guidance.detach(perturbed_pipe)
        assert torch.equal(unet(x, t, encoder_hidden_states=c).sample, base)
        assert not _lora_layers(unet) and not hasattr(unet, "peft_config")  # the plain UNet again


def test_lora_is_small_and_guides_a_stock_sd_pipeline():
    from diffusers import StableDiffusionPipeline

    from invgen.models import tiny_stable_diffusion_components

    pipe = StableDiffusionPipeline(**tiny_stable_diffusion_components(seed=0))
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        for p in pipe.unet.parameters():
            p.add_(0.01 * torch.randn_like(p))
    guidance = _trained_guidance(pipe.unet, "residual")
    kw = dict(num_inference_steps=2, height=16, width=16, output_type="np")
    base = pipe("a cat", generator=torch.Generator().manual_seed(0), **kw).images
    guidance.attach(pipe, scale=1.0)
    guided = pipe("a cat", generator=torch.Generator().manual_seed(0), **kw).images
    guidance.detach(pipe)
    again = pipe("a cat", generator=torch.Generator().manual_seed(0), **kw).images
    assert np.abs(guided - base).max() > 1e-4
    np.testing.assert_array_equal(base, again)


def test_adapter_for_another_model_and_corrupt_files(perturbed_pipe, tmp_path):
    from invgen.models.tiny import TinyUNetConfig, tiny_unet

    other = tiny_unet(TinyUNetConfig(block_out_channels=(32, 64)))
    guidance = _trained_guidance(other, "residual")
    guidance.signature["block_out_channels"] = [32, 64]
    with pytest.raises(InvgenModelError, match="trained for another base model: block_out_channels"):
        guidance.attach(perturbed_pipe)
    guidance.save_pretrained(tmp_path / "g")
    (tmp_path / "g" / "adapter.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(InvgenModelError, match="adapter.safetensors: unreadable or corrupt"):
        InvariantGuidance.from_pretrained(tmp_path / "g")
    with pytest.raises(InvgenModelError, match="no invgen adapter in"):
        InvariantGuidance.from_pretrained(tmp_path / "nothing")


def test_double_attach_is_refused(perturbed_pipe):
    guidance = _trained_guidance(perturbed_pipe.unet, "residual")
    guidance.attach(perturbed_pipe)
    with pytest.raises(InvgenModelError, match="already has an adapter named 'invgen'; detach it first"):
        guidance.attach(perturbed_pipe)


def test_project_simplex():
    w = project_simplex(torch.tensor([[0.5, 0.5], [2.0, -1.0], [0.3, 0.1], [-5.0, -5.0]], dtype=torch.float64))
    torch.testing.assert_close(w.sum(1), torch.ones(4, dtype=torch.float64))
    assert (w >= 0).all()
    torch.testing.assert_close(w[1], torch.tensor([1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(w[2], torch.tensor([0.6, 0.4], dtype=torch.float64))


def test_grouper_separates_a_planted_two_group_distribution():
    rng = np.random.default_rng(0)
    easy = rng.normal(1.0, 0.1, size=950)
    hard = rng.normal(2.0, 0.2, size=50)
    losses = np.concatenate([easy, hard])
    truth = np.array([0] * 950 + [1] * 50)
    w = fit_group_weights(losses, num_groups=2)
    assert np.allclose(w.sum(1), 1.0) and (w >= 0).all()
    report = separation_report(losses, w, truth)
    assert report["group_agreement"] > 0.97
    assert report["group_auc"] > 0.97
    # Group 0 is the easy one by convention.
    assert report["group_mean_loss"][0] < report["group_mean_loss"][1]
    assert 30 < report["group_sizes"][1] < 90


def test_objective_values_and_gradient_push_the_worse_group():
    losses = torch.tensor([1.0, 1.0, 3.0, 5.0], requires_grad=True)
    w = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    loss = group_robust_loss(losses, w, lam=1.0)
    # L_0 = 1, L_1 = 4: mean 2.5, population variance 2.25.
    assert loss.item() == pytest.approx(2.5 + 2.25)
    loss.backward()
    g = losses.grad
    # d/dl_i: worse-group samples get weight (0.5 + λ(L_1 − mean)) / n_1 = (0.5 + 1.5) / 2 = 1.0,
    # better-group samples (0.5 − 1.5) / 2 = −0.5: the worse group is pushed down harder.
    torch.testing.assert_close(g, torch.tensor([-0.5, -0.5, 1.0, 1.0]))
    # A group absent from the batch is skipped instead of dividing by zero.
    only = group_robust_loss(torch.tensor([2.0, 4.0]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]), lam=1.0)
    assert only.item() == pytest.approx(3.0)


def test_invdiff_config_errors(tmp_path):
    from invgen.config import load_config
    from invgen.invdiff.config import InvDiffConfig
    from invgen.invdiff.train import train_invdiff

    with pytest.raises(InvgenConfigError, match="adapter.kind: expected one of"):
        load_config(InvDiffConfig, "configs/digits/invdiff.yaml", ["adapter.kind=dora"])
    cfg = load_config(InvDiffConfig, "configs/digits/invdiff.yaml",
                      [f"base_model={tmp_path / 'nope'}", f"output_dir={tmp_path / 'out'}"])
    with pytest.raises(InvgenConfigError, match=r"base_model: no trained pipeline at .*nope"):
        train_invdiff(cfg)
